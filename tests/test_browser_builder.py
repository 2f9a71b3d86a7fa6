"""Headless Chromium: an editor builds a study from nothing in the study builder and runs it.

The done-when test of the builder (issue 15): log in as an editor, start a new study, upload two
demo clips through the builder's streaming route, make them a pair, pick instruments and items,
add an attention check, see the study valid, save it (a new registered version), preview every
step without one database row written, open the participant link and complete the study, then
find the study file the builder wrote in the export zip, and `kuleshov validate` accepts it.
Screenshots of the builder at a laptop and a phone viewport are kept in the test's tmp folder.
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from browser_util import (  # noqa: E402
    launch,
    pass_device_check,
    preview_every_step,
    require_chromium,
    row_counts,
    start_server,
    wait_idle,
    wait_until,
)
from study import store  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo"
WAIT_MS = 30_000
PW = "correct horse battery"
STUDY_ID = "built-in-browser"


def log_in(page, username: str, password: str = PW) -> None:
    page.locator('input[aria-label="Username"]').wait_for(timeout=WAIT_MS)
    page.locator('input[aria-label="Username"]').fill(username)
    page.locator('input[type="password"]').fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Log out").first.wait_for(timeout=WAIT_MS)
    wait_idle(page)


def widget(page, key: str):
    """The widget of the builder's form whose Streamlit key is `key` ("b1|consent.text@en")."""
    css = "st-key-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in key)
    return page.locator(f".{css}")


def yaml_now(page) -> str:
    return widget(page, f"b{GEN}|yaml").locator("textarea").input_value()


def study_in_yaml(page) -> dict:
    return yaml.safe_load(yaml_now(page)) or {}


def fill(page, key: str, text: str, check) -> None:
    """Type into a text field of the form, leave it (Streamlit takes the value then), and wait
    until the YAML beside the form says `check(data)`."""
    box = widget(page, key).locator("input, textarea").first
    box.fill(text)
    box.press("Tab")
    wait_until(lambda: check(study_in_yaml(page)), 30, f"the YAML after filling {key}", show=lambda: yaml_now(page))


def unpick(page, key: str, option: str) -> None:
    """Remove `option` from the multiselect `key` (its chip's delete button)."""
    chip = widget(page, key).locator('[data-baseweb="tag"]', has_text=option)
    chip.locator('[role="presentation"]').first.click()
    wait_until(lambda: chip.count() == 0, 30, f"{option} removed from {key}")
    wait_idle(page)


def expand(page, title: str) -> None:
    """Open the form's section whose expander label starts with `title` (if closed)."""
    details = page.locator('[data-testid="stExpander"] details', has=page.locator("summary", has_text=title)).first
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    wait_until(lambda: details.get_attribute("open") is not None, 10, f"section {title} open")


GEN = 1  # the form's generation (b1|...): a new study starts the first


def test_an_editor_builds_previews_saves_runs_and_exports_a_study(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    from test_browser_participant import answer_page

    t0 = time.monotonic()
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    store.add_researcher(engine, "ed", PW, "editor")
    server = start_server(sqlite_url, tmp_path, None, password=None)
    drafts = tmp_path / "data" / "builder" / "drafts"
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/researcher-builder")
            log_in(page, "ed")
            page.locator("h1", has_text="Study builder").wait_for(timeout=WAIT_MS)

            # ---------------------------------------------------------------- from nothing
            page.get_by_role("button", name="New study").click()
            widget(page, f"b{GEN}|yaml").wait_for(timeout=WAIT_MS)
            wait_idle(page)
            fill(page, f"b{GEN}|id", STUDY_ID, lambda d: d.get("id") == STUDY_ID)
            fill(page, f"b{GEN}|title", "Built in the browser", lambda d: d.get("title") == "Built in the browser")
            fill(page, f"b{GEN}|consent.text@en", "You will watch two short clips and answer questions.",
                 lambda d: (d.get("consent") or {}).get("text", "").startswith("You will watch"))
            expand(page, "Completion")
            fill(page, f"b{GEN}|completion.code", "BUILT123",
                 lambda d: (d.get("completion") or {}).get("code") == "BUILT123")

            # ---------------------------------------------------------------- two clips, one pair
            (draft,) = [p for p in drafts.iterdir() if (p / "study.yaml").is_file()]
            widget(page, "b-clip-upload").locator('input[type="file"]').set_input_files(
                [str(DEMO / "human_01.mp4"), str(DEMO / "ai_01.mp4")])
            try:
                page.get_by_role("button", name="Make pair").wait_for(timeout=WAIT_MS)
            except Exception:
                page.screenshot(path="/tmp/b2/fail.png", full_page=True)
                print(page.inner_text("body"))
                print(list(draft.iterdir()))
                raise
            assert (draft / "human_01.mp4").read_bytes() == (DEMO / "human_01.mp4").read_bytes()
            assert (draft / "ai_01.mp4").read_bytes() == (DEMO / "ai_01.mp4").read_bytes()
            page.get_by_role("button", name="Make pair").click()
            wait_until(lambda: "pair_01" in (draft / "manifest.csv").read_text(), 30, "the pair in manifest.csv")
            pairs = page.locator('[data-testid="stDataFrame"]').last
            pairs.wait_for(timeout=WAIT_MS)

            print("\n".join(page.evaluate(
                "() => Array.from(document.querySelectorAll('[class*=\"st-key-\"]')).map(e => Array.from(e.classList)"
                ".filter(c => c.startsWith('st-key-')).join(' '))")))
            page.screenshot(path=str(tmp_path / "builder-laptop.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
        engine.dispose()
    print(f"builder browser test: {time.monotonic() - t0:.1f} s")
