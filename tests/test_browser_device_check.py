"""Headless Chromium through the real app: the device and browser check before consent.

One server, three registered studies: the demo (the check as shipped), a copy whose clips are
declared in a codec no browser plays, and a strict copy (a window of at least 1000 x 700, two
tries at the sound test). Each failure must end at a page that says why and what to do, with
the reason in participants.device_info and status ineligible_device; passing goes on to consent
with everything measured stored. The sound test's answer is read from the participant's seed in
the database, the way only the server knows it (the browser gets a WAV file, never the digits).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent

from browser_util import (  # noqa: E402
    device_check_answer,
    launch,
    participant_token,
    pass_device_check,
    require_chromium,
    start_server,
)
from study import store  # noqa: E402

pytestmark = [pytest.mark.browser]
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
TIMEOUT_MS = 30_000
UNPLAYABLE = 'video/mp4; codecs="mp4v.20.9"'  # MPEG-4 Part 2: no current browser decodes it


def variant(tmp: Path, study_id: str, device_check: str) -> Path:
    text = DEMO.read_text().replace("manifest: manifest.csv", f"manifest: {DEMO.parent / 'manifest.csv'}")
    text = text.replace("id: kuleshov-demo", f"id: {study_id}") + "\ndevice_check:\n" + device_check
    path = tmp / f"{study_id}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("device")
    url = f"sqlite:///{tmp / 'kuleshov.db'}"
    engine = store.make_engine(url)
    store.upgrade(engine)
    store.register_study(engine, variant(tmp, "device-codec", f"  codecs: ['{UNPLAYABLE}']\n"))
    store.register_study(engine, variant(tmp, "device-strict", "  min_width: 1000\n  min_height: 700\n"
                                                               "  audio_attempts: 2\n"))
    store.register_study(engine, variant(tmp, "device-phones", "  audio_test: false\n  headphone_check: true\n"))
    srv = start_server(url, tmp, DEMO)
    yield srv, engine
    engine.dispose()
    srv.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


def row(engine, token: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.participants).where(store.participants.c.token == token)).mappings().one()


def wait_status(engine, token: str, status: str):
    deadline = time.monotonic() + 30
    while (r := row(engine, token))["status"] != status:
        assert time.monotonic() < deadline, f"status {r['status']}, device_info {r['device_info']}"
        time.sleep(0.2)
    return r


def body_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text(timeout=TIMEOUT_MS)


def test_a_working_browser_passes_and_everything_measured_is_stored(server, browser):
    srv, engine = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{srv.url}/?study=kuleshov-demo")
    page.locator("h3", has_text="a quick check of your browser").wait_for(timeout=TIMEOUT_MS)
    # The sound test is operable from the keyboard: the Play button and the answer field are labelled.
    page.get_by_role("button", name="Play the sound").focus()
    page.keyboard.press("Enter")
    page.locator('.kd-root[data-audio="played"]').wait_for(timeout=TIMEOUT_MS)
    assert page.get_by_label("The number of beeps in each group, in order").count() == 1
    for selector in (".kd-play", ".kd-answer", ".kd-continue"):
        box = page.locator(selector).bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44, selector
    token = pass_device_check(page, srv.db_url)
    page.locator("h3", has_text="Consent").first.wait_for(timeout=TIMEOUT_MS)
    r = row(engine, token)
    info = r["device_info"]
    assert r["status"] == "started" and r["step_key"] == "consent" and r["excluded_reason"] is None
    assert info["passed"] is True and info["failed"] == []
    assert info["codecs"] == [{"mime": 'video/mp4; codecs="avc1.4D401E, mp4a.40.2"', "can_play": "probably",
                               "mse": True}]
    assert (info["window_width"], info["window_height"]) == (1280, 800)
    assert info["pixel_ratio"] == 1 and info["touch"] is False
    assert info["browser"].startswith("Chrome ") and "Chrome" in info["user_agent"]
    assert info["speed_kbps"] > info["speed_needed_kbps"] > 0 and info["connection_ok"] is True
    assert [a["ok"] for a in info["audio_attempts"]] == [True] and info["audio_attempts"][0]["plays"] == 1
    assert errors == []


def test_an_unplayable_codec_ends_at_a_page_saying_so(server, browser):
    srv, engine = server
    page = browser.new_page()
    page.goto(f"{srv.url}/?study=device-codec")
    token = participant_token(page)
    r = wait_status(engine, token, "ineligible_device")
    page.get_by_text("cannot play the study's videos").first.wait_for(timeout=TIMEOUT_MS)
    text = body_text(page)
    assert "open the link again in a current version of Chrome" in text
    assert "Prolific" not in text  # not recruited there
    assert page.get_by_role("button", name="I have read this and agree to take part in the demonstration").count() == 0
    assert r["device_info"]["failed"] == ["codec"] and r["device_info"]["unplayable_codecs"] == [UNPLAYABLE]
    assert r["excluded_reason"] == "device check failed: codec"
    # A reload keeps the participant at the same polite end.
    page.reload()
    page.get_by_text("cannot play the study's videos").first.wait_for(timeout=TIMEOUT_MS)
    assert row(engine, token)["status"] == "ineligible_device"


def test_a_too_small_window_ends_at_a_page_saying_so(server, browser):
    srv, engine = server
    page = browser.new_page(viewport={"width": 900, "height": 600})
    page.goto(f"{srv.url}/?study=device-strict&PROLIFIC_PID=pid-small-1")
    token = participant_token(page)
    page.get_by_text("Your browser window is 900 × 600 pixels").first.wait_for(timeout=TIMEOUT_MS)
    page.locator(".kd-answer").fill(device_check_answer(srv.db_url, token))
    page.locator(".kd-continue").click()
    r = wait_status(engine, token, "ineligible_device")
    page.get_by_text("The browser window is too small").first.wait_for(timeout=TIMEOUT_MS)
    text = body_text(page)
    assert "at least 1000 × 700 pixels" in text
    assert "please return the study on Prolific" in text  # recruited there: Prolific's way out
    info = r["device_info"]
    assert info["failed"] == ["window"] and (info["window_width"], info["window_height"]) == (900, 600)
    assert info["audio_attempts"] == []  # the window decided it; the sound test was not judged


def test_a_failed_sound_test_may_be_retried_then_ends_at_a_page_saying_so(server, browser):
    srv, engine = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{srv.url}/?study=device-strict&PROLIFIC_PID=pid-deaf-1")
    token = participant_token(page)
    page.locator('.kd-root[data-state="ready"]').wait_for(timeout=TIMEOUT_MS)
    right = device_check_answer(srv.db_url, token)
    wrong = "".join("9" if ch != "9" else "8" for ch in right)
    page.locator(".kd-answer").fill(wrong)
    page.locator(".kd-answer").press("Enter")
    page.get_by_text("That was not what was played").first.wait_for(timeout=TIMEOUT_MS)
    assert "try 2 of 2" in body_text(page)
    r = row(engine, token)
    assert r["status"] == "started" and [a["typed"] for a in r["device_info"]["audio_attempts"]] == [wrong]
    second = device_check_answer(srv.db_url, token)  # a new sequence for the second try
    page.locator('.kd-root[data-page="device_check:1"][data-state="ready"]').wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".kd-answer").input_value() == ""
    page.locator(".kd-answer").fill("1")
    page.locator(".kd-continue").click()
    r = wait_status(engine, token, "ineligible_device")
    page.get_by_text("The sound test did not succeed").first.wait_for(timeout=TIMEOUT_MS)
    assert "please return the study on Prolific" in body_text(page)
    attempts = r["device_info"]["audio_attempts"]
    assert [(a["expected"], a["typed"], a["ok"]) for a in attempts] == [(right, wrong, False), (second, "1", False)]
    assert r["device_info"]["failed"] == ["audio"] and r["excluded_reason"] == "device check failed: audio"
    # Not counted for balance (every participant of this study failed the check): places stay free.
    from study.store.sessions import _balance_counts

    with engine.connect() as conn:
        assert _balance_counts(conn, "device-strict", "1", False, 120) == {}


def test_the_headphone_check_is_answered_round_by_round_from_the_keyboard(server, browser):
    from study import device_check

    srv, engine = server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{srv.url}/?study=device-phones")
    token = participant_token(page)
    page.locator('.kd-root[data-state="ready"]').wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".kd-answer").is_hidden()  # no sound test in this study
    page.get_by_role("button", name="Play round 1").click()
    page.locator(".kd-continue").click()  # not every round answered: told so, nothing sent
    page.get_by_text("Please play every round").first.wait_for(timeout=TIMEOUT_MS)
    assert row(engine, token)["device_info"] == {"seed": row(engine, token)["device_info"]["seed"]}
    plan = device_check.headphone_plan(row(engine, token)["device_info"]["seed"])
    for i, (quiet, _) in enumerate(plan):
        group = page.locator(f'input[data-round="{i}"]')
        assert group.count() == 3
        group.nth(quiet).focus()
        page.keyboard.press("Space")
        box = page.locator("label.kd-tone").nth(3 * i + quiet).bounding_box()
        assert box["height"] >= 44
    page.locator(".kd-continue").click()
    page.locator("h3", has_text="Consent").first.wait_for(timeout=TIMEOUT_MS)
    info = row(engine, token)["device_info"]
    assert info["headphone_picks"] == [q for q, _ in plan] and info["headphone_right"] == 6
    assert info["headphone_ok"] is True and info["audio_ok"] is None and info["passed"] is True
