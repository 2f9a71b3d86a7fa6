"""The questionnaire component in headless Chromium, through the real app and database.

What is checked: a whole clip page costs one script run; a reload keeps what was entered; an
untouched optional slider is stored as missing with its flag; missing answers are caught in the
browser and bad ones by the server, both shown beside their items; the scales work with the
keyboard alone; every tap target is at least 44 x 44 px on a phone; axe-core finds no serious
or critical problem on the consent page, an items page and a clip page.
"""

from __future__ import annotations


import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent

from browser_util import launch, pass_device_check, require_chromium, start_server  # noqa: E402
from test_browser_participant import (  # noqa: E402
    DEMO, STEP_TIMEOUT_MS, STUDY_ID, answer_item, answer_page, click_continue, item_css, play_clip, wait_title)

from study import simulate, store  # noqa: E402
from study.config import setting  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
AXE_DIR = ROOT / "tests" / "js"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
# The deepest focused element, through the component's shadow root.
ACTIVE = """() => { let a = document.activeElement;
  while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
  return a; }"""


def quick_study(tmp_path: Path) -> Path:
    """The demo study with 2 clips whose ratings open at once, a free-text question and an
    optional slider (a required one cannot be left untouched)."""
    text = DEMO.read_text()
    for old, new in {
        "manifest: manifest.csv": f"manifest: {DEMO.parent / 'manifest.csv'}",
        "clips_per_participant: null   # all six main clips": "clips_per_participant: 2",
        "pairs: both": "pairs: one_per_participant",
        "after_clip: 3": "after_clip: 2",
        "min_watched_share: 0.9": "min_watched_share: 0",
        "demographics: [age, gender, film_watching_frequency]":
            "demographics: [age, gender, film_watching_frequency, first_language]",
        "  randomize_item_order: false\n": (
            "  randomize_item_order: false\n"
            "  custom_items:\n"
            "    - id: closeness\n"
            "      scope: per_clip\n"
            "      type: slider\n"
            "      min: 0\n"
            "      max: 100\n"
            "      required: false\n"
            "      text: How close did you feel to the people in the clip?\n"
            "      description: Felt closeness to the people shown (optional).\n"),
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{tmp / 'kuleshov.db'}"
    server = start_server(url, tmp, DEMO)
    engine = store.make_engine(url)
    yield server, engine
    engine.dispose()
    server.stop()


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("quick")
    url = f"sqlite:///{tmp / 'kuleshov.db'}"
    server = start_server(url, tmp, quick_study(tmp))
    engine = store.make_engine(url)
    yield server, engine
    engine.dispose()
    server.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


# --------------------------------------------------------------------------- driving


class RunCounter:
    """Counts the script runs of the page's Streamlit session, from its websocket frames."""

    def __init__(self, page):
        self.finished = 0  # ForwardMsg script_finished: one per script run (or stopped run)
        self.reruns = 0  # BackMsg rerun_script: each request for a run
        page.on("websocket", self._socket)

    def _socket(self, ws):
        if "_stcore/stream" in ws.url:
            ws.on("framereceived", self._received)
            ws.on("framesent", self._sent)

    def _received(self, payload):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, bytes) and ForwardMsg.FromString(payload).WhichOneof("type") == "script_finished":
            self.finished += 1

    def _sent(self, payload):
        from streamlit.proto.BackMsg_pb2 import BackMsg

        if isinstance(payload, bytes) and BackMsg.FromString(payload).WhichOneof("type") == "rerun_script":
            self.reruns += 1

    def snapshot(self) -> tuple[int, int]:
        return self.finished, self.reruns


def settle(page, ms: int = 1500) -> None:
    """Let any run in flight finish (the status widget shows while a script runs)."""
    page.wait_for_timeout(ms)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=STEP_TIMEOUT_MS)


def wait_step_change(engine, token: str, key: str) -> None:
    deadline = time.monotonic() + 30
    while store.get_state(engine, token).step.key == key:
        assert time.monotonic() < deadline, f"still on {key}"
        time.sleep(0.2)


def enter(page, server, engine) -> str:
    """Open the study link and give consent; returns the participant's token."""
    page.goto(f"{server.url}/?study={STUDY_ID}")
    pass_device_check(page, server.db_url)
    wait_title(page, "Consent")
    page.get_by_role("button", name="I have read this and agree").click()
    page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
    token = page.url.split("t=", 1)[1].split("&")[0]
    wait_step_change(engine, token, "consent")
    return token


def advance_to(page, engine, token: str, key: str, rng: random.Random, play: bool = False):
    """Answer every page until the step `key` shows; returns its state."""
    for _ in range(20):
        state = store.get_state(engine, token)
        step = state.step
        wait_title(page, step.title)
        if step.key == key:
            return state
        if step.kind == "instructions":
            click_continue(page, "Start")
        else:
            if step.has_clip and play:
                play_clip(page)
            answer_page(page, step, state.item_order, rng)
            click_continue(page)
        wait_step_change(engine, token, step.key)
    raise AssertionError(f"never reached {key}")


def responses(engine, token: str, step_key: str) -> dict:
    r, p = store.responses.c, store.participants.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.item_id, r.value_num, r.value_text, r.untouched, r.response_time_ms,
                                      r.shown_position)
                            .join(store.participants, p.id == r.participant_id)
                            .where(p.token == token, r.step_key == step_key)).all()
    return {row.item_id: row for row in rows}


def stored_keys(page) -> list[str]:
    return page.evaluate("() => Object.keys(window.localStorage).filter(k => k.startsWith('kuleshov.q.'))")


def checked_value(page, step_key: str, item_id: str) -> str | None:
    box = page.locator(item_css(step_key, item_id))
    chosen = box.locator('[role="radio"][aria-checked="true"]')
    return chosen.get_attribute("data-value") if chosen.count() else None


# --------------------------------------------------------------------------- one run per page


def test_a_whole_clip_page_is_one_script_run(demo_server, browser):
    server, engine = demo_server
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    runs = RunCounter(page)
    token = enter(page, server, engine)
    rng = random.Random(3)
    state = advance_to(page, engine, token, "practice", rng)
    play_clip(page)
    page.locator(".kp-hint", has_text="The clip has finished.").wait_for(timeout=STEP_TIMEOUT_MS)
    settle(page)
    before = runs.snapshot()
    entered = answer_page(page, state.step, state.item_order, rng)
    settle(page, 800)
    assert runs.snapshot() == before, "answering ran server code"
    click_continue(page)
    wait_title(page, "Clip 1 of")
    page.locator(".kp-start:visible").wait_for(timeout=STEP_TIMEOUT_MS)  # the old player may linger, hidden
    settle(page)
    finished, reruns = runs.snapshot()
    assert (finished - before[0], reruns - before[1]) == (1, 1)
    stored = responses(engine, token, "practice")
    assert set(stored) == set(entered) == {it.id for it in state.step.items}
    for item_id, value in entered.items():
        row = stored[item_id]
        assert (row.value_num if isinstance(value, float) else row.value_text) == value, item_id
        assert row.response_time_ms is not None and row.response_time_ms > 0
    assert not errors, errors


# --------------------------------------------------------------------------- reload, untouched


def test_reload_keeps_answers_and_untouched_slider_is_stored_missing(quick_server, browser):
    server, engine = quick_server
    page = browser.new_page()
    token = enter(page, server, engine)
    rng = random.Random(5)

    # Free text and a number survive a reload too; the counter shows the length.
    state = store.get_state(engine, token)
    assert state.step.key == "demographics"
    page.locator(item_css("demographics", "first_language") + " textarea").fill("Plattdeutsch")
    page.locator(item_css("demographics", "age") + " input").fill("41")
    page.reload()
    wait_title(page, "About you")
    text = page.locator(item_css("demographics", "first_language") + " textarea")
    assert text.input_value() == "Plattdeutsch"
    assert page.locator(item_css("demographics", "first_language") + " .kq-counter").inner_text() == "12 / 2000"
    assert page.locator(item_css("demographics", "age") + " input").input_value() == "41"
    by_id = {it.id: it for it in state.step.items}
    answer_item(page, "demographics", by_id["gender"], rng)
    answer_item(page, "demographics", by_id["film_watching_frequency"], rng)
    click_continue(page)
    wait_step_change(engine, token, "demographics")
    demo = responses(engine, token, "demographics")
    assert demo["first_language"].value_text == "Plattdeutsch" and demo["age"].value_num == 41

    state = advance_to(page, engine, token, "practice", rng)
    order = state.item_order
    by_id = {it.id: it for it in state.step.items}
    assert by_id["closeness"].type == "slider" and not by_id["closeness"].required
    half = [i for i in order[: len(order) // 2] if i != "closeness"]
    entered = {i: answer_item(page, "practice", by_id[i], rng) for i in half}
    page.reload()
    wait_title(page, "Practice clip")
    page.locator('.kq-root[data-page="practice"]').wait_for(timeout=STEP_TIMEOUT_MS)
    for item_id in order:
        expected = entered.get(item_id)
        if by_id[item_id].type in ("pictorial9", "likert", "intensity", "choice"):
            shown = checked_value(page, "practice", item_id)
            want = None if expected is None else (str(int(expected)) if isinstance(expected, float) else expected)
            assert shown == want, item_id
    # The untouched slider still shows no answer after the reload.
    slider = page.locator(item_css("practice", "closeness"))
    assert "kq-untouched" in (slider.locator(".kq-slider").get_attribute("class") or "")
    rest = [i for i in order if i not in entered and i != "closeness"]
    entered.update({i: answer_item(page, "practice", by_id[i], rng) for i in rest})
    assert [k.rsplit(".", 1)[1] for k in stored_keys(page)] == ["practice"]
    click_continue(page)
    wait_step_change(engine, token, "practice")
    stored = responses(engine, token, "practice")
    assert set(stored) == set(order)
    for item_id, value in entered.items():
        row = stored[item_id]
        assert (row.value_num if isinstance(value, float) else row.value_text) == value, item_id
        assert row.untouched is False
    closeness = stored["closeness"]
    assert (closeness.value_num, closeness.value_text, closeness.untouched) == (None, None, True)
    assert closeness.response_time_ms is None
    assert closeness.shown_position == order.index("closeness") + 1

    # Once the server has stored the page, the browser forgets it.
    page.locator('.kq-root[data-page="trial:1"]').wait_for(timeout=STEP_TIMEOUT_MS)
    assert [k.rsplit(".", 1)[1] for k in stored_keys(page)] == ["trial:1"]


# --------------------------------------------------------------------------- errors


def test_missing_answers_are_caught_in_the_browser_and_bad_ones_by_the_server(quick_server, browser):
    server, engine = quick_server
    page = browser.new_page()
    runs = RunCounter(page)
    token = enter(page, server, engine)
    wait_title(page, "About you")
    settle(page)
    before = runs.snapshot()
    page.locator(item_css("demographics", "age") + " input").fill("200")
    click_continue(page)
    # Caught in the browser: no run, the summary lists the two missing choices, focus on the first.
    summary = page.locator(".kq-summary")
    summary.wait_for()
    assert summary.locator("a").count() == 2
    assert "What is your gender?" in summary.inner_text()
    focused_item = page.evaluate(f"() => ({ACTIVE})().closest('[data-item]').dataset.item")
    assert focused_item == "gender"
    gender = page.locator(item_css("demographics", "gender"))
    group = gender.locator('[role="radiogroup"]')
    assert group.get_attribute("aria-invalid") == "true"
    message = gender.locator(".kq-error")
    assert message.inner_text() == "Please answer this question."
    assert message.get_attribute("id") in (group.get_attribute("aria-describedby") or "").split()
    settle(page, 500)
    assert runs.snapshot() == before
    # Choosing an answer clears its message; a link in the summary goes to the other item.
    gender.locator('[role="radio"]').first.click()
    assert message.is_hidden() and group.get_attribute("aria-invalid") is None
    summary.locator("a").first.click()
    assert page.evaluate(f"() => ({ACTIVE})().closest('[data-item]').dataset.item") == "film_watching_frequency"
    page.locator(item_css("demographics", "film_watching_frequency") + ' [role="radio"]').first.click()
    # Now the server sees age 200, refuses it and says why, beside the item.
    click_continue(page)
    age = page.locator(item_css("demographics", "age"))
    age.locator(".kq-error", has_text="Please give a value from 18 to 110.").wait_for(timeout=STEP_TIMEOUT_MS)
    assert age.locator("input").get_attribute("aria-invalid") == "true"
    assert store.get_state(engine, token).step.key == "demographics"
    age.locator("input").fill("33")
    click_continue(page)
    wait_step_change(engine, token, "demographics")
    assert responses(engine, token, "demographics")["age"].value_num == 33


# --------------------------------------------------------------------------- keyboard


def test_scales_answered_with_the_keyboard_alone(quick_server, browser):
    server, engine = quick_server
    page = browser.new_page()
    token = enter(page, server, engine)
    state = advance_to(page, engine, token, "mood_pre", random.Random(8))
    assert state.item_order == ["mood_valence", "mood_arousal", "mood_tense", "mood_tired"]
    page.locator(item_css("mood_pre", "mood_valence")).wait_for()

    def focused() -> dict:
        return page.evaluate(f"""() => {{ const a = ({ACTIVE})();
            const item = a && a.closest ? a.closest('[data-item]') : null;
            return {{item: item ? item.dataset.item : null, value: a.dataset ? a.dataset.value || null : null,
                     tag: a.tagName, outline: getComputedStyle(a).outlineStyle,
                     label: a.getAttribute('aria-label'), text: a.textContent}}; }}""")

    for _ in range(40):
        page.keyboard.press("Tab")
        if focused()["item"] == "mood_valence":
            break
    now = focused()
    assert now["item"] == "mood_valence" and now["value"] == "1"
    assert now["label"] == "mood valence 1 of 9, very unpleasant"
    assert now["outline"] == "solid"  # visible focus
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert checked_value(page, "mood_pre", "mood_valence") is None  # arrows only move the focus
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert focused()["item"] == "mood_arousal"
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert focused()["item"] == "mood_tense"
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert focused()["item"] == "mood_tired"
    page.keyboard.press("ArrowLeft")  # wraps round to the last point
    page.keyboard.press("Space")
    # Back into a chosen group, the focus lands on the chosen point.
    page.keyboard.press("Shift+Tab")
    assert (focused()["item"], focused()["value"]) == ("mood_tense", "6")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert focused()["text"] == "Continue"
    page.keyboard.press("Enter")
    wait_step_change(engine, token, "mood_pre")
    stored = responses(engine, token, "mood_pre")
    assert {k: v.value_num for k, v in stored.items()} == {
        "mood_valence": 3, "mood_arousal": 7, "mood_tense": 6, "mood_tired": 7}


# --------------------------------------------------------------------------- phone


def test_every_tap_target_is_44px_on_a_phone(quick_server, browser):
    server, engine = quick_server
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    token = enter(page, server, engine)
    advance_to(page, engine, token, "practice", random.Random(2))
    root = page.locator('.kq-root[data-page="practice"]')
    root.wait_for(timeout=STEP_TIMEOUT_MS)
    click_continue(page)  # nothing answered: the error summary's links are targets too
    root.locator(".kq-summary a").first.wait_for()
    targets = root.locator("button, input, textarea, a")
    count = targets.count()
    assert count > 100  # 3 x 9 pictures, 9 x 9 emotions, 4 x 7 Likert points, ...
    small = []
    width = page.evaluate("() => document.documentElement.clientWidth")
    for k in range(count):
        target = targets.nth(k)
        target.scroll_into_view_if_needed()
        box = target.bounding_box()
        assert box is not None
        if box["width"] < 44 or box["height"] < 44:
            small.append((target.get_attribute("aria-label") or target.inner_text()[:30], box))
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, "wider than the phone"
    assert not small, small


# --------------------------------------------------------------------------- axe-core


def axe_path() -> Path:
    if not AXE_JS.exists():
        npm = shutil.which("npm")
        if npm:
            # one `npm ci` at a time: two pytest-xdist workers may both get here first
            import fcntl

            with open(AXE_DIR / ".npm-ci.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not AXE_JS.exists():
                    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AXE_DIR, check=False,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=300)
    if not AXE_JS.exists():
        msg = f"{AXE_JS} missing: run `npm ci` in {AXE_DIR}"
        if setting("KULESHOV_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return AXE_JS


def serious_violations(page) -> list:
    page.add_script_tag(path=str(axe_path()))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:5])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, PHONE], ids=["desktop", "phone"])
def test_axe_finds_no_serious_problem(quick_server, browser, viewport):
    server, engine = quick_server
    page = browser.new_page(viewport=viewport)
    page.goto(f"{server.url}/?study={STUDY_ID}")
    page.locator('.kd-root[data-state="ready"]').wait_for(timeout=STEP_TIMEOUT_MS)
    assert serious_violations(page) == [], "device check page"
    pass_device_check(page, server.db_url)
    wait_title(page, "Consent")
    settle(page)
    assert serious_violations(page) == [], "consent page"
    page.get_by_role("button", name="I have read this and agree").click()
    page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
    token = page.url.split("t=", 1)[1].split("&")[0]
    wait_title(page, "About you")
    page.locator(".kq-root").wait_for()
    settle(page)
    assert serious_violations(page) == [], "items page"
    click_continue(page)  # with the error summary and messages showing
    page.locator(".kq-summary").wait_for()
    assert serious_violations(page) == [], "items page with errors"
    wait_step_change(engine, token, "consent")
    advance_to(page, engine, token, "practice", random.Random(4))
    page.locator('.kq-root[data-page="practice"]').wait_for()
    settle(page)
    assert serious_violations(page) == [], "clip page"
    # the rest of the way by the store (as a bot would), then the completion page in the browser
    state = store.get_state(engine, token)
    bot = simulate.Bot.answering(state, random.Random(5), engine=engine)
    while state.step.kind != "complete":
        step = state.step
        meta = bot.watch(step) if step.has_clip else None
        answers = bot.answers_for(step) if step.collects_data else {}
        state = bot.state = store.submit_step(engine, token, step.key, answers, trial_meta=meta).state
    page.goto(f"{server.url}/?t={token}")
    wait_title(page, state.step.title)
    settle(page)
    assert serious_violations(page) == [], "completion page"


# --------------------------------------------------------------------------- a lost Continue


def moved_on(page, engine, token: str, key: str) -> None:
    """wait_step_change, waiting in Playwright: the sync API runs the websocket relay's handlers
    only while a Playwright call waits (time.sleep would hold every message back)."""
    for _ in range(150):
        if store.get_state(engine, token).step.key != key:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"still on {key}")


def test_a_continue_lost_on_its_way_is_sent_again_and_stored_once(quick_server, browser):
    """The websocket drops the first message that carries a page's answers (as a reconnect or
    a racing rerun can): the questionnaire sends them again 8 s later, the page is stored once
    and the participant moves on. A Continue that arrives costs no second run later on."""
    import re

    server, engine = quick_server
    page = browser.new_page()
    dropped: list[float] = []

    def relay(ws):
        upstream = ws.connect_to_server()

        def from_page(message):
            if isinstance(message, bytes) and b"submit_id" in message and not dropped:
                dropped.append(time.monotonic())
                return
            upstream.send(message)

        ws.on_message(from_page)
        upstream.on_message(lambda message: ws.send(message))

    token = enter(page, server, engine)
    # From here the page's websocket goes through the relay (a reload keeps the participant's place).
    page.route_web_socket(re.compile(r".*/_stcore/stream.*"), relay)
    runs = RunCounter(page)
    page.reload()
    rng = random.Random(8)
    for _ in range(5):  # up to the first page of items
        state = store.get_state(engine, token)
        wait_title(page, state.step.title)
        if state.step.items:
            break
        click_continue(page, "Start")
        moved_on(page, engine, token, state.step.key)
    step = state.step
    entered = answer_page(page, step, state.item_order, rng)
    click_continue(page)
    page.wait_for_timeout(1000)
    assert dropped and store.get_state(engine, token).step.key == step.key  # lost: nothing stored yet
    moved_on(page, engine, token, step.key)
    assert time.monotonic() - dropped[0] >= 7.5  # stored by the copy sent 8 s later
    assert set(responses(engine, token, step.key)) == set(entered)

    # The next page's Continue arrives: no copy of it follows, and no extra run.
    state = store.get_state(engine, token)
    wait_title(page, state.step.title)
    assert state.step.items, state.step.key  # the quick study's next page has items too
    answer_page(page, state.step, state.item_order, rng)
    click_continue(page)
    moved_on(page, engine, token, state.step.key)
    settle(page)
    after = runs.snapshot()
    page.wait_for_timeout(10_000)
    assert runs.snapshot() == after, "a stored page's Continue was sent again"
