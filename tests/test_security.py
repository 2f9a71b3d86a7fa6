"""Researcher pages are behind the password, also on the very first request to a fresh server,
and a participant link never reaches them."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent

from browser_util import DEVICE_CHECK_TITLE, PASSWORD, launch, require_chromium, start_server  # noqa: E402

DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
GUESSED = ["/dashboard", "/studies", "/export", "/export_page", "/app_pages/dashboard", "/participant",
           "/log_out", "/admin", "/pages/dashboard"]
LOGIN = "Researcher login"
# The researcher side's own paths (app.py); everything else is the participant side.
RESEARCHER_PATHS = ["/researcher", "/researcher-studies", "/researcher-export", "/researcher-accounts",
                    "/researcher-logout"]
INCOMPLETE = "This study link is incomplete"


# --------------------------------------------------------------------------- without a browser


def test_no_pages_folder_anywhere():
    """Streamlit serves a folder named pages/ by itself, without the app's guard."""
    found = [p for p in ROOT.rglob("pages") if p.is_dir() and ".venv" not in p.parts and "node_modules" not in p.parts]
    assert found == []


def test_password_check_constant_time_and_exact():
    from app_pages.auth import password_ok

    assert password_ok("secret-1", "secret-1")
    assert not password_ok("secret-", "secret-1")
    assert not password_ok("secret-1 ", "secret-1")
    assert not password_ok("", "")
    assert not password_ok("anything", None)


def test_limiter_locks_each_key_after_its_limit():
    from app_pages.auth import LOCKOUT_S, _Limiter

    lim = _Limiter()
    limits = {"session:a": 3, "global": 5}
    assert lim.fail(limits, 0.0) == [] and lim.fail(limits, 1.0) == []
    assert lim.fail(limits, 2.0) == ["session:a"]
    assert lim.locked_for(["session:a"], 3.0) == pytest.approx(LOCKOUT_S - 1)
    assert lim.locked_for(["session:b"], 3.0) <= 0
    assert lim.fail({"session:b": 3, "global": 5}, 4.0) == []
    assert lim.fail({"session:c": 3, "global": 5}, 5.0) == ["global"]  # 5 failures in all
    assert lim.locked_for(["session:z", "global"], 6.0) > 0
    assert lim.locked_for(["global"], 5.0 + LOCKOUT_S + 1) <= 0


def test_pilot_key_needs_the_password():
    from study.access import pilot_key

    key = pilot_key("study-a", "pw1")
    assert len(key) == 16 and key != pilot_key("study-b", "pw1") and key != pilot_key("study-a", "pw2")
    assert pilot_key("study-a", "") == ""


# --------------------------------------------------------------------------- a fresh server


@pytest.mark.browser
@pytest.mark.slow
def test_researcher_pages_need_password_on_fresh_server(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    server = start_server(sqlite_url, tmp_path, DEMO)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page()
            # The very first request to the fresh server is a guessed researcher page.
            for path in GUESSED + RESEARCHER_PATHS:
                page.goto(server.url + path)
                if path in RESEARCHER_PATHS:
                    page.locator('input[type="password"]').wait_for(timeout=30_000)
                    page.wait_for_timeout(300)
                    assert LOGIN in page.inner_text("body"), path
                    assert page.locator('input[type="password"]').count() == 1, path
                elif path.count("/") == 1:
                    # Not a researcher path: the participant side's default page.
                    page.get_by_text(INCOMPLETE).first.wait_for(timeout=30_000)
                    assert page.locator('input[type="password"]').count() == 0, path
                else:
                    # Nested paths load no app at all (the frontend's assets are relative): blank.
                    page.wait_for_timeout(3000)
                body = page.inner_text("body")
                assert "Log out" not in body and "Completion codes" not in body, (path, body[:500])
                assert "Dashboard" not in body and "Export" not in body, (path, body[:500])

            # A participant link, on any path, shows the study and never the researcher side.
            for path in ["/", "/dashboard", "/studies", "/researcher"]:
                page.goto(f"{server.url}{path}?study=kuleshov-demo")
                page.locator("h3", has_text=DEVICE_CHECK_TITLE).first.wait_for(timeout=30_000)
                assert page.locator('input[type="password"]').count() == 0
                assert LOGIN not in page.inner_text("body")
            token_page = browser.new_page()
            token_page.goto(f"{server.url}/?study=kuleshov-demo")
            token_page.wait_for_url("**/?t=*", timeout=30_000)
            token = token_page.url.split("t=", 1)[1]
            page.goto(f"{server.url}/dashboard?t={token}")
            page.locator("h3", has_text=DEVICE_CHECK_TITLE).first.wait_for(timeout=30_000)
            assert LOGIN not in page.inner_text("body")

            # Wrong passwords are refused, then the session is locked out.
            page.goto(server.url + "/researcher")
            page.get_by_text(LOGIN).first.wait_for(timeout=30_000)
            for attempt in range(5):
                page.locator('input[type="password"]').fill(f"wrong-{attempt}")
                page.get_by_role("button", name="Log in").click()
                page.get_by_text("Wrong password.").first.wait_for(timeout=30_000)
                assert page.locator('input[type="password"]').count() == 1
            page.locator('input[type="password"]').fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Too many failed logins").first.wait_for(timeout=30_000)
            # Under load the message can show while the re-run form is still being drawn.
            page.locator('input[type="password"]').wait_for(timeout=30_000)
            assert page.locator('input[type="password"]').count() == 1

            # A new session (another browser context) with the right password gets in.
            other = browser.new_context().new_page()
            other.goto(server.url + "/researcher")
            other.get_by_text(LOGIN).first.wait_for(timeout=30_000)
            other.locator('input[type="password"]').fill(PASSWORD)
            other.get_by_role("button", name="Log in").click()
            other.get_by_text("Log out").first.wait_for(timeout=30_000)
            # The login form of the run before can still be on screen for a moment under load.
            other.locator('input[type="password"]').wait_for(state="detached", timeout=30_000)
            assert other.locator('input[type="password"]').count() == 0
            browser.close()

        from study import store

        engine = store.make_engine(sqlite_url)
        with engine.connect() as conn:
            actions = [row.action for row in conn.execute(
                sa.select(store.audit_log.c.action).where(store.audit_log.c.actor == "researcher-login"))]
        engine.dispose()
        assert actions.count("login_failed") == 5
        assert "login_refused_locked" in actions and actions.count("login") == 1
    finally:
        server.stop()
