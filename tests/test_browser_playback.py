"""Headless Chromium: what was seen and heard, and the next clip preloaded.

One participant of a three-clip study: clip 1 is hidden mid-play (the page's visibility is
overridden and `visibilitychange` dispatched, since headless Chromium keeps every page
visible), clip 2 is muted mid-play, clip 3 loses the window's focus for real (a second page
brought to front with focus emulation off). The trial rows are checked against what the
browser did; the request log shows each next clip fetched before its trial starts. A second
study requires sound.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from browser_util import DEEP_ALL, launch, page_report, pass_device_check, require_chromium, start_server, wait_until
from study import store
from test_browser_participant import STEP_TIMEOUT_MS, answer_page, click_continue, wait_title

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "stimuli" / "demo" / "manifest.csv"

STUDY = """\
id: {id}
title: Playback check
consent:
  text: A short test of the player.
  agree_label: I agree
demographics: []
stimuli:
  manifest: {manifest}
measures:
  session_start: []
  per_clip: [sam]
  session_end: []
design:
  clips_per_participant: {clips}
  ordering: random
  seed: 5
  pairs: ignore
  label_conditions: [none]
playback:
  min_watched_share: 0.9
  require_sound: {sound}
"""

# The clip the participant sees: an earlier trial's player may linger, hidden, while the page changes.
# Components v2 render into shadow roots, which document.querySelectorAll does not enter.
VIDEO = f"{DEEP_ALL}('video.kp-video').filter((v) => v.isConnected && v.getClientRects().length > 0).pop()"
HIDE = """() => {
  Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
  document.dispatchEvent(new Event('visibilitychange'));
}"""
SHOW = """() => {
  delete document.hidden;
  delete document.visibilityState;
  document.dispatchEvent(new Event('visibilitychange'));
}"""


def write_study(tmp_path: Path, study_id: str, clips: int, sound: bool) -> Path:
    path = tmp_path / f"{study_id}.yaml"
    path.write_text(STUDY.format(id=study_id, manifest=MANIFEST, clips=clips, sound="true" if sound else "false"))
    return path


def video(page, expr: str):
    return page.evaluate(f"() => {{ const v = {VIDEO}; return v ? {expr} : null; }}")


def wait_media_time(page, at_least: float) -> float:
    deadline = time.monotonic() + 20
    while True:
        t = video(page, "v.currentTime")
        if t is not None and t >= at_least:
            return t
        assert time.monotonic() < deadline, f"the clip never reached {at_least} s (at {t})"
        page.wait_for_timeout(50)


def wait_video(page, expr: str, what: str, timeout_s: float = 30):
    """Wait until `expr` (over the visible player's video `v`) is true: a state the player must
    reach, however slow the machine (a fixed wait would race it)."""
    return wait_until(lambda: video(page, expr), timeout_s, what, lambda: video(page, "[v.paused, v.currentTime]"))


def start_clip(page) -> None:
    start = page.locator(".kp-start:visible")
    start.wait_for(timeout=STEP_TIMEOUT_MS)
    start.click()


def wait_step(engine, token: str, key: str, page=None, server=None) -> None:
    wait_until(lambda: store.get_state(engine, token).step.key == key, 30, f"the step {key}",
               lambda: page_report(page, server) if page is not None else store.get_state(engine, token).step.key)


def events_of(engine, participant_id: int, position: int) -> list[dict]:
    e = store.playback_events.c
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            sa.select(e.seq, e.event, e.media_time, e.client_time, e.detail)
            .where(e.participant_id == participant_id, e.position == position).order_by(e.seq)).mappings()]


def trial_row(engine, participant_id: int, position: int) -> dict:
    t = store.trials.c
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(store.trials).where(
            t.participant_id == participant_id, t.position == position)).mappings().one())


def enrol(page, server, study_id: str, engine) -> str:
    page.goto(f"{server.url}/?study={study_id}")
    pass_device_check(page, server.db_url)
    wait_title(page, "Consent")
    page.get_by_role("button", name="I agree").click()
    page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
    token = page.url.split("t=", 1)[1].split("&")[0]
    wait_step(engine, token, "instructions")
    wait_title(page, "Instructions")
    click_continue(page, "Start")
    wait_step(engine, token, "trial:1")
    return token


def rate_and_continue(page, engine, token: str, rng) -> float:
    """Answer the open ratings and press Continue; returns the time of the click (monotonic)."""
    state = store.get_state(engine, token)
    page.locator(f'.kq-root[data-page="{state.step.key}"]').wait_for(timeout=40_000)
    answer_page(page, state.step, state.item_order, rng)
    clicked = time.monotonic()
    click_continue(page)
    return clicked


def test_hidden_muted_unfocused_and_preloaded(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, write_study(tmp_path, "playback-check", clips=3, sound=False))
    server = start_server(sqlite_url, tmp_path)
    rng = random.Random(5)
    requests: list[tuple[float, str]] = []
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: requests.append((time.monotonic(), req.url)))
            token = enrol(page, server, study_id, engine)
            state = store.get_state(engine, token)
            pid, sequence = state.participant_id, state.sequence

            # ---- clip 1: the page is hidden mid-play for about 2.5 s
            wait_title(page, "Clip 1 of 3")
            start_clip(page)
            at_hide = wait_media_time(page, 1.5)
            hidden_at = time.monotonic()
            page.evaluate(HIDE)
            surely_hidden = time.monotonic()
            page.wait_for_timeout(2500)
            # paused at once, and nothing played while hidden
            assert video(page, "v.paused") is True
            assert video(page, "v.currentTime") == pytest.approx(at_hide, abs=0.3)
            surely_hidden = time.monotonic() - surely_hidden
            page.evaluate(SHOW)
            shown_at = time.monotonic()
            page.wait_for_timeout(1000)
            # visible again, but it resumes only on the participant's click: still paused
            assert video(page, "v.paused") is True
            resume = page.locator(".kp-start:visible")
            assert resume.inner_text() == "Resume the clip"
            assert "in the background" in page.locator(".kp-hint:visible").inner_text()
            # the Resume button has the focus: Enter on the keyboard resumes
            assert page.evaluate("""() => {
              let el = document.activeElement;
              while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
              return Boolean(el && el.classList.contains('kp-start'));
            }""")
            page.keyboard.press("Enter")
            wait_video(page, "!v.paused", "the clip resumed by Enter")
            continued = {1: rate_and_continue(page, engine, token, rng)}
            wait_step(engine, token, "trial:2", page, server)

            # ---- clip 2: muted mid-play
            wait_title(page, "Clip 2 of 3")
            start_clip(page)
            wait_media_time(page, 2.5)
            muted_at, duration = page.evaluate(
                f"() => {{ const v = {VIDEO}; v.muted = true; return [v.currentTime, v.duration]; }}")
            continued[2] = rate_and_continue(page, engine, token, rng)
            wait_step(engine, token, "trial:3", page, server)

            # ---- clip 3: the window loses its focus for real (another page in front)
            wait_title(page, "Clip 3 of 3")
            cdp = context.new_cdp_session(page)
            cdp.send("Emulation.setFocusEmulationEnabled", {"enabled": False})
            start_clip(page)
            wait_media_time(page, 1.0)
            other = context.new_page()
            blurred_at = time.monotonic()
            other.bring_to_front()
            wait_video(page, "v.paused", "the clip paused when the window lost its focus")
            # the other page stays in front for a known stretch (this wait is the test's input)
            surely_away = time.monotonic()
            page.wait_for_timeout(1500)
            surely_away = time.monotonic() - surely_away
            page.bring_to_front()
            page.wait_for_timeout(300)
            assert video(page, "v.paused") is True
            # the focus is back at the latest when the Resume click lands (on a loaded machine
            # the focus event can come well after bring_to_front returns)
            clicked_at = time.monotonic()
            page.locator(".kp-start:visible").click()
            rate_and_continue(page, engine, token, rng)
            deadline = time.monotonic() + 30
            while store.get_state(engine, token).step.key == "trial:3":
                assert time.monotonic() < deadline, "trial 3 not stored"
                time.sleep(0.2)
            browser.close()
        assert not errors, errors

        # ---- what the database says
        row1, row2, row3 = (trial_row(engine, pid, pos) for pos in (1, 2, 3))
        # hidden time is on the row: between the stretch surely hidden (after HIDE returned,
        # before SHOW was called) and the whole stretch from calling HIDE to SHOW returning
        assert surely_hidden - 0.05 <= row1["seconds_hidden"] <= shown_at - hidden_at + 0.05
        assert row1["play_count"] == 1 and not row1["replayed"]
        ev1 = events_of(engine, pid, 1)
        kinds = [e["event"] for e in ev1]
        assert {"visibility_hidden", "visibility_visible", "resume_click", "canplay", "volume"} <= set(kinds)
        pause = next(e for e in ev1 if e["event"] == "pause")
        assert pause["detail"]["reason"] == "hidden"
        # ... and not in the watched share: the share did not grow while the page was hidden
        hide = next(e for e in ev1 if e["event"] == "visibility_hidden")
        show = next(e for e in ev1 if e["event"] == "visibility_visible")
        assert show["detail"]["watched_share"] == pytest.approx(hide["detail"]["watched_share"], abs=0.01)
        assert show["media_time"] == pytest.approx(hide["media_time"], abs=0.3)
        assert row1["watched_share"] >= 0.9

        # muting mid-clip: the muted share is the part after the mute
        assert row2["share_muted"] == pytest.approx((duration - muted_at) / duration, abs=0.05)
        assert 0.2 < row2["share_muted"] < 0.8
        assert row1["share_muted"] == 0.0 and row3["share_muted"] == 0.0

        # the real loss of focus paused clip 3 and is counted
        ev3 = events_of(engine, pid, 3)
        assert "window_blur" in [e["event"] for e in ev3]
        assert next(e for e in ev3 if e["event"] == "pause")["detail"]["reason"] == "blur"
        # away at least as long as the other page surely stood in front, at most the whole stretch
        assert surely_away - 0.05 <= row3["seconds_hidden"] <= clicked_at - blurred_at + 0.05

        # every row has a load time; nothing stalled, nothing offline, nothing skipped
        for row in (row1, row2, row3):
            assert row["load_ms"] is not None and 0 <= row["load_ms"] < 10_000
            assert row["seconds_stalled"] < 1.0 and row["seconds_offline"] == 0.0 and not row["skipped"]

        # preload: each next clip was requested while the ratings of the one before were open,
        # before Continue was pressed (so before its own trial could start)
        for position, clip_id in ((1, sequence[1]), (2, sequence[2])):
            asked = [at for at, url in requests if url.split("?")[0].endswith(f"/clips/{study_id}/{clip_id}")]
            assert asked, f"{clip_id} never requested"
            assert min(asked) < continued[position], (
                f"{clip_id} first requested {min(asked) - continued[position]:.2f} s after trial {position}'s Continue")
        preloads = [e for e in events_of(engine, pid, 1) if e["event"] == "preload"]
        assert preloads and preloads[0]["detail"]["next_stimulus_id"] == sequence[1]
    finally:
        engine.dispose()
        server.stop()


def test_required_sound_starts_unmuted_pauses_when_muted_and_offline_is_recorded(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, write_study(tmp_path, "sound-check", clips=1, sound=True))
    server = start_server(sqlite_url, tmp_path)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            token = enrol(page, server, study_id, engine)
            pid = store.get_state(engine, token).participant_id
            wait_title(page, "Clip 1 of 1")
            # The participant is told why before the clip starts.
            hint = page.locator(".kp-hint:visible")
            hint.wait_for(timeout=STEP_TIMEOUT_MS)
            assert hint.inner_text().startswith("This study needs sound")
            # A video that would start muted (an extension, a remembered setting) starts with sound.
            video(page, "(v.muted = true)")
            start_clip(page)
            wait_media_time(page, 1.0)
            assert video(page, "v.muted") is False
            # Muting mid-clip pauses it until the sound is back on.
            video(page, "(v.muted = true)")
            wait_video(page, "v.paused", "the clip paused when muted")
            button = page.locator(".kp-start:visible")
            assert button.inner_text() == "Turn the sound on and continue"
            assert "sound was turned off" in page.locator(".kp-hint:visible").inner_text()
            button.click()
            wait_video(page, "!v.paused && !v.muted", "the clip playing with sound again")
            # The connection drops for about 1.5 s: the period is recorded, the events wait.
            page.context.set_offline(True)
            went_offline = time.monotonic()
            page.wait_for_timeout(1500)
            page.context.set_offline(False)
            offline_for = time.monotonic() - went_offline
            rate_and_continue(page, engine, token, random.Random(1))
            deadline = time.monotonic() + 30
            while store.get_state(engine, token).step.key == "trial:1":
                assert time.monotonic() < deadline, "trial 1 not stored"
                time.sleep(0.2)
            browser.close()
        assert not errors, errors
        events = events_of(engine, pid, 1)
        assert next(e for e in events if e["event"] == "pause")["detail"]["reason"] == "muted"
        assert next(e for e in events if e["event"] == "resume_click")["detail"]["reason"] == "muted"
        row = trial_row(engine, pid, 1)
        # only the moment between the mute and the pause played muted
        assert row["share_muted"] is not None and row["share_muted"] < 0.05
        assert row["seconds_offline"] == pytest.approx(offline_for, abs=0.5)
        assert [e["event"] for e in events if e["event"] in ("offline", "online")] == ["offline", "online"]
    finally:
        engine.dispose()
        server.stop()
