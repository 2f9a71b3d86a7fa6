"""N concurrent continuous-rating participants at 10 Hz posting trace batches to POST /api/traces.

Method (what is and is not measured):

- The server is the real route (server.make_app(streamlit=False): uvicorn + Starlette +
  store.record_trace_batch) in its own process, so its CPU time is its own; the load generator
  (one asyncio loop with httpx) runs in this process, on the same 2 cores.
- Each participant is enrolled through store.enrol in a study with a 1d continuous rating and
  a marks prompt, then "watches" its clips one after another in real time: 10 samples per second
  of video time, a batch every 3 s and at the end of each clip (final), a mark now and then,
  exactly the JSON the browser sends. After its last clip it starts again as a new attempt
  (a reload), so a run of any length stays inside the clips' durations. Participants start at
  random phases so their batches do not arrive in lockstep.
- Sending is open loop, as in the browser: batches are sealed on schedule into an outbox and a
  sender posts whatever waits (one request in flight per participant, up to 20 batches each),
  so slow answers make requests bigger, not samples fewer.
- `--resend` (default 0.05) of the requests are sent a second time, as a browser does when an
  answer was lost: they must be stored once.
- Latency: wall time of each POST as the client sees it (includes the loopback HTTP round
  trip and the client's own scheduling on the shared cores). CPU: user + system time of the
  server process over the run, per second, per batch and per 1,000 samples.
- Baseline: once a second the generator also GETs /api/health (no database) from the same loop;
  its latency is what the machine's load alone costs a round trip, so the difference to the
  trace POSTs is the ingest's own.
- At the end every stored batch is read back (load_traces): samples sent and accepted vs
  stored, so a lost or duplicated sample shows as a difference.
- Not measured: the browser side (see tests/test_browser_continuous.py) and the Streamlit
  session, which this route never touches.

    .venv/bin/python benchmarks/bench_continuous.py --participants 100 --seconds 120
    .venv/bin/python benchmarks/bench_continuous.py --url postgresql+psycopg://postgres@127.0.0.1/bench

Last results: README, Benchmarks section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
RATE_HZ = 10
BATCH_S = 3.0


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[max(0, min(len(values) - 1, int(round(q / 100 * (len(values) - 1)))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def study_file(folder: Path) -> Path:
    import yaml

    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["stimuli"]["manifest"] = str(DEMO.parent / "manifest.csv")
    raw["playback"]["continuous_rating"] = {"item": "How do you feel right now?", "rate_hz": RATE_HZ}
    raw["playback"]["marks"] = {"prompts": [{"id": "moved", "label": "This moved me", "key": "m"}]}
    path = folder / "bench_continuous.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def serve(url: str, port: int) -> None:
    import uvicorn

    import server
    from study import store

    engine = store.make_engine(url)
    app = server.make_app(engine, streamlit=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", timeout_keep_alive=30)


async def participant(client, token: str, clips: list[tuple[int, float]], until: float, rng: random.Random,
                      resend: float, stats: dict) -> None:
    """Samples on schedule into an outbox, and sends it the way continuous.js does: one request in
    flight at a time, everything waiting (up to 20 batches) in the next, so a slow answer never
    slows the sampling (open loop: the offered load stays 10 Hz per participant)."""
    outbox: list[dict] = []
    done = asyncio.Event()

    async def sampler() -> None:
        await asyncio.sleep(rng.uniform(0, BATCH_S))
        attempt = rng.getrandbits(31)
        value = 5.0
        while time.monotonic() < until:
            for position, duration in clips:
                seq, t, clip_started = 0, 0.0, time.monotonic()
                while t < duration and time.monotonic() < until:
                    batch_end = min(duration, t + BATCH_S)
                    times, values, marks = [], [], []
                    while t < batch_end:
                        times.append(round(t, 3))
                        value = min(9.0, max(1.0, value + rng.gauss(0, 0.15)))
                        values.append(round(value, 3))
                        if rng.random() < 0.01:
                            marks.append([round(t, 3), "moved"])
                        t += 1 / RATE_HZ
                    # Real time: the batch is sealed when its last sample has been taken.
                    await asyncio.sleep(max(0.0, clip_started + batch_end - time.monotonic()))
                    outbox.append({"position": position, "attempt": attempt, "seq": seq, "mode": "1d",
                                   "final": t >= duration, "t": times, "x": values, "marks": marks,
                                   "start_x": 5.0, "first_move_t": 0.5, "client_time": time.time() * 1000})
                    stats["batches"] += 1
                    stats["samples"] += len(times)
                    stats["marks"] += len(marks)
                    seq += 1
                if time.monotonic() >= until:
                    break
            attempt = rng.getrandbits(31)  # played everything: start again, as after a reload
        done.set()

    async def sender() -> None:
        while not (done.is_set() and not outbox):
            if not outbox:
                await asyncio.sleep(0.05)
                continue
            group = outbox[:20]
            body = json.dumps({"token": token, "batches": group})
            for copy in range(2 if rng.random() < resend else 1):
                started = time.perf_counter()
                resp = await client.post("/api/traces", content=body, headers={"Content-Type": "application/json"})
                stats["latency"].append(time.perf_counter() - started)
                stats["per_post"].append(len(group))
                answer = resp.json()
                if resp.status_code != 200 or answer["refused"]:
                    stats["errors"].append((resp.status_code, answer))
                elif copy:
                    stats["resent"] += len(group)
                    stats["resent_recorded"] += answer["recorded"]
            del outbox[:len(group)]

    await asyncio.gather(sampler(), sender())


async def baseline(client, until: float, stats: dict) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        await client.get("/api/health")
        stats["baseline"].append(time.perf_counter() - started)
        await asyncio.sleep(1.0)


async def drive(base: str, tokens: list[str], clips: list[tuple[int, float]], seconds: float, seed: int,
                resend: float) -> dict:
    import httpx

    stats = {"latency": [], "errors": [], "batches": 0, "samples": 0, "marks": 0, "resent": 0,
             "resent_recorded": 0, "baseline": [], "per_post": []}
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        until = time.monotonic() + seconds
        rng = random.Random(seed)
        await asyncio.gather(baseline(client, until, stats),
                             *(participant(client, tok, clips, until, random.Random(rng.getrandbits(64)), resend,
                                           stats) for tok in tokens))
    return stats


def run(n: int, seconds: float, url: str | None, seed: int, resend: float) -> dict:
    from analysis import load
    from study import store

    tmp = Path(tempfile.mkdtemp(prefix="kuleshov-bench-cont-"))
    url = url or f"sqlite:///{tmp / 'bench.db'}"
    engine = store.make_engine(url)
    store.upgrade(engine)
    study_id = store.register_study(engine, study_file(tmp))
    tokens, clips_of = [], {}
    for _ in range(n):
        state = store.enrol(engine, study_id)
        tokens.append(state.token)
        clips_of[state.token] = [(pos, float(state.stimuli[sid]["duration_s"]))
                                 for pos, sid in enumerate(state.sequence, start=1)]
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", url, "--port", str(port)], cwd=ROOT)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        load0 = os.getloadavg()[0]
        # Every participant watches its own clip list; the first list is used for all (same lengths).
        stats = asyncio.run(drive(f"http://127.0.0.1:{port}", tokens, clips_of[tokens[0]], seconds, seed, resend))
        cpu = cpu_seconds(proc.pid) - cpu0
        wall = time.monotonic() - wall0
        load1 = os.getloadavg()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    started = time.perf_counter()
    traces = load.load_traces(engine, study_id, include_practice=True)
    read_s = time.perf_counter() - started
    marks = load.load_marks(engine, study_id, include_partial=True)
    with engine.connect() as conn:
        import sqlalchemy as sa

        rows = conn.execute(sa.select(sa.func.count()).select_from(store.trace_batches)).scalar_one()
    engine.dispose()
    lat = [x * 1000 for x in stats["latency"]]
    base = [x * 1000 for x in stats["baseline"]]
    return {
        "participants": n, "seconds": round(wall, 1), "database": url.split(":", 1)[0],
        "posts": len(lat), "batches_sent": stats["batches"], "batch_rows": rows,
        "batches_per_post_mean": round(sum(stats["per_post"]) / max(1, len(stats["per_post"])), 2),
        "samples_per_second_per_participant": round(stats["samples"] / n / wall, 2),
        "samples_sent": stats["samples"], "samples_stored": len(traces),
        "lost": stats["samples"] - len(traces) if len(traces) <= stats["samples"] else 0,
        "duplicated": max(0, len(traces) - stats["samples"]),
        "marks_sent": stats["marks"], "marks_stored": len(marks),
        "resent": stats["resent"], "resent_stored_again": stats["resent_recorded"],
        "errors": len(stats["errors"]), "first_error": stats["errors"][:1],
        "latency_ms": {"p50": round(percentile(lat, 50), 1), "p95": round(percentile(lat, 95), 1),
                       "p99": round(percentile(lat, 99), 1), "max": round(max(lat), 1) if lat else None},
        "baseline_health_ms": {"p50": round(percentile(base, 50), 1), "p95": round(percentile(base, 95), 1),
                               "p99": round(percentile(base, 99), 1)},
        "server_cpu": {"seconds": round(cpu, 1), "share_of_one_core": round(cpu / wall, 3),
                       "ms_per_batch": round(1000 * cpu / max(1, len(lat)), 2),
                       "ms_per_1000_samples": round(1000 * cpu / max(1, stats["samples"]) * 1000, 1)},
        "read_back_s": round(read_s, 2), "load_average": [round(load0, 2), round(load1, 2)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", "-n", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--url", help="database URL (default: a new SQLite file)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resend", type=float, default=0.05, help="share of batches sent twice (default 0.05)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    result = run(args.participants, args.seconds, args.url, args.seed, args.resend)
    print(json.dumps(result, indent=2))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
