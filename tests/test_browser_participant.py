"""Headless Chromium through the real app: the whole demo study, then resume and duplicates.

Every clip is played for real (the demo clips are 6-8 s); the database is then checked row by
row against what the browser entered.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent

from browser_util import launch, pass_device_check, require_chromium, start_server  # noqa: E402
from study import store  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
STUDY_ID = "kuleshov-demo"
STEP_TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------- page driving


def item_css(step_key: str, item_id: str) -> str:
    """One item (or grid row) of the questionnaire component showing page `step_key`."""
    return f'.kq-root[data-page="{step_key}"] [data-item="{item_id}"]'


def current_title(page) -> str:
    return page.locator("h3").first.inner_text(timeout=STEP_TIMEOUT_MS).strip()


def wait_title(page, text: str) -> None:
    page.locator("h3", has_text=text).first.wait_for(timeout=STEP_TIMEOUT_MS)


def answer_item(page, step_key: str, item, rng: random.Random):
    """Enter a random valid answer for one item; returns the value as it should be stored.

    Answering runs no server code at all (the component keeps the answers until Continue).
    """
    box = page.locator(item_css(step_key, item.id))
    try:
        box.wait_for(timeout=STEP_TIMEOUT_MS)
    except Exception:
        page.screenshot(path=f"/tmp/kuleshov-fail-{item.id}.png", full_page=True)
        raise
    if item.type in ("pictorial9", "likert", "intensity"):
        value = rng.randint(int(item.min), int(item.max))
        box.locator(f'[role="radio"][data-value="{value}"]').click()
        return float(value)
    if item.type in ("choice", "attention"):
        option = item.correct if item.type == "attention" else rng.choice(item.options).value
        box.locator(f'[role="radio"][data-value="{option}"]').click()
        return option
    if item.type == "slider":
        steps = rng.randint(1, 10)
        thumb = box.locator('input[type="range"]')
        thumb.focus()
        for _ in range(steps):
            thumb.press("ArrowRight")
        start = int(item.min + (item.max - item.min) // 2)
        return float(min(item.max, start + steps))
    if item.type == "number":
        value = rng.randint(int(item.min), min(int(item.max), 80))
        box.locator("input").fill(str(value))
        return float(value)
    text = f"answer {rng.randint(1, 999)}"
    box.locator("textarea").fill(text)
    return text


def answer_page(page, step, order: list[str], rng: random.Random) -> dict:
    by_id = {it.id: it for it in step.items}
    return {item_id: answer_item(page, step.key, by_id[item_id], rng) for item_id in order}


def click_continue(page, label: str = "Continue") -> None:
    page.get_by_role("button", name=label, exact=True).click()


def play_clip(page) -> float:
    """Press the player's Start button and wait until the ratings open; returns seconds waited."""
    # The previous clip's player can linger (hidden) while the page changes: take the visible one.
    start = page.locator(".kp-start:visible")
    start.wait_for(timeout=STEP_TIMEOUT_MS)
    t0 = time.monotonic()
    start.click()
    page.locator(".kq-root").first.wait_for(timeout=40_000)
    return time.monotonic() - t0


def walk_steps(page, engine, token, rng, answer, entered=None, waited=None, max_steps: int = 40) -> None:
    """Answer the steps the server says come next, up to the debrief: Start on instructions,
    play the clip where there is one, answer(page, step, item order, rng), Continue, and
    wait until the database has moved on. What was entered and how long each clip took to
    open go into the dicts given, by step key."""
    entered = {} if entered is None else entered
    waited = {} if waited is None else waited
    for _ in range(max_steps):
        state = store.get_state(engine, token)
        step = state.step
        if step.kind in ("debrief", "complete"):
            return
        wait_title(page, step.title)
        if step.kind == "instructions":
            click_continue(page, "Start")
        else:
            if step.has_clip:
                waited[step.key] = play_clip(page)
            entered[step.key] = answer(page, step, state.item_order, rng)
            click_continue(page)
        # Wait for the database to move on, then for the page to show the next step.
        deadline = time.monotonic() + 30
        while store.get_state(engine, token).step.key == step.key:
            assert time.monotonic() < deadline, f"stuck on {step.key}: {page.inner_text('body')[:800]}"
            time.sleep(0.2)
    raise AssertionError(f"not at the debrief after {max_steps} steps")


def engine_for(url):
    eng = store.make_engine(url)
    return eng


# --------------------------------------------------------------------------- whole study


def run_whole_study(server, db_url):
    from playwright.sync_api import sync_playwright

    rng = random.Random(7)
    engine = engine_for(db_url)
    entered: dict[str, dict] = {}
    waited: dict[str, float] = {}
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/?study={STUDY_ID}&PROLIFIC_PID=pid-browser-1&STUDY_ID=ps1&SESSION_ID=ss1")
        pass_device_check(page, db_url)
        wait_title(page, "Consent")
        page.get_by_role("button", name="I have read this and agree").click()
        page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
        token = page.url.split("t=", 1)[1].split("&")[0]
        deadline = time.monotonic() + 30
        while store.get_state(engine, token).step.key == "consent":
            assert time.monotonic() < deadline, "consent not stored"
            time.sleep(0.2)
        walk_steps(page, engine, token, rng, answer_page, entered, waited)
        wait_title(page, "About the clips you saw")
        debrief_text = page.inner_text("body")
        click_continue(page, "Finish")
        wait_title(page, "Thank you")
        page.get_by_text("KULDEMO1").first.wait_for(timeout=STEP_TIMEOUT_MS)
        # A participant who comes back after finishing sees the completion page again.
        page.goto(f"{server.url}/?t={token}")
        page.get_by_text("KULDEMO1").first.wait_for(timeout=STEP_TIMEOUT_MS)
        browser.close()
    assert not errors, errors
    return engine, token, entered, waited, debrief_text


def check_database(engine, token, entered, debrief_text):
    state = store.get_state(engine, token)
    assert state.status == "completed"
    assert state.step.kind == "complete"
    r, t, p = store.responses.c, store.trials.c, store.participants.c
    with engine.connect() as conn:
        prow = conn.execute(sa.select(store.participants).where(p.token == token)).mappings().one()
        rows = conn.execute(sa.select(store.responses).where(r.participant_id == prow["id"])).mappings().all()
        trials = conn.execute(sa.select(store.trials).where(t.participant_id == prow["id"])
                              .order_by(t.position)).mappings().all()
        events = conn.execute(sa.select(store.playback_events.c.position, store.playback_events.c.event)
                              .where(store.playback_events.c.participant_id == prow["id"])).all()
    assert (prow["prolific_pid"], prow["prolific_study_id"], prow["prolific_session_id"]) == ("pid-browser-1", "ps1", "ss1")
    assert prow["completed_at"] is not None
    stored = {(row["step_key"], row["item_id"]): row for row in rows}
    expected_keys = {(sk, iid) for sk, answers in entered.items() for iid in answers} | {("consent", "consent")}
    assert set(stored) == expected_keys  # nothing missing, nothing extra
    assert stored[("consent", "consent")]["value_text"] == "agree"
    for step_key, answers in entered.items():
        order = list(answers)  # the order the browser met them = the order shown
        for item_id, value in answers.items():
            row = stored[(step_key, item_id)]
            where = f"{step_key}/{item_id}"
            if isinstance(value, float):
                assert row["value_num"] == pytest.approx(value), where
                assert row["value_text"] is None, where
            else:
                assert row["value_text"] == value, where
            assert row["untouched"] is False, where
            assert row["shown_position"] == order.index(item_id) + 1, where
            assert row["response_time_ms"] is not None and row["response_time_ms"] >= 0, where
    # Every planned clip (practice included) has a trial with its share watched and ratings submitted.
    sequence = state.sequence
    assert [tr["position"] for tr in trials] == list(range(0, len(sequence) + 1))
    assert [tr["stimulus_id"] for tr in trials[1:]] == sequence
    for tr in trials:
        assert tr["watched_share"] >= 0.9, tr
        assert tr["submitted_at"] is not None
        assert tr["item_order"] == list(entered["practice" if tr["position"] == 0 else f"trial:{tr['position']}"])
    kinds = {}
    for position, event in events:
        kinds.setdefault(position, set()).add(event)
    for pos in range(0, len(sequence) + 1):
        assert {"start_click", "loaded", "play", "ended", "watched"} <= kinds.get(pos, set()), (pos, kinds.get(pos))
    # The debrief names the AI-generated clips.
    for sid in sequence:
        stim = state.stimuli[sid]
        assert stim["title"] in debrief_text
    assert debrief_text.count("generated by AI") >= sum(state.stimuli[s]["source"] == "ai" for s in sequence)


@pytest.fixture
def browser_ready():
    require_chromium()


def _whole_study(tmp_path, db_url):
    server = start_server(db_url, tmp_path, DEMO)
    try:
        engine, token, entered, waited, debrief = run_whole_study(server, db_url)
        # Real playback: each clip took about its own length before the ratings opened.
        for key, seconds in waited.items():
            assert seconds >= (0.9 * 6 if key == "practice" else 0.9 * 8) * 0.9 - 0.5, (key, seconds)
        check_database(engine, token, entered, debrief)
        engine.dispose()
    finally:
        server.stop()


def test_whole_demo_study_sqlite(browser_ready, tmp_path, sqlite_url):
    _whole_study(tmp_path, sqlite_url)


@pytest.mark.postgres
def test_whole_demo_study_postgres(browser_ready, tmp_path, pg_url):
    _whole_study(tmp_path, pg_url)


# --------------------------------------------------------------------------- resume, duplicates


def test_reload_double_click_and_second_tab(browser_ready, tmp_path, sqlite_url):
    from playwright.sync_api import sync_playwright

    server = start_server(sqlite_url, tmp_path, DEMO)
    engine = engine_for(sqlite_url)
    rng = random.Random(11)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{server.url}/?study={STUDY_ID}")
            pass_device_check(page, sqlite_url)
            wait_title(page, "Consent")
            # Double click on the consent button: one participant, consent stored once.
            page.get_by_role("button", name="I have read this and agree").dblclick()
            page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
            token = page.url.split("t=", 1)[1].split("&")[0]
            wait_title(page, "About you")

            # Reload on the demographics page: the same page comes back, nothing is lost.
            state = store.get_state(engine, token)
            page.reload()
            wait_title(page, "About you")
            demo_answers = answer_page(page, state.step, state.item_order, rng)
            page.get_by_role("button", name="Continue", exact=True).dblclick()
            wait_title(page, "How do you feel right now?")

            # A second tab with the same link shows the same step.
            state = store.get_state(engine, token)
            assert state.step.key == "mood_pre"
            tab2 = context.new_page()
            tab2.goto(page.url)
            wait_title(tab2, "How do you feel right now?")
            first = answer_page(page, state.step, state.item_order, rng)
            click_continue(page)
            wait_title(page, "Instructions")
            # The stale tab still shows the page just submitted. Its submit reaches the server,
            # which reads the database and moves it on: its answers replace nothing.
            answer_page(tab2, state.step, state.item_order, random.Random(99))
            click_continue(tab2)
            wait_title(tab2, "Instructions")
            assert tab2.locator(f'.kq-root[data-page="{state.step.key}"]').count() == 0

            # Reload mid-trial after watching: the ratings are open again without re-watching.
            click_continue(page, "Start")
            wait_title(page, "Practice clip")
            play_clip(page)
            page.wait_for_timeout(500)
            page.reload()
            wait_title(page, "Practice clip")
            page.locator('.kq-root[data-page="practice"]').wait_for(timeout=STEP_TIMEOUT_MS)
            state = store.get_state(engine, token)
            practice = answer_page(page, state.step, state.item_order, rng)
            page.get_by_role("button", name="Continue", exact=True).dblclick()
            wait_title(page, "Clip 1 of")
            browser.close()

        r, p = store.responses.c, store.participants.c
        with engine.connect() as conn:
            n_participants = conn.execute(sa.select(sa.func.count()).select_from(store.participants)).scalar_one()
            rows = conn.execute(sa.select(r.step_key, r.item_id, r.value_num, r.value_text)
                                .join(store.participants, p.id == r.participant_id)
                                .where(p.token == token)).all()
        assert n_participants == 1
        keys = [(row.step_key, row.item_id) for row in rows]
        assert len(keys) == len(set(keys))  # the unique key held: no duplicates
        got = {(row.step_key, row.item_id): row.value_num if row.value_num is not None else row.value_text
               for row in rows}
        expected = {("consent", "consent"): "agree"}
        for step_key, answers in (("demographics", demo_answers), ("mood_pre", first), ("practice", practice)):
            expected.update({(step_key, k): v for k, v in answers.items()})
        assert got == expected
        assert store.get_state(engine, token).step.key == "trial:1"
    finally:
        engine.dispose()
        server.stop()
