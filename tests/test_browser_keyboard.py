"""The participant pages without a mouse, and on a phone, in headless Chromium.

- The whole demo study, from the link to the completion page, with `keyboard.press` only
  (Tab, Shift+Tab, arrows, Space, Enter, digits): no click, no fill. Every page's focus is
  visible; the player's Start button and its captions toggle are reached and used with the
  keyboard; the session ends `completed` in the database with the answers that were keyed.
  Along the way the page's script runs are counted from the websocket: at most one per page
  plus the player's own (it reports "watched enough" and "ended" once per clip).
- A 390 x 844 touch viewport: every interactive control on every participant page, from
  consent to completion, is at least 44 x 44 CSS px.
"""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa

from browser_util import (launch, pass_device_check, pass_device_check_by_keyboard, require_chromium, start_server,
                          wait_until)
from test_browser_participant import DEMO, STEP_TIMEOUT_MS, STUDY_ID, answer_page, click_continue, play_clip, wait_title
from test_questionnaire_browser import PHONE, RunCounter, quick_study, settle, wait_step_change

from study import store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The focused element, through shadow roots, described for the test.
FOCUSED = """() => { let a = document.activeElement;
  while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
  if (!a) return null;
  const item = a.closest ? a.closest('[data-item]') : null;
  const page = a.closest ? a.closest('.kq-root') : null;
  const style = getComputedStyle(a);
  return {tag: a.tagName, cls: String(a.className || ''), text: (a.textContent || '').trim().slice(0, 80),
          item: item ? item.dataset.item : null, page: page ? page.dataset.page : null,
          value: a.dataset ? (a.dataset.value || null) : null, type: a.type || null,
          outline: style.outlineStyle, outlineWidth: parseFloat(style.outlineWidth) || 0,
          shadow: style.boxShadow}; }"""


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


class Keys:
    """Drives one page with the keyboard alone and checks the focus is visible at each stop."""

    def __init__(self, page):
        self.page = page
        self.presses = 0
        self.invisible: list[dict] = []

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.presses += 1

    def focused(self) -> dict | None:
        return self.page.evaluate(FOCUSED)

    def tab_to(self, matches, what: str, limit: int = 80) -> dict:
        """Press Tab until the focused element matches; returns it (fails after `limit` presses)."""
        for _ in range(limit):
            self.press("Tab")
            now = self.focused()
            if now and matches(now):
                if now["tag"] != "MAIN" and not (now["outline"] not in ("none", "") and now["outlineWidth"] >= 2):
                    self.invisible.append(now)
                return now
        raise AssertionError(f"Tab never reached {what}; last focus {self.focused()}")

    def button(self, text: str, key: str = "Enter") -> None:
        self.tab_to(lambda f: f["tag"] == "BUTTON" and f["text"] == text, f"the {text!r} button")
        self.press(key)


def key_item(keys: Keys, step, item, rng: random.Random):
    """Answer one item with the keyboard; returns the value that should be stored."""
    keys.tab_to(lambda f: f["page"] == step.key and f["item"] == item.id, f"item {item.id} of {step.key}")
    if item.type in ("pictorial9", "likert", "intensity"):
        steps = rng.randint(0, int(item.max - item.min))
        for _ in range(steps):
            keys.press("ArrowRight")
        keys.press("Space")
        return float(item.min + steps)
    if item.type in ("choice", "attention"):
        values = [o.value for o in item.options]
        target = values.index(item.correct) if item.type == "attention" else rng.randrange(len(values))
        for _ in range(target):
            keys.press("ArrowRight")
        keys.press("Space" if target % 2 else "Enter")
        return values[target]
    if item.type == "slider":
        steps = rng.randint(1, 8)
        for _ in range(steps):
            keys.press("ArrowRight")
        start = int(item.min + (item.max - item.min) // 2)
        return float(min(item.max, start + steps))
    if item.type == "number":
        value = rng.randint(int(item.min), min(int(item.max), 80))
        for digit in str(value):
            keys.press(digit)
        return float(value)
    raise AssertionError(f"no keyboard answer for a {item.type} item")


def stored_answers(engine, token: str) -> dict[tuple[str, str], object]:
    r, p = store.responses.c, store.participants.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.step_key, r.item_id, r.value_num, r.value_text)
                            .join(store.participants, p.id == r.participant_id).where(p.token == token)).all()
    return {(row.step_key, row.item_id): (row.value_num if row.value_num is not None else row.value_text)
            for row in rows}


def check_captions_toggle(keys: Keys) -> list[bool]:
    """Turn the practice clip's captions off and on again with the keyboard; returns what showed."""
    page = keys.page
    track = page.locator(".kp-video:visible track")
    assert track.count() == 1
    assert track.get_attribute("kind") == "captions" and track.get_attribute("src").startswith("/captions/")
    # (the component lives in a shadow root: read the track through its locator)
    deadline = time.monotonic() + 20
    while track.evaluate("t => t.track.mode") != "showing":
        assert time.monotonic() < deadline, "captions never showed"
        time.sleep(0.1)
    assert track.evaluate("t => t.readyState") in (1, 2)  # loading or loaded, not an error
    toggle = page.locator(".kp-cc:visible")
    seen = []
    for key in ("Space", "Enter"):
        keys.tab_to(lambda f: "kp-cc" in f["cls"], "the captions toggle", limit=1)  # next after the stage
        keys.press(key)
        seen.append(track.evaluate("t => t.track.mode") == "showing" and toggle.get_attribute("aria-pressed") == "true")
        keys.press("Shift+Tab")  # back to the stage, so that the next Tab reaches the toggle again
    return seen


# --------------------------------------------------------------------------- the whole demo study


def test_the_demo_study_with_the_keyboard_alone(tmp_path, browser):
    require_chromium()
    url = f"sqlite:///{tmp_path / 'kuleshov.db'}"
    server = start_server(url, tmp_path, DEMO)
    engine = store.make_engine(url)
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Every mouse or touch action would show up here: none is expected.
        page.add_init_script("""window.__clicks = 0;
            addEventListener('pointerdown', (e) => { if (e.isTrusted && e.pointerType) window.__clicks++; }, true);""")
        runs = RunCounter(page)
        keys = Keys(page)
        rng = random.Random(12)
        page.goto(f"{server.url}/?study={STUDY_ID}")
        pass_device_check_by_keyboard(page, server.db_url)
        wait_title(page, "Consent")
        settle(page)
        keys.button("I have read this and agree to take part in the demonstration")
        page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
        token = page.url.split("t=", 1)[1].split("&")[0]
        wait_step_change(engine, token, "consent")
        keyed: dict[tuple[str, str], object] = {}
        pages, clips, captions_seen = 1, 0, None
        shown_at: list[tuple[str, int]] = [("consent", 0)]
        for _ in range(30):
            state = store.get_state(engine, token)
            step = state.step
            if step.kind == "complete":
                break
            wait_title(page, step.title)
            settle(page, 300)
            shown_at.append((step.key, runs.snapshot()[0]))
            if step.kind == "instructions":
                keys.button("Start")
            elif step.kind == "debrief":
                keys.button("Finish")
            else:
                if step.has_clip:
                    clips += 1
                    keys.tab_to(lambda f: "kp-start" in f["cls"], "the player's Start button")
                    keys.press("Enter" if clips % 2 else "Space")
                    if step.key == "practice":
                        # the Start button hides as the clip plays: the focus stays in the player
                        page.locator(".kp-overlay:visible").wait_for(state="hidden", timeout=STEP_TIMEOUT_MS)
                        assert "kp-stage" in keys.focused()["cls"], keys.focused()
                        captions_seen = check_captions_toggle(keys)
                    page.locator(f'.kq-root[data-page="{step.key}"]').wait_for(timeout=40_000)
                    settle(page, 300)
                else:
                    page.locator(f'.kq-root[data-page="{step.key}"]').wait_for(timeout=STEP_TIMEOUT_MS)
                by_id = {it.id: it for it in step.items}
                for item_id in state.item_order:
                    keyed[(step.key, item_id)] = key_item(keys, step, by_id[item_id], rng)
                keys.button("Continue")
            pages += 1
            wait_step_change(engine, token, step.key)
        wait_title(page, "Thank you")
        settle(page)
        final = store.get_state(engine, token)
        assert final.status == "completed" and final.step.kind == "complete"
        assert "KULDEMO1" in page.inner_text("body")
        assert page.evaluate("() => window.__clicks") == 0
        assert captions_seen == [False, True]  # off with Space, on again with Enter
        assert clips == 7 and pages == 14, (clips, pages)
        stored = stored_answers(engine, token)
        assert {k: stored.get(k) for k in keyed} == keyed
        assert len(keyed) == 3 + 4 + 7 * 18 + 1 + 4
        assert keys.invisible == [], keys.invisible
        finished, _ = runs.snapshot()
        shown_at.append(("complete", finished))
        # script runs while each page was showing, from its first display to the next page's
        per_page = {key: later - at for (key, at), (_, later) in zip(shown_at, shown_at[1:])}
        # one per page submitted, the first load, the browser's answer on the first visit (the
        # token it kept for this study, app_pages/browser_session), the device check's one submit
        # (before the pages counted here) and the player's two reports per clip
        budget = pages + 3 + 2 * clips
        print(f"keyboard run: {keys.presses} key presses, {finished} script runs for {pages} pages "
              f"and {clips} clips (budget {budget}): {per_page}")
        assert finished <= budget, (finished, budget, per_page)
        assert not errors, errors
        with engine.connect() as conn:
            ev = store.playback_events.c
            toggles = conn.execute(sa.select(ev.detail).where(ev.event == "captions")).scalars().all()
        assert len(toggles) == 2
    finally:
        engine.dispose()
        server.stop()


# --------------------------------------------------------------------------- phone


INTERACTIVE = ("button, a[href], input, textarea, select, video[controls], [role='button'], [role='radio'], "
               "[role='checkbox'], [role='slider'], [tabindex]:not([tabindex='-1'])")


SMALL_TARGETS = """(selector) => {
  // every root: the document and the shadow roots of components, however deep
  const roots = [document];
  for (let i = 0; i < roots.length; i++)
    for (const el of roots[i].querySelectorAll('*')) if (el.shadowRoot) roots.push(el.shadowRoot);
  const out = [];
  let count = 0;
  for (const root of roots) for (const el of root.querySelectorAll(selector)) {
    if (el.tagName === 'MAIN' || !el.checkVisibility({visibilityProperty: true, opacityProperty: true})) continue;
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) continue;  // visually hidden (the skip link)
    count++;
    if (r.width < 44 || r.height < 44)
      out.push([el.getAttribute('aria-label') || (el.textContent || '').trim().slice(0, 40) || el.outerHTML.slice(0, 80),
                Math.round(r.width), Math.round(r.height)]);
  }
  return {count, small: out};
}"""


def small_targets(page) -> tuple[int, list]:
    """(how many visible interactive controls, those under 44 x 44 CSS px as (name, width, height))."""
    found = page.evaluate(SMALL_TARGETS, INTERACTIVE)
    return found["count"], found["small"]


def test_every_control_on_every_page_is_44px_on_a_phone(tmp_path, browser):
    require_chromium()
    url = f"sqlite:///{tmp_path / 'kuleshov.db'}"
    server = start_server(url, tmp_path, quick_study(tmp_path))
    engine = store.make_engine(url)
    try:
        page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
        rng = random.Random(6)
        page.goto(f"{server.url}/?study={STUDY_ID}")
        page.locator('.kd-root[data-state="ready"]').wait_for(timeout=STEP_TIMEOUT_MS)
        settle(page)
        seen: dict[str, list] = {"device_check": small_targets(page)}
        pass_device_check(page, server.db_url)
        wait_title(page, "Consent")
        settle(page)
        seen["consent"] = small_targets(page)
        page.get_by_role("button", name="I have read this and agree").tap()
        page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
        token = page.url.split("t=", 1)[1].split("&")[0]
        wait_step_change(engine, token, "consent")
        for _ in range(20):
            state = store.get_state(engine, token)
            step = state.step
            wait_title(page, step.title)
            if step.kind == "complete":
                settle(page)
                seen["complete"] = small_targets(page)
                break
            if step.has_clip:
                page.locator(".kp-start:visible").wait_for(timeout=STEP_TIMEOUT_MS)
                settle(page, 500)
                seen[f"{step.key} (player)"] = small_targets(page)
                play_clip(page)
            if step.items:
                page.locator(f'.kq-root[data-page="{step.key}"]').wait_for(timeout=STEP_TIMEOUT_MS)
            settle(page, 500)
            seen[step.key] = small_targets(page)
            if step.kind == "instructions":
                click_continue(page, "Start")
            elif step.kind == "debrief":
                click_continue(page, "Finish")
            else:
                answer_page(page, step, state.item_order, rng)
                click_continue(page)
            wait_step_change(engine, token, step.key)
        assert {"consent", "demographics", "mood_pre", "instructions", "practice", "practice (player)", "trial:1",
                "trial:2", "attention:attn_colour", "mood_post", "debrief", "complete"} <= set(seen), sorted(seen)
        counts = {k: n for k, (n, _) in seen.items()}
        print("controls per page:", counts)
        assert all(n >= 1 for k, n in counts.items() if k != "complete"), counts
        assert counts["practice"] > 100 and counts["consent"] >= 2  # 3 x 9 pictures, 9 x 9 emotions, ...
        assert {k: small for k, (_, small) in seen.items() if small} == {}
        assert store.get_state(engine, token).status == "completed"
    finally:
        engine.dispose()
        server.stop()


# --------------------------------------------------------------------------- continuous rating


def test_the_continuous_rating_is_named_and_moved_with_the_keyboard(tmp_path, browser):
    """A study with a continuous rating (the demo has none): the slider has its question as its
    accessible name, a visible focus ring, and arrow keys move it while the clip plays."""
    require_chromium()
    study = quick_study(tmp_path)
    text = study.read_text().replace(
        "  allow_skip_on_error: true\n",
        "  allow_skip_on_error: true\n  continuous_rating: {item: \"How do you feel right now?\", min: 1, max: 9}\n")
    study.write_text(text)
    url = f"sqlite:///{tmp_path / 'kuleshov.db'}"
    server = start_server(url, tmp_path, study)
    engine = store.make_engine(url)
    try:
        page = browser.new_page()
        keys = Keys(page)
        page.goto(f"{server.url}/?study={STUDY_ID}")
        pass_device_check_by_keyboard(page, server.db_url)
        wait_title(page, "Consent")
        settle(page)
        keys.button("I have read this and agree to take part in the demonstration")
        page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
        token = page.url.split("t=", 1)[1].split("&")[0]
        wait_step_change(engine, token, "consent")
        rng = random.Random(3)
        for _ in range(6):
            state = store.get_state(engine, token)
            if state.step.key == "practice":
                break
            wait_title(page, state.step.title)
            if state.step.kind == "instructions":
                click_continue(page, "Start")
            else:
                answer_page(page, state.step, state.item_order, rng)
                click_continue(page)
            wait_step_change(engine, token, state.step.key)
        wait_title(page, "Practice clip")
        # The control (components/player/continuous.js) is a focusable role="slider" named by its question.
        slider = page.get_by_role("slider", name="How do you feel right now?")
        start = float(slider.get_attribute("aria-valuenow"))
        keys.tab_to(lambda f: "kp-start" in f["cls"], "the Start button")
        keys.press("Enter")
        # Start hands the focus to the rating control (no Tab needed, and none taken back later)
        focus = wait_until(lambda: (f := keys.focused()) and "kc-area" in f["cls"] and f, 20,
                           "the focus on the continuous rating after Start", lambda: keys.focused())
        assert focus["outline"] not in ("none", "") and focus["outlineWidth"] >= 2, focus
        video = page.locator(".kp-video:visible")
        pressed_at = wait_until(lambda: video.evaluate("v => !v.paused && v.currentTime > 0 && v.currentTime"), 30,
                                "the clip playing", lambda: video.evaluate("v => [v.paused, v.currentTime]"))
        for _ in range(3):
            keys.press("ArrowRight")
        raised = float(slider.get_attribute("aria-valuenow"))
        assert raised > start, (start, raised)
        # sampled while the clip plays: a second of video time later, however slow the machine
        wait_until(lambda: video.evaluate("v => v.currentTime") > pressed_at + 1.0, 60, "a second more of the clip",
                   lambda: video.evaluate("v => [v.paused, v.currentTime, v.ended]"))
        assert focus == keys.focused()  # still there: the player never took the focus back
        keys.press("Home")
        assert float(slider.get_attribute("aria-valuenow")) == 1.0
        page.locator('.kq-root[data-page="practice"]').wait_for(timeout=STEP_TIMEOUT_MS)
        from analysis import load

        def stored():
            """The trace, once its last batch (sent at the end of the clip) is in."""
            with engine.connect() as conn:
                done = conn.execute(sa.select(sa.func.count()).select_from(store.trace_batches)
                                    .where(store.trace_batches.c.final.is_(True))).scalar_one()
            return done and load.load_traces(engine, STUDY_ID, include_practice=True)["value"].tolist()

        values = wait_until(stored, 90, "the final trace batch",
                            lambda: load.load_traces(engine, STUDY_ID, include_practice=True)["value"].tolist())
        assert raised in values and values[-1] == 1.0, values
        assert values.index(raised) < len(values) - 1 and values[0] == start, values
        assert keys.invisible == [], keys.invisible
    finally:
        engine.dispose()
        server.stop()
