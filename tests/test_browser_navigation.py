"""A participant never leaves the study by accident, and leaves it properly at the end (Chromium).

Back, Forward, reload mid-ratings and a reopened study link each keep one participant (counted
in the database) with what they typed; Back from consent never shows the researcher login; a
second tab that lost the race is told so and shown the real page; the completion page shows
the code at once and redirects in the same tab to the filled-in URL (served here, by the test).
"""

from __future__ import annotations

import http.server
import random
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from browser_util import free_port, launch, require_chromium, start_server
from test_browser_participant import DEMO, STEP_TIMEOUT_MS, answer_item, click_continue, item_css, wait_title
from test_questionnaire_browser import advance_to, checked_value, responses, settle, wait_step_change

from study import store

pytestmark = [pytest.mark.browser, pytest.mark.slow]
STUDY = "nav-study"
AGREE = "I agree"
ANSWERED_ELSEWHERE = "This page had already been answered"


def nav_study(tmp_path: Path, redirect: str) -> Path:
    """A short study on the demo clips: consent, about you, instructions, practice, 2 clips, debrief, end."""
    text = DEMO.read_text()
    for old, new in {
        "id: kuleshov-demo": f"id: {STUDY}",
        "manifest: manifest.csv": f"manifest: {DEMO.parent / 'manifest.csv'}",
        "    en: I have read this and agree to take part in the demonstration": f"    en: {AGREE}",
        "demographics: [age, gender, film_watching_frequency]": "demographics: [age, gender, first_language]",
        "session_start: [mood]": "session_start: []",
        "session_end: [mood]": "session_end: []",
        "per_clip: [sam, discrete_emotions, moved, attribution]": "per_clip: [sam, moved]",
        "clips_per_participant: null   # all six main clips": "clips_per_participant: 2",
        "pairs: both": "pairs: one_per_participant",
        "min_watched_share: 0.9": "min_watched_share: 0",
        "  code: KULDEMO1\n": f"  code: KULNAV7\n  redirect_url: '{redirect}'\n  redirect_after_s: 2\n",
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    text = text.split("attention_checks:")[0] + "exclusions:" + text.split("exclusions:", 1)[1]
    # Navigation is about the pages after it; the device check has its own tests.
    text += "\ndevice_check:\n  enabled: false\n"
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


class _Done(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>panel</title><h1>Back at the panel</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def panel():
    """A stand-in for the recruiting panel's completion URL, on this machine."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Done)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def nav_server(tmp_path_factory, panel):
    require_chromium()
    tmp = tmp_path_factory.mktemp("nav")
    url = f"sqlite:///{tmp / 'kuleshov.db'}"
    redirect = panel + "/done/{participant}?pid={PROLIFIC_PID}&cc={code}&s={SESSION_ID}"
    server = start_server(url, tmp, nav_study(tmp, redirect))
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


def participants(engine) -> list:
    p = store.participants.c
    with engine.connect() as conn:
        return conn.execute(sa.select(p.token, p.step_key, p.prolific_pid).where(p.study_id == STUDY)
                            .order_by(p.id)).all()


def token_in(page) -> str:
    page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
    return parse_qs(urlsplit(page.url).query)["t"][0]


def assert_participant_side(page) -> None:
    body = page.inner_text("body")
    assert page.locator('input[type="password"]').count() == 0, body[:300]
    assert "Researcher login" not in body and "Dashboard" not in body, body[:300]


# --------------------------------------------------------------------------- Back, Forward, reload


def test_back_forward_and_reload_keep_one_participant_and_what_they_typed(nav_server, browser):
    server, engine = nav_server
    context = browser.new_context()
    page = context.new_page()
    before = len(participants(engine))
    page.goto(f"{server.url}/?study={STUDY}")
    wait_title(page, "Consent")
    token = token_in(page)
    assert len(participants(engine)) == before + 1

    # Back from the consent page: the study link it came from, still the participant's consent page.
    page.go_back()
    page.wait_for_url(f"**/?study={STUDY}", timeout=STEP_TIMEOUT_MS)
    settle(page)
    wait_title(page, "Consent")
    assert_participant_side(page)
    # ... and a reload there (a new Streamlit session) resumes the same participant.
    page.reload()
    wait_title(page, "Consent")
    assert token_in(page) == token
    assert_participant_side(page)
    # Back out of the app and Forward into it again, then a reload: still the one participant.
    page.go_back()
    page.go_back()
    page.go_forward()
    page.reload()
    wait_title(page, "Consent")
    assert_participant_side(page)
    # A double click stores consent once, and is no news to the participant.
    page.get_by_role("button", name=AGREE).dblclick()
    wait_step_change(engine, token, "consent")
    wait_title(page, "About you")
    settle(page)
    assert ANSWERED_ELSEWHERE not in page.inner_text("body")

    # What is typed on a page survives a reload, Back and Forward.
    wait_title(page, "About you")
    page.locator(item_css("demographics", "first_language") + " textarea").fill("Plattdeutsch")
    page.locator(item_css("demographics", "age") + " input").fill("37")
    page.locator(item_css("demographics", "gender") + ' [role="radio"]').first.click()
    gender = checked_value(page, "demographics", "gender")
    page.reload()
    wait_title(page, "About you")
    page.go_back()
    settle(page)
    page.go_forward()
    settle(page)
    page.reload()
    wait_title(page, "About you")
    assert_participant_side(page)
    assert page.locator(item_css("demographics", "first_language") + " textarea").input_value() == "Plattdeutsch"
    assert page.locator(item_css("demographics", "age") + " input").input_value() == "37"
    assert checked_value(page, "demographics", "gender") == gender
    click_continue(page)
    wait_step_change(engine, token, "demographics")
    stored = responses(engine, token, "demographics")
    assert stored["first_language"].value_text == "Plattdeutsch" and stored["age"].value_num == 37
    assert stored["gender"].value_text == gender
    assert [row.token for row in participants(engine)][before:] == [token]
    context.close()


def test_reload_mid_ratings_keeps_one_participant_and_the_ratings(nav_server, browser):
    server, engine = nav_server
    page = browser.new_context().new_page()
    before = len(participants(engine))
    page.goto(f"{server.url}/?study={STUDY}")
    wait_title(page, "Consent")
    token = token_in(page)
    page.get_by_role("button", name=AGREE).click()
    wait_step_change(engine, token, "consent")
    rng = random.Random(9)
    state = advance_to(page, engine, token, "trial:1", rng)
    by_id = {it.id: it for it in state.step.items}
    page.locator('.kq-root[data-page="trial:1"]').wait_for(timeout=STEP_TIMEOUT_MS)
    first = state.item_order[: len(state.item_order) // 2]
    entered = {i: answer_item(page, "trial:1", by_id[i], rng) for i in first}
    page.reload()
    wait_title(page, state.step.title)
    page.locator('.kq-root[data-page="trial:1"]').wait_for(timeout=STEP_TIMEOUT_MS)
    for item_id, value in entered.items():
        assert checked_value(page, "trial:1", item_id) == str(int(value)), item_id
    entered.update({i: answer_item(page, "trial:1", by_id[i], rng) for i in state.item_order if i not in entered})
    click_continue(page)
    wait_step_change(engine, token, "trial:1")
    stored = responses(engine, token, "trial:1")
    assert {i: row.value_num for i, row in stored.items()} == entered
    assert [row.token for row in participants(engine)][before:] == [token]


def test_a_reopened_link_resumes_in_the_same_browser_only(nav_server, browser):
    server, engine = nav_server
    context = browser.new_context()
    page = context.new_page()
    before = len(participants(engine))
    page.goto(f"{server.url}/?study={STUDY}")
    wait_title(page, "Consent")
    token = token_in(page)
    page.get_by_role("button", name=AGREE).click()
    wait_step_change(engine, token, "consent")
    wait_title(page, "About you")
    page.close()

    # The same anonymous link, opened again in this browser: the same participant, where they were.
    again = context.new_page()
    again.goto(f"{server.url}/?study={STUDY}")
    wait_title(again, "About you")
    assert token_in(again) == token
    assert_participant_side(again)
    assert [row.token for row in participants(engine)][before:] == [token]

    # Another browser (no stored token) is another participant; so is a pilot link here.
    other = browser.new_context().new_page()
    other.goto(f"{server.url}/?study={STUDY}")
    wait_title(other, "Consent")
    assert token_in(other) != token
    assert len(participants(engine)) == before + 2


def test_the_researcher_side_has_its_own_path(nav_server, browser):
    server, _engine = nav_server
    page = browser.new_context().new_page()
    page.goto(server.url + "/researcher")
    page.locator('input[type="password"]').wait_for(timeout=STEP_TIMEOUT_MS)
    assert "Researcher login" in page.inner_text("body")
    # The root URL with nothing in it is a participant page, not a login form.
    page.goto(server.url + "/")
    page.get_by_text("This study link is incomplete").first.wait_for(timeout=STEP_TIMEOUT_MS)
    assert_participant_side(page)


# --------------------------------------------------------------------------- two tabs


def test_a_second_tab_that_lost_the_race_is_told_and_shown_where_they_are(nav_server, browser):
    server, engine = nav_server
    context = browser.new_context()
    first = context.new_page()
    first.goto(f"{server.url}/?study={STUDY}")
    wait_title(first, "Consent")
    token = token_in(first)
    second = context.new_page()
    second.goto(f"{server.url}/?t={token}")
    wait_title(second, "Consent")

    first.get_by_role("button", name=AGREE).click()
    wait_step_change(engine, token, "consent")
    wait_title(first, "About you")
    assert ANSWERED_ELSEWHERE not in first.inner_text("body")
    # The second tab still shows consent; its click reaches the server, which says it was answered.
    second.get_by_role("button", name=AGREE).click()
    second.get_by_text(ANSWERED_ELSEWHERE).first.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_title(second, "About you")

    # The same on a questionnaire page: the first tab's answers are the ones stored.
    for tab, age in ((first, "25"), (second, "52")):
        tab.locator(item_css("demographics", "age") + " input").fill(age)
        tab.locator(item_css("demographics", "gender") + ' [role="radio"]').first.click()
        tab.locator(item_css("demographics", "first_language") + " textarea").fill(f"lang {age}")
    click_continue(first)
    wait_step_change(engine, token, "demographics")
    click_continue(second)
    second.get_by_text(ANSWERED_ELSEWHERE).first.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_title(second, "Instructions")
    stored = responses(engine, token, "demographics")
    assert stored["age"].value_num == 25 and stored["first_language"].value_text == "lang 25"


# --------------------------------------------------------------------------- completion


def test_completion_shows_the_code_and_redirects_in_the_same_tab(nav_server, browser, panel):
    server, engine = nav_server
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/?study={STUDY}&PROLIFIC_PID=pid+7%26x&STUDY_ID=st1&SESSION_ID=se1")
    wait_title(page, "Consent")
    token = token_in(page)
    page.get_by_role("button", name=AGREE).click()
    wait_step_change(engine, token, "consent")
    state = advance_to(page, engine, token, "debrief", random.Random(3))
    click_continue(page, "Finish")
    page.get_by_text("KULNAV7").first.wait_for(timeout=STEP_TIMEOUT_MS)
    page.get_by_text("You will be taken back automatically").first.wait_for(timeout=STEP_TIMEOUT_MS)
    now = page.get_by_role("link", name="Continue now")
    assert now.get_attribute("target") in (None, "", "_self")
    # No click: the countdown sends this very tab to the panel, with the placeholders filled.
    page.wait_for_url(panel + "/**", timeout=STEP_TIMEOUT_MS)
    page.get_by_text("Back at the panel").wait_for(timeout=STEP_TIMEOUT_MS)
    assert len(context.pages) == 1
    parts = urlsplit(page.url)
    assert parts.path == f"/done/{state.pseudonym}"
    assert parse_qs(parts.query) == {"pid": ["pid 7&x"], "cc": ["KULNAV7"], "s": ["se1"]}
    assert store.get_state(engine, token).status == "completed"


def test_back_reload_and_reopen_keep_one_participant_on_postgresql(tmp_path, pg_url, panel, browser):
    require_chromium()
    server = start_server(pg_url, tmp_path, nav_study(tmp_path, panel + "/done"))
    engine = store.make_engine(pg_url)
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/?study={STUDY}")
        wait_title(page, "Consent")
        token = token_in(page)
        page.go_back()
        page.wait_for_url(f"**/?study={STUDY}", timeout=STEP_TIMEOUT_MS)
        page.reload()
        wait_title(page, "Consent")
        assert token_in(page) == token
        assert_participant_side(page)
        page.get_by_role("button", name=AGREE).click()
        wait_step_change(engine, token, "consent")
        page.close()
        again = context.new_page()
        again.goto(f"{server.url}/?study={STUDY}")
        wait_title(again, "About you")
        assert token_in(again) == token
        assert [row.token for row in participants(engine)] == [token]
    finally:
        engine.dispose()
        server.stop()
