"""Headless Chromium through the real app in German: the whole demo study opened with ?lang=de,
the language picked from the browser's Accept-Language, and the switcher on the consent page.

Every page must show the German wording (catalogue and study file) and none of the English
catalogue's own sentences; the stored participant and the exported participants.csv say `de`.
"""

from __future__ import annotations

import csv
import random
import re
import time
from pathlib import Path

import pytest

from browser_util import launch, pass_device_check, require_chromium, start_server, wait_idle
from study import store, texts
from study.protocol import load_study
from test_browser_participant import STEP_TIMEOUT_MS, answer_page, play_clip

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
STUDY_ID = "kuleshov-demo"


def english_only() -> set[str]:
    """English catalogue sentences German does not share (e.g. "Continue", not "(optional)")."""
    german = {v.strip() for v in texts.catalogue("de").values()}
    return {v.strip() for k, v in texts.catalogue("en").items()
            if k != "language.name" and "{" not in v and v.strip() not in german}


def english_on(body: str) -> list[str]:
    """English catalogue text on a page: a whole line, or a longer sentence anywhere."""
    lines = {line.strip() for line in body.splitlines()}
    return sorted(s for s in english_only() if s in lines or (len(s) >= 15 and s in body))


def wait_heading(page, text: str) -> None:
    page.locator("h3", has_text=text).first.wait_for(timeout=STEP_TIMEOUT_MS)


def wait_step_change(engine, token: str, key: str, page) -> None:
    deadline = time.monotonic() + 30
    while store.get_state(engine, token).step.key == key:
        assert time.monotonic() < deadline, f"stuck on {key}: {page.inner_text('body')[:800]}"
        time.sleep(0.2)


@pytest.fixture
def german_server(tmp_path, sqlite_url):
    require_chromium()
    server = start_server(sqlite_url, tmp_path, DEMO)
    engine = store.make_engine(sqlite_url)
    try:
        yield server, engine
    finally:
        engine.dispose()
        server.stop()


def test_whole_demo_study_in_german(german_server, tmp_path):
    from playwright.sync_api import sync_playwright

    from analysis.export import export_dataset

    server, engine = german_server
    study = load_study(DEMO)
    rng = random.Random(11)
    leaks: dict[str, list[str]] = {}
    with sync_playwright() as pw:
        browser = launch(pw)
        # An English browser: the link's ?lang=de wins over Accept-Language.
        page = browser.new_page(locale="en-GB")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/?study={STUDY_ID}&lang=de&PROLIFIC_PID=pid-de-1")
        pass_device_check(page, server.db_url)
        wait_heading(page, "Einwilligung")
        page.get_by_text("Dies ist eine Demonstration der Studienplattform Kuleshov.").wait_for(timeout=STEP_TIMEOUT_MS)
        body = page.inner_text("body")
        assert "Sprache" in body and "Deutsch" in body and "English" in body  # the switcher
        page.wait_for_function("document.documentElement.lang === 'de'", timeout=STEP_TIMEOUT_MS)
        leaks["consent"] = english_on(body)
        page.get_by_role("button", name=texts.local(study.consent.agree_label, "de")).click()
        page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
        token = page.url.split("t=", 1)[1].split("&")[0]
        wait_step_change(engine, token, "consent", page)
        seen: set[str] = set()
        for _ in range(40):
            state = store.get_state(engine, token)
            step = state.step
            if step.kind in ("debrief", "complete"):
                break
            wait_heading(page, texts.local(step.title, "de"))
            if step.kind == "instructions":
                page.get_by_text("Sie sehen zuerst einen Übungsclip").wait_for(timeout=STEP_TIMEOUT_MS)
                leaks[step.key] = english_on(page.inner_text("body"))
                page.get_by_role("button", name="Starten", exact=True).click()
            else:
                if step.has_clip:
                    assert "Clip starten" in page.locator(".kp-start:visible").inner_text()
                    play_clip(page)
                # Each item's question in German, as the questionnaire component drew it.
                for item in step.items:
                    question = page.locator(f'.kq-root[data-page="{step.key}"] [data-item="{item.id}"]')
                    question.first.wait_for(timeout=STEP_TIMEOUT_MS)
                    assert texts.local(item.text, "de").split("**")[0].strip() in question.first.inner_text(), item.id
                answer_page(page, step, state.item_order, rng)
                leaks[step.key] = english_on(page.inner_text("body"))
                page.get_by_role("button", name="Weiter", exact=True).first.click()
            seen.add(step.kind)
            wait_step_change(engine, token, step.key, page)
        assert {"demographics", "questions", "instructions", "practice", "trial", "attention"} <= seen, seen
        wait_heading(page, "Über die Clips, die Sie gesehen haben")
        body = page.inner_text("body")
        assert "Vielen Dank: Alle Ihre Antworten wurden gespeichert." in body
        assert "von KI erzeugt" in body
        assert "Morgendämmerung über dem Wasser (Demonstrationsclip)" in body  # the manifest's title_de
        assert "(demonstration clip)" not in body
        leaks["debrief"] = english_on(body)
        page.get_by_role("button", name="Abschließen", exact=True).click()
        page.get_by_text("Vielen Dank, dass Sie die Demonstration ausprobiert haben.").wait_for(timeout=STEP_TIMEOUT_MS)
        # the code comes after the message in the same run: wait for it, not only for the message
        page.get_by_text("KULDEMO1").first.wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        body = page.inner_text("body")
        assert "Ihr Abschlusscode:" in body and "KULDEMO1" in body
        leaks["complete"] = english_on(body)
        browser.close()
    assert not errors, errors
    assert {k: v for k, v in leaks.items() if v} == {}, "English catalogue text on German pages"
    state = store.get_state(engine, token)
    assert (state.status, state.language) == ("completed", "de")
    # The attention check was shown in German and stored as the study's first-language value.
    with engine.connect() as conn:
        stored = conn.execute(store.responses.select().where(store.responses.c.item_id == "attn_colour")).mappings().one()
    assert stored["value_text"] == "Blue"

    folder = export_dataset(engine, STUDY_ID, tmp_path / "dataset")
    with (folder / "participants.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["participant_id"], r["language"]) for r in rows] == [(state.pseudonym, "de")]
    with (folder / "codebook.csv").open(encoding="utf-8") as fh:
        codebook = list(csv.DictReader(fh))
    german = {r["name"]: r for r in codebook if r["kind"] == "translation" and r["allowed_values"] == "de"}
    assert german["sam.de"]["description"].startswith("validated: false")
    assert any(r["name"] == "language" and r["file"] == "participants" for r in codebook)


def test_browser_language_and_the_consent_page_switcher(german_server):
    from playwright.sync_api import sync_playwright

    server, engine = german_server
    with sync_playwright() as pw:
        browser = launch(pw)
        # A Swiss German browser (Accept-Language de-CH,...) with no ?lang=: German, by its primary tag.
        context = browser.new_context(locale="de-CH")
        page = context.new_page()
        page.goto(f"{server.url}/?study={STUDY_ID}&PROLIFIC_PID=pid-de-2")
        pass_device_check(page, server.db_url)
        wait_heading(page, "Einwilligung")
        page.wait_for_url("**/?t=*", timeout=STEP_TIMEOUT_MS)
        token = page.url.split("t=", 1)[1].split("&")[0]
        assert store.get_state(engine, token).language == "de"
        # The switcher: English redraws the page in English and is stored with the participant.
        page.get_by_text("English", exact=True).click()
        wait_heading(page, "Consent")
        page.get_by_text("This is a demonstration of the Kuleshov study platform.").wait_for(timeout=STEP_TIMEOUT_MS)
        page.wait_for_function("document.documentElement.lang === 'en'", timeout=STEP_TIMEOUT_MS)
        assert store.get_state(engine, token).language == "en"
        page.reload()
        wait_heading(page, "Consent")  # the stored language, not the browser's, after a reload
        context.close()
        # A French browser: the study offers no French, so its first language (English).
        context = browser.new_context(locale="fr-FR")
        page = context.new_page()
        page.goto(f"{server.url}/?study={STUDY_ID}&PROLIFIC_PID=pid-fr-1")
        pass_device_check(page, server.db_url)
        wait_heading(page, "Consent")
        assert re.search(r"[?&]t=", page.url)
        browser.close()
