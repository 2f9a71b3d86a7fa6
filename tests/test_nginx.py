"""Two app processes on one PostgreSQL behind nginx, with deploy/nginx.conf as shipped (only
the ports changed): participants in Chromium go through nginx, stay on one process
(sticky), spread over both, and when the process of one of them is killed with SIGKILL,
that participant reloads and carries on from the same page on the other process, with
nothing lost.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser_util import free_port, launch, pass_device_check, require_chromium, start_server  # noqa: E402
from study import store  # noqa: E402
from test_browser_participant import STUDY_ID, answer_page, click_continue, play_clip, wait_title  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
NGINX = "/usr/sbin/nginx"
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
SITE = ROOT / "deploy" / "nginx.conf"


def render_site(app_ports: list[int], listen: int) -> str:
    """deploy/nginx.conf with the test's ports in place of 8501, 8502 and 8080."""
    text = SITE.read_text()
    for shipped, port in zip((8501, 8502), app_ports):
        assert f"server 127.0.0.1:{shipped} " in text
        text = text.replace(f"server 127.0.0.1:{shipped} ", f"server 127.0.0.1:{port} ")
    assert "listen 8080;" in text
    return text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")


def start_nginx(prefix: Path, app_ports: list[int]) -> tuple[subprocess.Popen, str, Path]:
    listen = free_port()
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "kuleshov.conf").write_text(render_site(app_ports, listen))
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp folders
    (prefix / "nginx.conf").write_text(f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format routed '$request_uri $status upstream=$upstream_addr route=$cookie_kuleshov_route';
    access_log {prefix}/logs/access.log routed;
    include {prefix}/kuleshov.conf;
}}
""")
    test = subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{listen}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url, prefix / "logs" / "access.log"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"nginx did not answer: {(prefix / 'logs' / 'error.log').read_text()}")


def upstream_of(access_log: Path, route: str) -> set[str]:
    """The app processes that answered the requests of the browser with this routing cookie
    (the last address where nginx had to try more than one). A websocket is logged only
    when it closes; the page, its assets and the clips are logged at once."""
    found = set()
    for line in access_log.read_text().splitlines():
        if line.endswith(f" route={route}"):
            found.update(re.findall(r"upstream=(.+?) route=", line))
    return {addr.split(",")[-1].strip() for addr in found}


class Participant:
    def __init__(self, browser, url: str, engine, seed: int):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.engine, self.rng = engine, random.Random(seed)
        self.page.goto(f"{url}/?study={STUDY_ID}")
        pass_device_check(self.page, engine)
        wait_title(self.page, "Consent")
        self.page.get_by_role("button", name="I have read this and agree").click()
        self.page.wait_for_url("**/?t=*", timeout=30_000)
        self.token = self.page.url.split("t=", 1)[1].split("&")[0]
        self._wait_past("consent")
        self.done: list[str] = ["consent"]

    @property
    def route(self) -> str:
        return next(c["value"] for c in self.context.cookies() if c["name"] == "kuleshov_route")

    def _wait_past(self, key: str) -> None:
        deadline = time.monotonic() + 30
        while store.get_state(self.engine, self.token).step.key == key:
            assert time.monotonic() < deadline, f"stuck on {key}: {self.page.inner_text('body')[:500]}"
            time.sleep(0.2)

    def step(self) -> str:
        """Answer the current page in the browser; returns its key once the database moved on."""
        state = store.get_state(self.engine, self.token)
        step = state.step
        wait_title(self.page, step.title)
        if step.kind == "instructions":
            click_continue(self.page, "Start")
        else:
            if step.has_clip:
                play_clip(self.page)
            answer_page(self.page, step, state.item_order, self.rng)
            click_continue(self.page)
        self._wait_past(step.key)
        self.done.append(step.key)
        return step.key


def test_two_processes_behind_nginx_survive_a_kill(tmp_path, pg_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    engine = store.make_engine(pg_url)
    store.upgrade(engine)  # once, before the processes start (they would race on PostgreSQL)
    store.register_study(engine, DEMO)
    store.set_study_status(engine, STUDY_ID, "open")
    env = {"KULESHOV_TRUSTED_PROXIES": "127.0.0.1", "KULESHOV_APP_PROCESSES": "2"}
    apps = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        apps.append(start_server(pg_url, tmp_path / name, extra_env=env))
    ports = [int(app.url.rsplit(":", 1)[1]) for app in apps]
    nginx, url, access_log = start_nginx(tmp_path / "nginx", ports)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            people = []
            # Enough browsers that both processes get some (the routing cookie is random).
            for seed in range(6):
                people.append(Participant(browser, url, engine, seed))
                served = {p.token: upstream_of(access_log, p.route) for p in people}
                if len({addr for addrs in served.values() for addr in addrs}) == 2 and len(people) >= 2:
                    break
            served = {p.token: upstream_of(access_log, p.route) for p in people}
            assert all(len(addrs) == 1 for addrs in served.values()), served  # sticky: one process each
            by_process: dict[str, list[Participant]] = {}
            for p in people:
                by_process.setdefault(next(iter(served[p.token])), []).append(p)
            assert len(by_process) == 2, served  # both processes in use

            victim_addr = f"127.0.0.1:{ports[0]}"
            survivor_addr = f"127.0.0.1:{ports[1]}"
            victim, survivor = by_process[victim_addr][0], by_process[survivor_addr][0]
            for p in (victim, survivor):
                p.step()
                p.step()
            before = store.get_state(engine, victim.token).step.key

            os.kill(apps[0].proc.pid, signal.SIGKILL)
            apps[0].proc.wait(timeout=10)

            # The survivor's process never noticed; the victim reloads and is on the same page.
            survivor.step()
            victim.page.reload()
            wait_title(victim.page, store.get_state(engine, victim.token).step.title)
            assert store.get_state(engine, victim.token).step.key == before
            victim.step()
            victim.step()
            assert upstream_of(access_log, victim.route) >= {survivor_addr}
            browser.close()
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
        for app in apps:
            app.stop()

    # Nothing lost: every page each participant finished is stored, whole.
    r, p = store.responses.c, store.participants.c
    import sqlalchemy as sa

    with engine.connect() as conn:
        for person in (victim, survivor):
            keys = set(conn.execute(sa.select(r.step_key).join(store.participants, p.id == r.participant_id)
                                    .where(p.token == person.token)).scalars())
            answered = {k for k in person.done if not k.startswith("instructions")}
            assert answered <= keys, (answered, keys)
    engine.dispose()
