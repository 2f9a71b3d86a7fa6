"""Headless Chromium with researcher accounts: locked and deleted accounts cannot log in, an
editor sees and closes the study (the audit log names them), a viewer sees the study and its
Prolific links but no button that changes it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from browser_util import launch, require_chromium, start_server  # noqa: E402
from study import store  # noqa: E402

pytestmark = [pytest.mark.browser]
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
WAIT_MS = 30_000
PW = "correct horse battery"


def log_in(page, username: str, password: str) -> None:
    page.locator('input[aria-label="Username"]').wait_for(timeout=WAIT_MS)
    page.locator('input[aria-label="Username"]').fill(username)
    page.locator('input[type="password"]').fill(password)
    page.get_by_role("button", name="Log in").click()


def refused(page, username: str, password: str) -> None:
    log_in(page, username, password)
    page.get_by_text("Wrong username or password").first.wait_for(timeout=WAIT_MS)
    body = page.inner_text("body")
    assert "Log out" not in body and "Dashboard" not in body, body[:400]


def open_studies(page) -> None:
    page.get_by_text("Log out").first.wait_for(timeout=WAIT_MS)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Studies").first.click()
    page.locator("h1", has_text="Studies").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("Recruitment: links and completion for Prolific").first.wait_for(timeout=WAIT_MS)


def test_accounts_in_the_browser(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    store.add_researcher(engine, "ana", PW, "owner")
    for name, role in (("ed", "editor"), ("vic", "viewer"), ("lex", "editor"), ("dee", "editor")):
        store.add_researcher(engine, name, PW, role)
        store.grant(engine, name, study_id)
    store.set_locked(engine, "lex", True)
    # a second study nobody but owners may see (registered last: the export page would preselect it)
    other = tmp_path / "other"
    shutil.copytree(DEMO.parent, other)
    (other / "study.yaml").write_text((other / "study.yaml").read_text().replace("id: kuleshov-demo", "id: other-study")
                                      .replace('title: "Kuleshov demo', 'title: "Other study'))
    assert store.register_study(engine, other / "study.yaml") == "other-study"
    store.delete_researcher(engine, "dee")
    server = start_server(sqlite_url, tmp_path, DEMO)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page()
            page.goto(server.url + "/researcher")
            refused(page, "lex", PW)    # locked: the right password does not help
            refused(page, "dee", PW)    # deleted
            refused(page, "ed", "not the password")
            # the shared password no longer logs in once accounts exist
            refused(page, "researcher", "test-researcher-password-1")

            log_in(page, "ed", PW)
            open_studies(page)
            assert "Other study" not in page.inner_text("body")
            page.get_by_role("button", name="Close").first.click()
            deadline = time.monotonic() + 30
            while store.study_status(engine, study_id) != "closed" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert store.study_status(engine, study_id) == "closed"
            assert page.get_by_role("button", name="Register").count() == 1

            viewer = browser.new_page()
            viewer.goto(server.url + "/researcher")
            log_in(viewer, "vic", PW)
            open_studies(viewer)
            viewer.get_by_text("Recruitment: links and completion for Prolific").first.click()
            viewer.get_by_text("PROLIFIC_PID={{%PROLIFIC_PID%}}").first.wait_for(timeout=WAIT_MS)
            body = viewer.inner_text("body")
            assert f"{server.url}/?study={study_id}&PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}" \
                   f"&SESSION_ID={{{{%SESSION_ID%}}}}" in body
            assert "Logged in as vic (viewer)" in body
            for label in ("Open", "Pause", "Close", "Register"):
                assert viewer.get_by_role("button", name=label, exact=True).count() == 0, label
            assert "Pilot link" not in body and "Register a study file" not in body
            assert "other-study" not in body and "Other study" not in body
            # the export page: only the granted study, and no deletion of participants' data
            viewer.locator('[data-testid="stSidebarNav"] a', has_text="Export").first.click()
            viewer.get_by_role("button", name="Prepare the dataset").wait_for(timeout=WAIT_MS)
            body = viewer.inner_text("body")
            picker = viewer.locator('[data-testid="stSelectbox"]').first
            shown = picker.inner_text() + " " + picker.locator("input").first.input_value()
            assert "kuleshov-demo" in shown and "other-study" not in shown + body
            assert "Delete a participant" not in body
            assert viewer.locator('[data-testid="stSidebarNav"] a', has_text="Accounts").count() == 0

            # the owner locks the editor on the Accounts page; the editor's open session ends at its next click
            owner = browser.new_page()
            owner.goto(server.url + "/researcher")
            log_in(owner, "ana", PW)
            owner.get_by_text("Log out").first.wait_for(timeout=WAIT_MS)
            owner.locator('[data-testid="stSidebarNav"] a', has_text="Accounts").first.click()
            owner.locator("h1", has_text="Accounts").first.wait_for(timeout=WAIT_MS)
            owner.get_by_role("button", name="Lock", exact=True).click()  # "ed": first in the list of others
            owner.get_by_text("ed locked.").first.wait_for(timeout=WAIT_MS)
            assert [r["locked"] for r in store.list_researchers(engine) if r["username"] == "ed"] == [True]
            page.get_by_role("button", name="Open").first.click()
            page.get_by_text("You were logged out: the account 'ed' is locked").first.wait_for(timeout=WAIT_MS)
            assert store.study_status(engine, study_id) == "closed"
            browser.close()
    finally:
        server.stop()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.audit_log.c.actor, store.audit_log.c.action)).all()
    engine.dispose()
    assert ("ed", "study_status") in rows and ("ed", "login") in rows and ("vic", "login") in rows
    assert ("lex", "login_refused_locked") in rows and ("ana", "researcher_locked") in rows
    assert not any(actor == "vic" and action == "study_status" for actor, action in rows)
    print(f"accounts browser test: {time.monotonic() - t0:.1f} s")
