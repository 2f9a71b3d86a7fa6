"""The same app from any folder: `kuleshov run` applies its own Streamlit configuration.

Streamlit reads .streamlit/config.toml from the folder it is started in (and the home folder),
and caches the first configuration it parses. Started elsewhere, the participant page showed
the Deploy button and the developer menu, lost the theme and called Streamlit's telemetry host.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from browser_util import ROOT, launch, pass_device_check, require_chromium, start_server

DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
KULESHOV = Path(sys.executable).parent / "kuleshov"  # the venv's console script, as a user runs it
PRIMARY = "rgb(176, 58, 46)"  # theme.primaryColor #b03a2e in the app's .streamlit/config.toml

# What a stray config file in the folder (or home) of whoever starts the server might say.
HOSTILE_CONFIG = """
[client]
toolbarMode = "developer"
showErrorDetails = "full"
[browser]
gatherUsageStats = true
[theme]
primaryColor = "#00aa00"
[runner]
postScriptGC = true
"""


def hostile_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    (folder / ".streamlit").mkdir(parents=True)
    (folder / ".streamlit" / "config.toml").write_text(HOSTILE_CONFIG)
    return folder


def test_options_win_over_a_configuration_parsed_earlier(tmp_path):
    """Even when something parsed the working directory's config.toml first (Streamlit then
    caches it and ignores the file beside app.py), the app's own options are what it runs with."""
    cwd = hostile_folder(tmp_path, "elsewhere")
    script = (
        "from streamlit import config\n"
        "assert config.get_option('client.toolbarMode') == 'developer'  # the stray file was read\n"
        "import server\n"
        "from study import store\n"
        f"server.make_app(store.make_engine('sqlite:///{tmp_path / 'x.db'}'), {{}}, streamlit=True)\n"
        "names = ['client.toolbarMode', 'browser.gatherUsageStats', 'theme.primaryColor',\n"
        "         'runner.postScriptGC', 'server.fileWatcherType', 'client.showErrorDetails']\n"
        "print({n: config.get_option(n) for n in names})\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str({"client.toolbarMode": "minimal", "browser.gatherUsageStats": False,
                                      "theme.primaryColor": "#b03a2e", "runner.postScriptGC": False,
                                      "server.fileWatcherType": "none", "client.showErrorDetails": "none"})


@pytest.mark.browser
@pytest.mark.slow
def test_kuleshov_run_from_another_folder(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    assert KULESHOV.is_file(), f"{KULESHOV} missing: run `make setup`"
    elsewhere = hostile_folder(tmp_path, "elsewhere")
    server = start_server(sqlite_url, tmp_path, DEMO, cwd=elsewhere, command=[str(KULESHOV)],
                          extra_env={"HOME": str(elsewhere)})
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page()
            hosts = []
            # A blob: URL (components v2 load their inline script that way) names its origin inside.
            page.on("request", lambda request: hosts.append(
                urlparse(request.url.removeprefix("blob:")).hostname or request.url[:60]))
            page.goto(server.url + "/?study=kuleshov-demo")
            pass_device_check(page, server.db_url)
            agree = page.locator('[data-testid="stBaseButton-primary"]').first
            agree.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # the toolbar and any telemetry call come after the first render
            assert page.locator('[data-testid="stAppDeployButton"]').count() == 0
            assert page.locator('[data-testid="stMainMenu"]').count() == 0
            assert page.locator('[data-testid="stToolbar"]').count() == 0
            assert "take part" in agree.inner_text()
            page.mouse.move(0, 0)  # the device check's Continue was clicked where this button now is (hover colour)
            page.wait_for_timeout(300)
            assert agree.evaluate("e => getComputedStyle(e).backgroundColor") == PRIMARY
            assert set(hosts) == {"127.0.0.1"}, f"the page called other hosts: {set(hosts) - {'127.0.0.1'}}"
            browser.close()
    finally:
        server.stop()
