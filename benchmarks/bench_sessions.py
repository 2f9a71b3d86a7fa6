"""Real Streamlit sessions over the websocket: N concurrent participants, and a minimal app.

What it drives: each bot opens `/_stcore/stream` as a browser does and sends the same
`BackMsg` protobufs a browser sends (captured from Chromium running the demo study): a
`rerun_script` with the query string, the page script hash, the hashes of the messages it
has cached, and the widget states of the page: a button's trigger, the player component's
state value (`progress`, once the clip "ended") and the questionnaire component's trigger
value (the whole page of answers, in the component's own JSON shape). While a clip "plays",
the bot POSTs playback events to `/api/events` in the player's batches. It reads `ForwardMsg`
deltas to find the page's widgets (button ids, component ids and the component's data: items,
token, position) and answers the items from their declared type and range.

What is measured: "next page" latency, from sending the `rerun_script` that submits a page
to receiving `script_finished` for it, i.e. the server's whole work for one participant
action plus the websocket round trip. Errors: exceptions shown on a page, connection drops,
runs that never finish (30 s). CPU seconds and resident memory of the server process (from
/proc) over the measured window, per session.

The baseline is `benchmarks/minimal_app.py`, started with the same Streamlit configuration
(`.streamlit/config.toml`, run from the repository folder) and driven by the same bots in the
same run: a heading, a paragraph and a button per page. The ratio Kuleshov / minimal is the
project's own cost over the framework's.

Think time between actions is uniform in [--think-min, --think-max] (default 2-5 s, a person
reading and answering); the clip itself is watched for --watch seconds (default 3) before the
player reports "ended". Bots start spread over --ramp seconds and repeat whole sessions
(new participants) until --duration seconds have passed; latencies are kept from the end of
the ramp.

    python benchmarks/bench_sessions.py --participants 25,50,100,300 --duration 90
    python benchmarks/bench_sessions.py --participants 100 --db postgresql+psycopg://postgres@127.0.0.1:5432/bench

The bots run in this process (asyncio) on the same machine: with two cores they take CPU from
the server, equally for Kuleshov and the baseline. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo"
MINIMAL = ROOT / "benchmarks" / "minimal_app.py"
RUN_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")


def bench_study(workdir: Path) -> Path:
    """The demo study under its own id, in a folder of its own (clips and manifest copied), without
    the device check before consent."""
    import shutil

    folder = workdir / "study"
    if not folder.exists():
        shutil.copytree(DEMO, folder)
        text = (folder / "study.yaml").read_text(encoding="utf-8")
        text = text.replace("id: kuleshov-demo", "id: bench-sessions", 1)
        # The device check's sound test needs ears (or the database's seed): one page left out.
        text += "\ndevice_check:\n  enabled: false\n"
        (folder / "study.yaml").write_text(text, encoding="utf-8")
    return folder / "study.yaml"


CONTINUOUS_ID = "bench-continuous"
TRACE_HZ = 10
TRACE_FLUSH_S = 3.0  # continuous.js's KC_FLUSH_MS


def continuous_study(workdir: Path) -> Path:
    """The bench study with a 1d continuous rating at 10 Hz during playback (as
    tests/test_browser_continuous.py's `_study` makes it), under its own id."""
    import yaml

    path = workdir / "study" / "continuous.yaml"
    if not path.exists():
        raw = yaml.safe_load(bench_study(workdir).read_text(encoding="utf-8"))
        raw["id"] = CONTINUOUS_ID
        raw["playback"]["continuous_rating"] = {"item": "How do you feel right now?", "rate_hz": TRACE_HZ, "mode": "1d"}
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def register_continuous(db_url: str, workdir: Path) -> None:
    """Migrate and register the continuous study beside the one the server is started with, open."""
    from study import store

    engine = store.make_engine(db_url)
    try:
        store.upgrade(engine)
        store.register_study(engine, continuous_study(workdir))
        store.set_study_status(engine, CONTINUOUS_ID, "open")
    finally:
        engine.dispose()


def start_kuleshov(db_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "KULESHOV_DATABASE_URL": db_url, "KULESHOV_DATA_DIR": str(workdir / "data"),
           "KULESHOV_LOG_LEVEL": "warning"}
    log = workdir / "kuleshov.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", "--host", "127.0.0.1", "--port", str(port),
                             "--study", str(bench_study(workdir))], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/api/health", proc, log)
    return proc, url


def start_minimal(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = workdir / "minimal.log"
    # Started from the repository folder, so Streamlit reads the same .streamlit/config.toml.
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(MINIMAL), "--server.port", str(port),
                             "--server.address", "127.0.0.1"], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/_stcore/health", proc, log)
    return proc, url


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, resident bytes) of a process, children included for CPU."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


# --------------------------------------------------------------------------- answering items


def answer_for(item: dict, rng: random.Random) -> object:
    """A valid answer for one questionnaire item, from the type the component was given."""
    kind = item.get("widget") or item.get("type")
    if item.get("options"):
        options = item["options"]
        if item.get("correct") is not None:
            return item["correct"]
        choice = rng.choice(options)
        return choice.get("value") if isinstance(choice, dict) else choice
    if item.get("points"):
        return rng.choice(item["points"])
    lo, hi = item.get("min"), item.get("max")
    if lo is not None and hi is not None:
        step = item.get("step") or 1
        n = int(round((float(hi) - float(lo)) / float(step)))
        value = float(lo) + step * rng.randint(0, max(n, 0))
        return int(value) if float(value).is_integer() else value
    if kind in ("text", "free_text", "textarea"):
        return f"bench answer {rng.randint(1, 999)}"
    return 1


def page_answers(data: dict, rng: random.Random) -> dict:
    answers = {}
    for pos, item in enumerate(data.get("items", []), start=1):
        rows = item.get("rows")
        for sub in rows if isinstance(rows, list) and rows else [item]:
            merged = {**item, **sub} if sub is not item else item
            item_id = merged.get("id")
            answers[item_id] = {"value": answer_for(merged, rng), "untouched": False, "first_ms": 500,
                                "last_ms": 900, "changes": 1, "shown_position": len(answers) + 1}
    return answers


# --------------------------------------------------------------------------- one bot


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, after the ramp
    event_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runs: int = 0
    measured_runs: int = 0  # script runs (any) and event POSTs inside the measured window
    measured_posts: int = 0
    sessions_done: int = 0
    acknowledged: int = 0  # answers of questionnaire pages the server moved on from
    measuring: bool = False
    # Continuous-rating bots: their own next-page latencies, and the trace samples they sent
    # and the server acknowledged (index in `accepted` of /api/traces' answer).
    cont_latencies: list[float] = field(default_factory=list)
    trace_latencies: list[float] = field(default_factory=list)
    trace_posts: int = 0
    samples_sent: int = 0
    samples_acked: int = 0
    clip_seconds: float = 0.0  # longest clip a continuous bot watched
    trace_retries: int = 0  # trace POSTs answered 5xx/429 or not at all: sent again later
    trace_retry_reasons: set = field(default_factory=set)


@dataclass
class Page:
    buttons: list[dict]
    components: dict[str, dict]  # id -> {"name", "data"}
    exception: str | None
    query_string: str


class Bot:
    def __init__(self, base: str, query: str, stats: Stats, rng: random.Random, args, http: httpx.AsyncClient,
                 t_stop: float = float("inf"), continuous: bool = False):
        self.base, self.query, self.stats, self.rng, self.args, self.http = base, query, stats, rng, args, http
        self.t_stop = t_stop
        self.continuous = continuous
        self.cache: dict[str, ForwardMsg] = {}
        self.page_hash = ""

    async def run_session(self) -> None:
        ws_url = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        async with websockets.connect(ws_url, max_size=None, open_timeout=RUN_TIMEOUT_S) as ws:
            self.ws = ws
            page = await self.rerun({}, measure=False)
            for _ in range(80):
                if time.monotonic() > self.t_stop:
                    return  # the window closed: stop between actions, never inside one
                if page.exception:
                    self.stats.errors.append(f"exception on page: {page.exception[:200]}")
                    return
                action = await self.act(page)
                if action is None:
                    self.stats.sessions_done += 1
                    return
                widgets, measure = action
                before = page
                page = await self.rerun(widgets, measure=measure)
                self.count_acknowledged(before, page)

    def count_acknowledged(self, before: Page, after: Page) -> None:
        def keys(p: Page) -> set:
            return {c["data"].get("page_key") for c in p.components.values() if c["name"].endswith("questionnaire")}
        for c in before.components.values():
            if c["name"].endswith("questionnaire") and c["data"].get("page_key") not in keys(after):
                self.stats.acknowledged += len(c.get("sent") or ())

    async def think(self) -> None:
        await asyncio.sleep(self.rng.uniform(self.args.think_min, self.args.think_max))

    async def act(self, page: Page):
        """The widget states that answer this page, or None when the session is over."""
        q = next((c for c in page.components.values() if c["name"].endswith("questionnaire")), None)
        player = next(((cid, c) for cid, c in page.components.items() if c["name"].endswith("player")), None)
        if player is not None and (q is None):
            cid, comp = player
            data = comp["data"]
            await self.play(data)
            state = {"progress": {"instance": data.get("instance"), "share": 1, "enough": True, "ended": True}}
            return {cid: ("json_value", json.dumps(state))}, True
        if q is not None:
            qid = next(cid for cid, c in page.components.items() if c is q)
            await self.think()
            q["sent"] = page_answers(q["data"], self.rng)
            submit = [{"event": "submit", "value": {"page_key": q["data"].get("page_key"), "answers": q["sent"]}}]
            widgets = {f"$$STREAMLIT_INTERNAL_KEY_{qid}__events": ("json_trigger_value", json.dumps(submit))}
            if player is not None:  # the player's state is still on the page
                cid, comp = player
                state = {"progress": {"instance": comp["data"].get("instance"), "share": 1, "enough": True, "ended": True}}
                widgets[cid] = ("json_value", json.dumps(state))
            return widgets, True
        # The page's own button (consent|agree, submit|<step>), never decline, withdraw or a language.
        buttons = [b for b in page.buttons if "-consent|agree" in b["id"] or "-submit|" in b["id"]] or \
            [b for b in page.buttons if not any(w in b["id"] for w in ("decline", "withdraw", "language|"))]
        if not buttons:
            return None
        primary = next((b for b in buttons if b.get("type") == "primary"), buttons[0])
        await self.think()
        return {primary["id"]: ("trigger_value", True)}, True

    async def play(self, data: dict) -> None:
        """Watch the clip for --watch seconds (a continuous rater: the whole clip, rating it as it
        plays), POSTing playback events as the player does."""
        token, position = data.get("token"), data.get("position")
        seq = 0
        watch = self.args.watch
        capturing = (data.get("capture") or {}).get("mode") == "1d"
        if capturing and data.get("duration"):
            # A continuous rater rates the whole clip (the trace is the measure), so it watches it all.
            watch = max(watch, float(data["duration"]))
        t_end = time.monotonic() + watch
        tracer = asyncio.create_task(self.trace(data, watch)) if capturing else None
        names = ["start_click", "loaded", "play"]
        while True:
            batch = []
            for name in names:
                batch.append({"position": position, "seq": seq, "event": name, "media_time": 0.0,
                              "client_time": time.time() * 1000})
                seq += 1
            names = ["progress"]
            await self.post_events(token, batch)
            if time.monotonic() >= t_end:
                break
            await asyncio.sleep(min(2.0, max(0.0, t_end - time.monotonic())))
        await self.post_events(token, [{"position": position, "seq": seq, "event": "ended", "media_time": 1.0,
                                        "client_time": time.time() * 1000, "watched_share": 1.0},
                                       {"position": position, "seq": seq + 1, "event": "watched", "media_time": 1.0,
                                        "client_time": time.time() * 1000, "watched_share": 1.0}])
        if tracer is not None:
            await tracer

    async def trace(self, data: dict, length: float) -> None:
        """The continuous rating as continuous.js sends it: 10 samples per second of video time,
        a batch every 3 s and a final one at the end, into an outbox whose first 20 batches are
        POSTed to /api/traces (one request in flight). As in continuous.js, an answer of 5xx or
        429, or none at all, keeps the batches for a later try (backoff 1 s doubling to 30 s;
        counted as `trace_retries`, not as errors); a batch refused for good is an error."""
        token, position = data.get("token"), data.get("position")
        cap = data["capture"]
        lo, hi = float(cap.get("min", 1)), float(cap.get("max", 9))
        attempt = self.rng.getrandbits(31)
        value = float(cap.get("start") if cap.get("start") is not None else (lo + hi) / 2)
        started = time.monotonic()
        t, seq = 0.0, 0
        outbox: list[dict] = []
        self.stats.clip_seconds = max(self.stats.clip_seconds, length)
        while t < length - 1e-9:
            batch_end = min(length, t + TRACE_FLUSH_S)
            times, values = [], []
            while t < batch_end - 1e-9:
                times.append(round(t, 3))
                value = min(hi, max(lo, value + self.rng.gauss(0, 0.15)))
                values.append(round(value, 3))
                t += 1 / TRACE_HZ
            await asyncio.sleep(max(0.0, started + batch_end - time.monotonic()))
            outbox.append({"position": position, "attempt": attempt, "seq": seq, "mode": "1d",
                           "final": t >= length - 1e-9, "t": times, "x": values, "marks": [],
                           "start_x": values[0], "first_move_t": 0.5, "client_time": time.time() * 1000})
            seq += 1
            self.stats.samples_sent += len(times)
            await self.send_traces(token, outbox)
        backoff, give_up = 1.0, time.monotonic() + 120
        while outbox and time.monotonic() < give_up:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            await self.send_traces(token, outbox)
        if outbox:
            self.stats.errors.append(f"traces: {len(outbox)} batches never stored")

    async def send_traces(self, token, outbox: list[dict]) -> None:
        while outbox:
            group = outbox[:20]
            t0 = time.perf_counter()
            try:
                resp = await self.http.post(self.base + "/api/traces", json={"token": token, "batches": group})
            except httpx.HTTPError:
                self.stats.trace_retries += 1
                return
            if self.stats.measuring:
                self.stats.trace_latencies.append(time.perf_counter() - t0)
                self.stats.trace_posts += 1
            if resp.status_code >= 500 or resp.status_code == 429:
                self.stats.trace_retries += 1
                self.stats.trace_retry_reasons.add(f"{resp.status_code}: {resp.text[:100]}")
                return
            try:
                answer = resp.json()
            except ValueError:
                answer = {}
            accepted = set(answer.get("accepted") or []) if resp.status_code == 200 else set()
            for i, b in enumerate(group):
                if i in accepted:
                    self.stats.samples_acked += len(b["t"])
                else:
                    self.stats.errors.append(f"traces {resp.status_code}: {str(answer)[:150]}")
            del outbox[:len(group)]

    async def post_events(self, token, batch) -> None:
        if not token:
            return
        t0 = time.perf_counter()
        try:
            resp = await self.http.post(self.base + "/api/events", json={"token": token, "events": batch})
            if resp.status_code >= 500:
                self.stats.errors.append(f"events {resp.status_code}")
        except httpx.HTTPError as exc:
            self.stats.errors.append(f"events: {exc!r}")
            return
        if self.stats.measuring:
            self.stats.event_latencies.append(time.perf_counter() - t0)
            self.stats.measured_posts += 1

    async def rerun(self, widgets: dict, measure: bool) -> Page:
        msg = BackMsg()
        rs = msg.rerun_script
        rs.query_string = self.query
        rs.page_script_hash = self.page_hash
        rs.cached_message_hashes.extend(self.cache.keys())
        for wid, (kind, value) in widgets.items():
            w = rs.widget_states.widgets.add()
            w.id = wid
            setattr(w, kind, value)
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        page = await self.read_run()
        elapsed = time.perf_counter() - t0
        self.stats.runs += 1
        self.stats.measured_runs += self.stats.measuring
        if measure and self.stats.measuring:
            self.stats.latencies.append(elapsed)
            if self.continuous:
                self.stats.cont_latencies.append(elapsed)
        return page

    async def read_run(self) -> Page:
        buttons, components, exception = [], {}, None
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            if kind == "ref_hash":
                cached = self.cache.get(fwd.ref_hash)
                if cached is None:
                    raise RuntimeError("server referred to a message this bot never cached")
                fwd = cached
                kind = fwd.WhichOneof("type")
            elif fwd.metadata.cacheable and fwd.hash:
                self.cache[fwd.hash] = fwd
            if kind == "new_session":
                self.page_hash = fwd.new_session.page_script_hash
            elif kind == "page_info_changed":
                self.query = fwd.page_info_changed.query_string
            if kind == "delta" and fwd.metadata.active_script_hash:
                # With st.navigation the page the browser names is the one that ran (not the main script).
                self.page_hash = fwd.metadata.active_script_hash
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                el = fwd.delta.new_element
                which = el.WhichOneof("type")
                if which == "button":
                    if not el.button.disabled:  # e.g. the current language's button on the switcher
                        buttons.append({"id": el.button.id, "label": el.button.label, "type": el.button.type})
                elif which == "bidi_component":
                    bc = el.bidi_component
                    data = json.loads(bc.json) if bc.WhichOneof("data") == "json" else {}
                    if isinstance(data, dict) and isinstance(data.get("json"), str):
                        data = json.loads(data["json"])  # app_pages.component_data
                    components[bc.id] = {"name": bc.component_name, "data": data}
                elif which == "exception":
                    exception = el.exception.message or el.exception.type
            elif kind == "script_finished":
                if fwd.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    # st.rerun() (e.g. after the URL changed): the page is the next run's.
                    buttons, components, exception = [], {}, None
                    continue
                if fwd.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    exception = "compile error"
                return Page(buttons, components, exception, self.query)


async def bot_loop(i: int, base: str, query: str, stats: Stats, args, t_stop: float, http,
                   continuous: bool = False) -> None:
    rng = random.Random(i)
    await asyncio.sleep(rng.uniform(0, args.ramp))
    n = 0
    while time.monotonic() < t_stop:
        q = query.format(i=i, n=n)
        if continuous:
            q = q.replace(f"study={args.study_id}", f"study={CONTINUOUS_ID}", 1)
        n += 1
        try:
            await Bot(base, q, stats, rng, args, http, t_stop, continuous).run_session()
        except Exception as exc:  # noqa: BLE001 - every failure of a bot is a counted error
            stats.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(1.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def pg_transactions(db_url: str | None) -> int | None:
    """Transactions committed and rolled back so far in a PostgreSQL database (pg_stat_database),
    None elsewhere: per action, a figure the machine's load does not change."""
    if not db_url or not db_url.startswith("postgresql"):
        return None
    import sqlalchemy as sa

    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            return int(conn.execute(sa.text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                            "WHERE datname = current_database()")).scalar_one())
    finally:
        engine.dispose()


def is_continuous(i: int, n: int, k: int) -> bool:
    """k of the n bots, spread evenly (every third at 100 of 300)."""
    return k > 0 and (i * k) // n != ((i + 1) * k) // n


async def drive(base: str, query: str, n: int, args, pid: int | None, db_url: str | None = None,
                continuous: int = 0) -> dict:
    """`continuous` of the n bots take part in the continuous-rating study instead."""
    stats = Stats()
    t0 = time.monotonic()
    t_stop = t0 + args.ramp + args.duration
    limits = httpx.Limits(max_connections=max(10, n), max_keepalive_connections=max(10, n))
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        tasks = [asyncio.create_task(bot_loop(i, base, query, stats, args, t_stop, http,
                                              is_continuous(i, n, continuous))) for i in range(n)]
        await asyncio.sleep(args.ramp)
        stats.measuring = True
        cpu0 = proc_usage(pid)[0] if pid else float("nan")
        xact0 = await asyncio.to_thread(pg_transactions, db_url)
        rss_max = 0
        while time.monotonic() < t_stop:
            await asyncio.sleep(1.0)
            rss_max = max(rss_max, proc_usage(pid)[1]) if pid else float("nan")
        cpu1 = proc_usage(pid)[0] if pid else float("nan")
        stats.measuring = False
        xact1 = await asyncio.to_thread(pg_transactions, db_url)
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = [x * 1000 for x in stats.latencies]
    ev = [x * 1000 for x in stats.event_latencies]
    cont = [x * 1000 for x in stats.cont_latencies]
    tr = [x * 1000 for x in stats.trace_latencies]
    return {"participants": n, "continuous_participants": continuous, "actions": len(lat),
            "continuous_p50_ms": pct(cont, 50), "continuous_p95_ms": pct(cont, 95), "continuous_p99_ms": pct(cont, 99),
            "traces_p50_ms": pct(tr, 50), "traces_p95_ms": pct(tr, 95), "trace_posts": stats.trace_posts,
            "samples_sent": stats.samples_sent, "clip_s_max": stats.clip_seconds,
            "trace_retries": stats.trace_retries, "trace_retry_reasons": sorted(stats.trace_retry_reasons)[:3], "samples_acknowledged": stats.samples_acked, "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99), "events_p95_ms": pct(ev, 95), "errors": len(stats.errors),
            "error_examples": sorted(set(stats.errors))[:3], "sessions_done": stats.sessions_done,
            "acknowledged": stats.acknowledged,
            "cpu_s_per_session_min": (cpu1 - cpu0) / max(n, 1) / (args.duration / 60),
            # Per request the server answered in the window (script runs and event POSTs): the
            # server's own cost, which the machine's other load changes far less than latency.
            "requests": stats.measured_runs + stats.measured_posts + stats.trace_posts, "script_runs": stats.measured_runs,
            "cpu_ms_per_request": (cpu1 - cpu0) * 1000 / max(1, stats.measured_runs + stats.measured_posts
                                                              + stats.trace_posts),
            "pg_transactions_per_request": (xact1 - xact0) / max(1, stats.measured_runs + stats.measured_posts
                                                                 + stats.trace_posts)
            if xact0 is not None and xact1 is not None else None,
            "rss_mb": rss_max / 2**20, "rss_mb_per_session": rss_max / 2**20 / max(n, 1)}


def stored_sessions(db_url: str, study_id: str = "bench-sessions", continuous: bool = False) -> dict:
    """Participants of the bench study (and of the continuous one) by status, their stored
    answers, and the continuous study's stored trace samples: the bots' sessions must have gone
    through for real (a rejected page would be re-submitted, not counted)."""
    import sqlalchemy as sa

    from study import store

    ids = [study_id, CONTINUOUS_ID] if continuous else [study_id]
    engine = store.make_engine(db_url)
    p = store.participants.c
    with engine.connect() as conn:
        by_status = dict(conn.execute(sa.select(p.status, sa.func.count()).where(p.study_id.in_(ids))
                                      .group_by(p.status)).all())
        answers = conn.execute(sa.select(sa.func.count()).select_from(store.responses.join(
            store.participants, store.responses.c.participant_id == p.id)).where(
                p.study_id.in_(ids), store.responses.c.step_key != "consent")).scalar()
    out = {"by_status": by_status, "responses": answers}
    if continuous:
        from analysis import load

        out["samples"] = len(load.load_traces(engine, CONTINUOUS_ID, include_practice=True))
    engine.dispose()
    return out


def continuous_line(r: dict) -> str:
    """What the continuous-rating bots saw and sent, for the printout."""
    return (f"  continuous bots ({r['continuous_participants']}): next page p50/p95/p99 "
            f"{r['continuous_p50_ms']:.0f}/{r['continuous_p95_ms']:.0f}/{r['continuous_p99_ms']:.0f} ms; "
            f"{r['trace_posts']} trace POSTs measured, p50/p95 {r['traces_p50_ms']:.0f}/{r['traces_p95_ms']:.0f} ms; "
            f"samples sent {r['samples_sent']}, acknowledged {r['samples_acknowledged']}, "
            f"stored {r['stored'].get('samples')}; longest clip watched {r['clip_s_max']:.1f} s; "
            f"trace POSTs to send again (5xx/429/no answer) {r['trace_retries']} {r['trace_retry_reasons']}")


def row(label: str, r: dict, base: dict | None) -> str:
    ratio = f"{r['p95_ms'] / base['p95_ms']:.1f}x" if base and base["p95_ms"] > 0 else ""
    return (f"| {label} | {r['participants']} | {r['actions']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['errors']} | {r['cpu_s_per_session_min']:.2f} | {r['rss_mb']:.0f} | {ratio} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", default="25,50,100", help="comma-separated concurrency levels")
    ap.add_argument("--db", action="append", default=None,
                    help="database URL(s) for Kuleshov (default: a fresh SQLite file); repeatable")
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per level")
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds over which bots start")
    ap.add_argument("--think-min", type=float, default=2.0)
    ap.add_argument("--think-max", type=float, default=5.0)
    ap.add_argument("--watch", type=float, default=3.0, help="seconds each clip 'plays' before it ends")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--url", help="drive a server already running here (e.g. the nginx pair of "
                    "deploy/nginx.conf) instead of starting one; --db is then its database, for the "
                    "stored-answers check, and --study-id the study it serves")
    ap.add_argument("--study-id", default="bench-sessions")
    ap.add_argument("--continuous", type=int, default=0,
                    help="this many of each level's participants take part in a second study, the same "
                         "with a 10 Hz continuous rating, and POST trace batches as continuous.js does "
                         "(registered beside the first; with --url, register it yourself)")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.participants.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="kuleshov-bench-"))
    dbs = args.db or [f"sqlite:///{work}/bench.db"]
    results = []
    print(f"# bench_sessions: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, think "
          f"{args.think_min}-{args.think_max} s, {args.duration:.0f} s measured per level", flush=True)
    print("| app | participants | actions | p50 ms | p95 ms | p99 ms | errors | CPU s/session/min | RSS MB | p95 vs minimal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for n in levels:
        proc, url = start_minimal(work)
        try:
            base = asyncio.run(drive(url, "n={i}-{n}", n, args, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        print(row("minimal Streamlit app", base, None), flush=True)
        print(f"  server: {base['cpu_ms_per_request']:.1f} ms CPU per script run", flush=True)
        results.append({"app": "minimal", **base})
        for db in dbs:
            query = f"study={args.study_id}&PROLIFIC_PID=bench-{{i}}-{{n}}-{time.time_ns()}"
            k = min(args.continuous, n)
            if args.url:
                r = asyncio.run(drive(args.url.rstrip("/"), query, n, args, None, db, k))
            else:
                if k:
                    register_continuous(db, work)
                proc, url = start_kuleshov(db, work)
                try:
                    r = asyncio.run(drive(url, query, n, args, proc.pid, db, k))
                finally:
                    proc.terminate()
                    proc.wait(timeout=20)
            r["stored"] = stored_sessions(db, args.study_id, continuous=bool(k))
            label = "Kuleshov, " + db.split(":", 1)[0].split("+")[0]
            print(row(label, r, base), flush=True)
            print(f"  stored: {r['stored']}; answers acknowledged to bots: {r['acknowledged']}; "
                  f"whole sessions finished by bots: {r['sessions_done']}", flush=True)
            xacts = r["pg_transactions_per_request"]
            print(f"  server: {r['cpu_ms_per_request']:.1f} ms CPU per request ({r['script_runs']} script runs + "
                  f"{r['requests'] - r['script_runs']} event POSTs measured)"
                  + (f", {xacts:.2f} PostgreSQL transactions per request" if xacts is not None else "")
                  + f"; events p95 {r['events_p95_ms']:.0f} ms", flush=True)
            if k:
                print(continuous_line(r), flush=True)
            if r["errors"]:
                print(f"  errors: {r['error_examples']}", flush=True)
            results.append({"app": label, **r, "ratio_p95": r["p95_ms"] / base["p95_ms"] if base["p95_ms"] else None})
    print(f"# load at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
