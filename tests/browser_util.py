"""Helpers for the browser tests: the real server in a subprocess, and Debian's Chromium.

The server is started through the real CLI (`python cli.py run`) on a free port with its own
database, so these tests see exactly what a participant would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from study.config import setting

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "test-researcher-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    """Skip (with the reason) when Chromium is missing, unless KULESHOV_REQUIRE_BROWSER=1 (CI)."""
    if Path(CHROMIUM).exists():
        return
    msg = f"{CHROMIUM} not found (install Debian's chromium: `make browser`)"
    if setting("KULESHOV_REQUIRE_BROWSER") == "1":
        pytest.fail(msg + " and KULESHOV_REQUIRE_BROWSER=1")
    pytest.skip(msg)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    db_url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(db_url: str, tmp_path: Path, study_file: Path | None = None,
                 password: str | None = PASSWORD, extra_env: dict | None = None,
                 cwd: Path = ROOT, command: list[str] | None = None) -> Server:
    """`command` replaces `python cli.py` (e.g. the venv's `kuleshov` script); `cwd` is where it starts."""
    port = free_port()
    env = {**os.environ, "KULESHOV_DATABASE_URL": db_url, "KULESHOV_DATA_DIR": str(tmp_path / "data"),
           "KULESHOV_LOG_LEVEL": "warning", **(extra_env or {})}
    env.pop("KULESHOV_RESEARCHER_PASSWORD", None)
    if password:
        env["KULESHOV_RESEARCHER_PASSWORD"] = password
    cmd = [*(command or [sys.executable, str(ROOT / "cli.py")]), "run", "--host", "127.0.0.1", "--port", str(port)]
    if study_file:
        cmd += ["--study", str(study_file)]
    log = tmp_path / f"server-{port}.log"
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, db_url, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(server.url + "/api/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server did not answer within 90 s:\n{log.read_text()}")


def wait_until(condition, timeout_s: float, what: str, show=None, every_s: float = 0.2):
    """Poll `condition` until it returns something truthy (returned); fail after `timeout_s` with
    `what` and, if given, `show()` (what there was instead). For the browser tests' waits on data:
    a fixed sleep is too short on a loaded machine and too long on an idle one."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            seen = f"; instead: {show()!r}" if show else ""
            raise AssertionError(f"{what}: not seen within {timeout_s:g} s{seen}")
        time.sleep(every_s)


# A JS function: every element matching a CSS selector, also inside components' shadow roots
# (document.querySelectorAll does not look into them).
DEEP_ALL = """((selector) => {
  const found = [];
  const walk = (node) => {
    node.querySelectorAll(selector).forEach((e) => found.push(e));
    node.querySelectorAll('*').forEach((el) => { if (el.shadowRoot) walk(el.shadowRoot); });
  };
  walk(document);
  return found;
})"""

# Every player on the page: what its <video> is doing.
_PLAYERS = f"""() => {{
  return {DEEP_ALL}('.kp-root').map((r) => {{
    const v = r.querySelector('.kp-video'), b = r.querySelector('.kp-start');
    return {{visible: r.checkVisibility(), src: v.getAttribute('src'), paused: v.paused, t: v.currentTime,
            ready: v.readyState, network: v.networkState, error: v.error && v.error.code,
            overlay: !r.querySelector('.kp-overlay').hidden, button: b.hidden ? null : b.textContent,
            disabled: b.disabled, hint: r.querySelector('.kp-hint').textContent,
            player: r.__kuleshovPlayer ? r.__kuleshovPlayer.recent : null,
            now_ms: Math.round(performance.now())}};
  }});
}}"""


def page_report(page, server: Server | None = None) -> str:
    """What a failing browser test saw: the players, the page's text and the server's last log
    lines (for the assertion message: a flaky wait is diagnosed from CI's output alone)."""
    parts = []
    try:
        parts.append(f"players: {page.evaluate(_PLAYERS)}")
        parts.append(f"script: {page.evaluate('() => document.querySelector(`[data-testid=stApp]`)?.getAttribute(`data-test-script-state`)')}")
        parts.append(f"page: {page.inner_text('body')[:1500]!r}")
    except Exception as exc:  # the page itself may be gone
        parts.append(f"page unreadable: {exc}")
    if server is not None:
        parts.append("server log: " + "\n".join(server.log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)


@contextmanager
def component_page(origin: str, page_html: str, script_path: str, scripts: list[Path]):
    """A page with a fake clock at `origin` serving `page_html` and, at `script_path`, the
    component's scripts joined as app_pages.browser_component joins them: one component in
    Chromium against a scripted Streamlit, no app server."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        page.clock.install()
        page.route(f"{origin}/", lambda route: route.fulfill(body=page_html, content_type="text/html"))
        page.route(f"{origin}{script_path}", lambda route: route.fulfill(
            body="\n".join(p.read_text() for p in scripts), content_type="text/javascript"))
        yield page
        browser.close()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def participant_token(page, timeout_ms: int = 30_000) -> str:
    """The participant token the page put into the URL at enrolment."""
    page.wait_for_url("**/?t=*", timeout=timeout_ms)
    return page.url.split("t=", 1)[1].split("&")[0]


DEVICE_CHECK_TITLE = "a quick check of your browser"


def device_check_answer(db, token: str) -> str:
    """The digits the sound test is playing now, as only the server knows them (the participant's
    seed in participants.device_info): what a participant who hears the beeps would type.
    `db`: a database URL or an engine."""
    from study import device_check, store

    engine = store.make_engine(db) if isinstance(db, str) else db
    try:
        state = store.get_state(engine, token)
    finally:
        if isinstance(db, str):
            engine.dispose()
    attempt = len((state.device_info or {}).get("audio_attempts") or [])
    return device_check.digits(device_check.seed_of(state.device_info, token), attempt)


def pass_device_check(page, db_url, timeout_ms: int = 30_000) -> str:
    """Get past the device check before consent in the real component (codecs, window and connection
    are measured by Chromium; the sound test is answered with the digits it plays); returns the token."""
    token = participant_token(page, timeout_ms)
    page.locator('.kd-root[data-state="ready"]').wait_for(timeout=timeout_ms)
    page.locator(".kd-answer").fill(device_check_answer(db_url, token))
    page.locator(".kd-continue").click()
    return token


def pass_device_check_by_keyboard(page, db_url, timeout_ms: int = 30_000) -> str:
    """pass_device_check without a pointer event: the answer typed into its field, Enter on Continue."""
    token = participant_token(page, timeout_ms)
    page.locator('.kd-root[data-state="ready"]').wait_for(timeout=timeout_ms)
    page.locator(".kd-answer").fill(device_check_answer(db_url, token))
    page.locator(".kd-continue").press("Enter")
    return token


# --------------------------------------------------------------------------- the researcher's preview

PREVIEW_BANNER = "Preview — nothing is recorded"


def row_counts(db) -> dict[str, int]:
    """Rows in every table of the database (`db`: a URL or an engine): what "nothing is recorded" is checked against."""
    import sqlalchemy as sa

    from study import store

    engine = store.make_engine(db) if isinstance(db, str) else db
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {name: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one() for name in names}
    finally:
        if isinstance(db, str):
            engine.dispose()


def wait_idle(page, timeout_ms: int = 30_000) -> None:
    """Until the app's script run has finished (Streamlit marks the app element while it runs)."""
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') !== 'running'; }", timeout=timeout_ms)


def log_in_if_asked(page, password: str = PASSWORD, username: str | None = None, timeout_ms: int = 30_000) -> None:
    """Fill the researcher login form if the page shows it (a new tab is a new session: log in again)."""
    field = page.locator('input[type="password"]')
    banner = page.get_by_text(PREVIEW_BANNER).first
    field.or_(banner).first.wait_for(timeout=timeout_ms)
    if field.count() and field.first.is_visible():
        if username is not None:
            page.get_by_label("Username").fill(username)
        field.first.fill(password)
        page.get_by_role("button", name="Log in").click()
    banner.wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def preview_pick(page, label: str, option: str, timeout_ms: int = 30_000) -> None:
    """Choose `option` (its text as shown) in the preview's selectbox `label` ("Step", "Label
    condition", "List", "Version", "Language"); the latter four sit in the options popover."""
    box = page.get_by_role("combobox", name=label)
    if not box.is_visible():
        page.locator(".st-key-preview-options button").first.click()
        box.wait_for(timeout=timeout_ms)
    choice = page.get_by_role("option", name=option, exact=True)
    for attempt in range(3):  # a rerun landing just then redraws the box and closes its list
        wait_idle(page, timeout_ms)
        box.click()
        try:
            choice.click(timeout=5_000)
            break
        except Exception:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    wait_idle(page, timeout_ms)


def preview_close_options(page, timeout_ms: int = 30_000) -> None:
    """Close the preview's options popover if it is open: on a laptop its panel covers the
    player's Start button, and a click there may land on the panel (CI saw a Start click
    that played nothing, the popover closed and the overlay untouched)."""
    box = page.get_by_role("combobox", name="Label condition")
    if box.is_visible():
        page.locator(".st-key-preview-options button").first.click()
        box.wait_for(state="hidden", timeout=timeout_ms)


def preview_step_options(page) -> list[str]:
    """The step picker's entries, "Title (key)", in session order."""
    options = page.get_by_role("option")
    for attempt in range(3):  # as in preview_pick: a rerun landing just then closes the list
        wait_idle(page)
        page.get_by_role("combobox", name="Step").click()
        try:
            options.first.wait_for(timeout=5_000)
            break
        except Exception:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    texts = [text.strip() for text in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return texts


def preview_every_step(page, base_url: str, study_id: str, *, password: str = PASSWORD, username: str | None = None,
                       timeout_ms: int = 30_000) -> list[str]:
    """Show every step of the study's preview by its step picker; returns the step keys seen, in order.

    If `page` already shows this study's preview it is walked in place (no reload, so no new
    login); otherwise the preview link is opened and the login form filled if it appears. Each
    step is checked to show the preview banner and its own title. Writes nothing, which the
    caller can check with `row_counts` before and after.
    """
    from urllib.parse import parse_qs, quote, urlsplit

    query = parse_qs(urlsplit(page.url).query) if page.url.startswith(base_url) else {}
    if query.get("study") != [study_id] or query.get("preview") != ["1"]:
        page.goto(f"{base_url}/?study={quote(study_id)}&preview=1")
    log_in_if_asked(page, password, username, timeout_ms)
    seen = []
    for option in preview_step_options(page):
        title, key = option.rsplit(" (", 1)
        key = key.rstrip(")")
        preview_pick(page, "Step", option, timeout_ms)
        page.locator("h3", has_text=title).first.wait_for(timeout=timeout_ms)
        assert page.get_by_text(PREVIEW_BANNER).first.is_visible(), key
        seen.append(key)
    return seen
