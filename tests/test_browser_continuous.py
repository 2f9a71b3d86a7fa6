"""Continuous rating and moment marks in headless Chromium, through the real app and database.

A participant is walked by a bot (store.submit_step) up to the first main clip, then the page
is opened in Chromium: the clip is played for real (8 s), the control is moved along a known
path, first with the mouse (a drag), then, after a pause in the middle, with the keyboard,
and marks are pressed by key and by button. The stored trace must follow that path in video
time within one sampling interval, with nothing sampled while paused; marks must be stored at
the video times they were pressed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser_util import launch, require_chromium, start_server  # noqa: E402

from analysis import load  # noqa: E402
from study import simulate, store  # noqa: E402

pytestmark = pytest.mark.browser
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
RATE_HZ = 10
INTERVAL = 1 / RATE_HZ
WAIT_MS = 30_000


def _study(folder: Path, study_id: str, continuous: dict, marks: dict | None) -> Path:
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw.update(id=study_id, demographics=[], attention_checks=[], device_check={"enabled": False})
    raw["stimuli"]["manifest"] = str(DEMO.parent / "manifest.csv")
    raw["measures"].update(session_start=[], session_end=[], per_clip=["sam"])
    raw["analysis"]["secondary_outcomes"] = ["arousal"]
    raw["playback"]["continuous_rating"] = {"item": "How do you feel right now?", "rate_hz": RATE_HZ, **continuous}
    if marks:
        raw["playback"]["marks"] = marks
    path = folder / f"{study_id}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


MARKS = {"prompts": [{"id": "moved", "label": "This moved me", "key": "m"},
                     {"id": "impossible", "label": "Something looks impossible", "key": "i"}]}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("continuous")
    db_url = f"sqlite:///{tmp / 'kuleshov.db'}"
    one_d = _study(tmp, "cont-1d", {"mode": "1d"}, MARKS)
    two_d = _study(tmp, "cont-2d", {"mode": "2d"}, None)
    engine = store.make_engine(db_url)
    store.upgrade(engine)
    store.register_study(engine, two_d)
    store.set_study_status(engine, "cont-2d", "open")
    server = start_server(db_url, tmp, study_file=one_d)
    try:
        yield server, engine
    finally:
        server.stop()
        engine.dispose()


_SEEDS = iter(range(100, 10_000))


def at_first_clip(engine, study_id: str):
    """A participant walked by a bot through consent, instructions and the practice clip."""
    # A new seed each time: the bot's Prolific id comes from it, and the same Prolific id would
    # get the same participant back.
    bot = simulate.Bot(engine, study_id, 0, random.Random(next(_SEEDS)), 0.0, False)
    bot.fate, bot.stop_at = "complete", None
    state = bot.state
    while state.step.kind != "trial":
        step = state.step
        meta = bot.watch(step) if step.has_clip else None
        answers = bot.answers_for(step) if step.collects_data else {}
        state = bot.state = store.submit_step(engine, state.token, step.key, answers, trial_meta=meta).state
    return state


@pytest.fixture
def page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        pg = browser.new_page(viewport={"width": 900, "height": 1500})
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        yield pg
        browser.close()
        assert not errors, errors


def open_clip(page, server, token):
    page.goto(f"{server.url}/?t={token}")
    page.locator(".kc-area").first.wait_for(timeout=WAIT_MS)
    # Log each key press and mark tap with the video time it happened at (capture phase: before
    # the player's own listeners see it, in the same task).
    page.evaluate("""() => {
        // The component lives in a shadow root: find its elements through every open one.
        window.kcq = (sel) => {
            const walk = (root) => {
                const found = root.querySelector(sel);
                if (found) return found;
                for (const el of root.querySelectorAll('*')) {
                    if (el.shadowRoot) { const r = walk(el.shadowRoot); if (r) return r; }
                }
                return null;
            };
            return walk(document);
        };
        window.kcLog = [];
        // Every change of the control, with the video time it happened at (the observer runs
        // in the same task as the change).
        const area = kcq('.kc-area');
        const read = () => ({t: kcq('.kp-video').currentTime, x: Number(area.dataset.x),
                             y: area.dataset.y === undefined ? null : Number(area.dataset.y)});
        window.kcValues = [read()];
        new MutationObserver(() => kcValues.push(read())).observe(area, {attributes: true,
            attributeFilter: ['data-x', 'data-y']});
        window.addEventListener('keydown', (e) => kcLog.push([e.key, kcq('.kp-video').currentTime]), true);
        window.addEventListener('click', (e) => {
            const button = e.composedPath()[0].closest && e.composedPath()[0].closest('.kc-mark');
            if (button) kcLog.push(['button:' + button.dataset.prompt, kcq('.kp-video').currentTime]);
        }, true);
    }""")
    page.locator(".kp-start:visible").click()
    page.wait_for_function("() => kcq('.kp-video').currentTime > 0.05", timeout=WAIT_MS)


def press(page, log: list[dict], keys: list[str]) -> None:
    """Press keys one by one, logging the value after each (a sample may fall between two presses)."""
    for key in keys:
        page.keyboard.press(key)
        log.append({**now(page), "hold": False})
    log[-1]["hold"] = True


def now(page) -> dict:
    """The video time and the control's value, read together."""
    return page.evaluate("""() => { const a = kcq('.kc-area');
        return {t: kcq('.kp-video').currentTime, x: Number(a.dataset.x),
                y: a.dataset.y === undefined ? null : Number(a.dataset.y),
                paused: kcq('.kp-video').paused}; }""")


def wait_video(page, t: float) -> None:
    page.wait_for_function(f"() => kcq('.kp-video').currentTime >= {t}", timeout=WAIT_MS)


def point(page, fx: float, fy: float = 0.5) -> tuple[float, float]:
    box = page.locator(".kc-area").bounding_box()
    return box["x"] + fx * box["width"], box["y"] + (1 - fy) * box["height"]


def stored_batches(engine, participant_id: int, position: int = 1) -> list:
    tb = store.trace_batches.c
    with engine.connect() as conn:
        return conn.execute(sa.select(tb.final, tb.t, tb.x, tb.y, tb.marks, tb.start_x, tb.first_move_t)
                            .where(tb.participant_id == participant_id, tb.position == position)
                            .order_by(tb.seq)).all()


def wait_final(engine, participant_id: int) -> None:
    deadline = time.monotonic() + 30
    while not any(b[0] for b in stored_batches(engine, participant_id)):
        assert time.monotonic() < deadline, "the final batch never arrived"
        time.sleep(0.3)


def expected_at(log: list[dict], t: float, key: str) -> float:
    """The control's value at video time t according to what was done (last change at or before t)."""
    value = log[0][key]
    for entry in log:
        if entry["t"] <= t:
            value = entry[key]
    return value


def assert_follows(trace, page, log: list[dict], key: str, pause_at: float) -> None:
    """`log`: the path as commanded (held values); the page's own log of every change is the truth."""
    changes = page.evaluate("() => kcValues")
    times, values = trace["video_time"].tolist(), trace["value"].tolist()
    assert times == sorted(times) and len(set(times)) == len(times)
    # Sampled at 10 Hz of video time: no more samples than the clip has intervals (nothing is
    # sampled while paused), and no gap of more than two intervals.
    assert 8.0 * RATE_HZ * 0.7 <= len(times) <= 8.0 * RATE_HZ + 6, len(times)
    # The sampling timer runs on the page's main thread: on a loaded machine one tick can come
    # late, never early, and the sample still carries the time it was really taken at.
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    # (A sample is also taken when playback starts, resumes and ends, so a few gaps are short.)
    assert abs(gaps[len(gaps) // 2] - INTERVAL) < 0.02 and gaps[int(0.9 * len(gaps))] < 1.5 * INTERVAL, gaps
    worst = max(zip(times, times[1:]), key=lambda ab: ab[1] - ab[0])
    assert gaps[-1] < 6 * INTERVAL, (worst, gaps)
    wrong = []
    for t, v in zip(times, values):
        allowed = {expected_at(changes, u, key) for u in (t - INTERVAL, t, t + INTERVAL)}
        if not any(abs(v - a) < 1e-6 for a in allowed):
            wrong.append((t, v, sorted(allowed)))
    assert not wrong, f"samples off the path: {wrong[:5]}"
    # Every value of the path was held long enough to be sampled.
    missing = [e[key] for e in log if e.get("hold", True) and not any(abs(v - e[key]) < 1e-6 for v in values)]
    assert not missing, missing
    # The pause itself is sampled with the value held up to it (at the paused time, rounded to
    # the ms) ...
    at_pause = [v for t, v in zip(times, values) if abs(t - pause_at) <= 0.0005]
    assert at_pause == [expected_at(changes, pause_at - 0.001, key)], (at_pause, pause_at)
    # ... and the change made while paused shows at the resumed video time, not later.
    after = [v for t, v in zip(times, values) if pause_at + 0.0005 < t < pause_at + 0.4]
    assert after and after[0] == expected_at(changes, pause_at + 0.01, key), (after, pause_at)


def test_1d_slider_follows_mouse_then_keyboard_path_in_video_time_and_marks(app, page):
    server, engine = app
    state = at_first_clip(engine, "cont-1d")
    open_clip(page, server, state.token)
    log = [now(page)]
    assert log[0]["x"] == 5.0  # starts at the midpoint
    # Mouse: press at 3, drag through 4, 6, 8 (range 1..9), one step per half second of video.
    wait_video(page, 0.5)
    page.mouse.move(*point(page, 0.25))
    page.mouse.down()
    log.append(now(page))
    for k, fx in enumerate((0.375, 0.625, 0.875), start=1):
        wait_video(page, 0.5 + 0.5 * k)
        page.mouse.move(*point(page, fx), steps=1)
        log.append(now(page))
    page.mouse.up()
    wait_video(page, 1.2)
    page.keyboard.press("m")  # a mark by key
    # Pause in the middle; move the control while paused (keyboard); resume.
    wait_video(page, 3.0)
    page.evaluate("() => kcq('.kp-video').pause()")
    pause_at = now(page)["t"]
    page.locator(".kc-area").focus()
    press(page, log, ["ArrowLeft"] * 5)  # 8 - 5 x 0.4 = 6
    assert log[-1]["paused"] and abs(log[-1]["t"] - pause_at) < 1e-6
    page.wait_for_timeout(1200)
    page.locator(".kp-start:visible").click()
    # Keyboard after the pause.
    for target, keys in ((4.2, ["ArrowUp"] * 3), (5.2, ["ArrowDown"] * 8), (6.2, ["Home"]), (7.0, ["End"])):
        wait_video(page, target)
        press(page, log, keys)
    page.locator(".kc-mark[data-prompt='impossible']").click()  # a mark by tap, ~7 s
    wait_final(engine, state.participant_id)

    known = [5.0, 3.0, 4.0, 6.0, 8.0, 6.0, 7.2, 4.0, 1.0, 9.0]
    assert [round(e["x"], 3) for e in log if e.get("hold", True)] == pytest.approx(known, abs=0.02)
    traces = load.load_traces(engine, "cont-1d")
    trace = traces[(traces["participant"] == state.pseudonym) & (traces["trial"] == 1)]
    assert set(trace["dimension"]) == {"rating"} and not trace["partial"].any()
    assert_follows(trace, page, log, "x", pause_at)
    attempts = load.load_trace_attempts(engine, "cont-1d")
    row = attempts[(attempts["participant"] == state.pseudonym) & (attempts["trial"] == 1)].iloc[0]
    assert row["start_value"] == 5.0 and row["moved"]
    assert abs(row["first_move_time"] - log[1]["t"]) <= INTERVAL

    pressed = page.evaluate("() => kcLog")
    want = [(("moved" if k == "m" else k.removeprefix("button:")), t) for k, t in pressed
            if k in ("m", "button:impossible")]
    marks = load.load_marks(engine, "cont-1d")
    got = marks[marks["participant"] == state.pseudonym][["mark", "video_time"]].values.tolist()
    assert [m for m, _ in got] == [m for m, _ in want] == ["moved", "impossible"]
    for (_, stored), (_, pressed_at) in zip(got, want):
        assert abs(stored - pressed_at) < 0.002, (got, want)


def test_2d_grid_follows_mouse_then_keyboard_path_in_video_time(app, page):
    server, engine = app
    state = at_first_clip(engine, "cont-2d")
    open_clip(page, server, state.token)
    log = [now(page)]
    assert (log[0]["x"], log[0]["y"]) == (5.0, 5.0)
    wait_video(page, 0.5)
    page.mouse.move(*point(page, 0.25, 0.75))
    page.mouse.down()
    log.append(now(page))
    for k, (fx, fy) in enumerate(((0.5, 0.125), (0.875, 0.5), (0.125, 0.875)), start=1):
        wait_video(page, 0.5 + 0.6 * k)
        page.mouse.move(*point(page, fx, fy), steps=1)
        log.append(now(page))
    page.mouse.up()
    wait_video(page, 3.2)
    page.evaluate("() => kcq('.kp-video').pause()")
    pause_at = now(page)["t"]
    page.locator(".kc-area").focus()
    press(page, log, ["ArrowRight", "ArrowRight", "ArrowDown"])
    page.wait_for_timeout(1000)
    page.locator(".kp-start:visible").click()
    for target, keys in ((4.3, ["ArrowUp"] * 4), (5.3, ["ArrowRight"] * 5), (6.3, ["ArrowDown"] * 5)):
        wait_video(page, target)
        press(page, log, keys)
    wait_final(engine, state.participant_id)

    assert [v for e in log if e.get("hold", True) for v in (e["x"], e["y"])] == pytest.approx([v for pair in [
        (5.0, 5.0), (3.0, 7.0), (5.0, 2.0), (8.0, 5.0), (2.0, 8.0), (2.8, 7.6), (2.8, 9.0), (4.8, 9.0), (4.8, 7.0)]
        for v in pair], abs=0.06)
    traces = load.load_traces(engine, "cont-2d")
    mine = traces[(traces["participant"] == state.pseudonym) & (traces["trial"] == 1)]
    assert set(mine["dimension"]) == {"valence", "arousal"}
    for dimension, key in (("valence", "x"), ("arousal", "y")):
        assert_follows(mine[mine["dimension"] == dimension], page, log, key, pause_at)


def test_offline_batches_wait_in_the_browser_and_a_reload_keeps_the_partial_trace(app, page):
    server, engine = app
    state = at_first_clip(engine, "cont-1d")
    open_clip(page, server, state.token)
    wait_video(page, 1.0)
    page.context.set_offline(True)
    wait_video(page, 4.5)
    stored_offline = sum(len(b[1]) for b in stored_batches(engine, state.participant_id))
    waiting = page.evaluate("() => JSON.parse(localStorage.getItem('kuleshov.traces.' + %r) || '[]').length"
                            % state.token)
    assert waiting >= 1  # sealed while offline, kept in localStorage
    page.context.set_offline(False)
    # Back online: what waited in localStorage is sent without a reload.
    deadline = time.monotonic() + 15
    while max((max(b[1]) for b in stored_batches(engine, state.participant_id) if b[1]), default=0) < 4.4:
        assert time.monotonic() < deadline, "the batches kept while offline were not sent once online"
        time.sleep(0.2)
    # Reload in the middle: the clip restarts as a new attempt; the interrupted one stays.
    page.reload()
    open_clip(page, server, state.token)
    wait_final(engine, state.participant_id)
    attempts = load.load_trace_attempts(engine, "cont-1d")
    mine = attempts[(attempts["participant"] == state.pseudonym) & (attempts["trial"] == 1)]
    assert mine["partial"].tolist() == [True, False], mine
    first = mine.iloc[0]
    # Everything sampled before the reload arrived, the offline stretch included (about 5 s at 10 Hz).
    assert first["last_video_time"] > 4.4 and first["n_samples"] >= 0.8 * 10 * first["last_video_time"], first
    assert stored_offline < first["n_samples"]
    traces = load.load_traces(engine, "cont-1d")
    partial = traces[(traces["participant"] == state.pseudonym) & traces["partial"]]["video_time"]
    gaps = partial.diff().dropna()
    assert gaps.max() < 6 * INTERVAL, gaps.max()


def test_touch_sets_the_slider_and_taps_mark_without_the_app():
    """The component alone (common.js + continuous.js + player.js, as app_pages/player.py joins them) on a
    touch screen: a tap on the track moves the slider there, a tap on a mark button marks."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    player_dir = ROOT / "components" / "player"
    origin = "http://player.test"
    html = (f"<!doctype html><html><head><style>{(player_dir / 'player.css').read_text()}"
            f"{(player_dir / 'continuous.css').read_text()}</style></head><body>"
            f"{(player_dir / 'player.html').read_text()}<script type='module' src='/bundle.js'></script></body></html>")
    bundle = "\n".join((p.read_text() for p in (ROOT / "components" / "common.js", player_dir / "continuous.js",
                                                 player_dir / "player.js")))
    bundle = bundle.replace("export default function (component) {", "window.kpMountPlayer = function (component) {")
    posts: list[dict] = []
    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(has_touch=True, is_mobile=True, viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.route(f"{origin}/", lambda r: r.fulfill(body=html, content_type="text/html"))
        page.route(f"{origin}/bundle.js", lambda r: r.fulfill(body=bundle, content_type="text/javascript"))
        page.route(f"{origin}/clip.mp4", lambda r: r.fulfill(
            body=(ROOT / "stimuli" / "demo" / "practice.mp4").read_bytes(), content_type="video/mp4"))
        page.route(f"{origin}/api/events", lambda r: r.fulfill(body='{"accepted": [], "refused": []}',
                                                              content_type="application/json"))

        def traces(route):
            body = route.request.post_data_json
            posts.append(body)
            route.fulfill(body=json.dumps({"accepted": list(range(len(body["batches"]))), "refused": []}),
                          content_type="application/json")

        page.route(f"{origin}/api/traces", traces)
        page.goto(f"{origin}/")
        page.wait_for_function("() => window.kpMountPlayer")
        page.evaluate("""() => kpMountPlayer({parentElement: document.body, setStateValue: () => {}, data: {
            instance: "i1", token: "tok", events_url: "/api/events", traces_url: "/api/traces", src: "/clip.mp4",
            position: 0, stimulus_id: "practice", min_share: 1, start_label: "Start",
            capture: {mode: "1d", item: "How do you feel?", min: 1, max: 9, min_label: "low", max_label: "high",
                      rate_hz: 10, key_steps: 20, texts: {marked: "Marked: {label}"}, marks_hint: "Mark:",
                      prompts: [{id: "moved", label: "Moved", key: "m", text: "Moved (key M)"}]}}})""")
        page.locator(".kp-start").tap()
        page.wait_for_function("() => document.querySelector('.kp-video').currentTime > 0.5", timeout=WAIT_MS)
        box = page.locator(".kc-area").bounding_box()
        page.touchscreen.tap(box["x"] + 0.25 * box["width"], box["y"] + box["height"] / 2)
        assert abs(float(page.locator(".kc-area").get_attribute("data-x")) - 3.0) < 0.1
        page.locator(".kc-mark").tap()
        assert page.locator(".kc-live").inner_text() == "Marked: Moved"
        page.evaluate("() => document.querySelector('.kp-video').pause()")
        page.wait_for_timeout(500)
        # A vertical slider: low end at the bottom; a new instance replaces the old control.
        page.evaluate("""() => kpMountPlayer({parentElement: document.body, setStateValue: () => {}, data: {
            instance: "i2", token: "tok", events_url: "/api/events", traces_url: "/api/traces", src: "/clip.mp4",
            position: 0, stimulus_id: "practice", min_share: 1, start_label: "Start",
            capture: {mode: "1d", orientation: "vertical", item: "How do you feel?", min: 0, max: 100,
                      min_label: "low", max_label: "high", rate_hz: 10, key_steps: 20, texts: {}, prompts: []}}})""")
        assert page.locator(".kc-area").count() == 1
        assert page.locator(".kc-area").get_attribute("aria-orientation") == "vertical"
        box = page.locator(".kc-area").bounding_box()
        assert box["height"] > 2 * box["width"]
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + 0.75 * box["height"])  # a quarter up
        assert abs(float(page.locator(".kc-area").get_attribute("data-x")) - 25) < 2
        browser.close()
    sent = [b for body in posts for b in body["batches"]]
    assert sent and sent[0]["mode"] == "1d" and sent[0]["position"] == 0
    assert any(abs(x - 3.0) < 0.1 for b in sent for x in b["x"])
    assert [m[1] for b in sent for m in b["marks"]] == ["moved"]


def test_axe_finds_no_serious_problem_on_the_1d_slider_and_the_2d_grid(app, page):
    """axe-core on a clip page with the continuous slider (and mark buttons) and with the 2-D grid,
    while the clip plays (the controls and their live region are showing)."""
    from test_questionnaire_browser import serious_violations, settle

    server, engine = app
    for study_id in ("cont-1d", "cont-2d"):
        state = at_first_clip(engine, study_id)
        open_clip(page, server, state.token)
        wait_video(page, 0.5)
        settle(page, 300)  # a script run in flight fades the page (Streamlit's stale elements)
        assert serious_violations(page) == [], study_id
