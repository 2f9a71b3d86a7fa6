"""N concurrent simulated participants on the server-side path of the participant page.

Method (what is and is not measured):

- Each participant is a thread doing what one Streamlit session does on the server for each
  page: read its state (store.get_state, as every rerun does), validate and submit the page
  (flow.validate_answers + store.submit_step), then read the next state to render it. The time
  from submit to the next state is the "response-to-next-page" latency reported.
- On every clip page the bot also POSTs playback events over HTTP to the app's real
  /api/events route (uvicorn + Starlette in this process, via httpx), in batches the size the
  player sends; those latencies are reported separately.
- Between pages each bot waits a random think time (default 0.2-1.0 s); with 0 it is a stress
  test. Clips are not played: watching time is think time.
- Not measured: the Streamlit websocket round trip and widget rendering. Drive real sessions
  with tests/test_browser_participant.py for that; NOTES.md measured ~9 ms p50 / 46 ms p95 per
  rerun with 50 sessions and the settings in .streamlit/config.toml.
- Memory: resident memory of this process before and after all participants are active, per
  participant. This is the store/flow side; a Streamlit session adds its own (not measured).

    python benchmarks/bench_participants.py --participants 100
    python benchmarks/bench_participants.py --participants 100 --url postgresql+psycopg://postgres@127.0.0.1/bench

Last results: see the README's Benchmarks section (100 participants, SQLite and PostgreSQL,
realistic and stress think times, quiet 2-core machine, November 2026).
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "stimuli" / "demo" / "study.yaml"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bot_answers(step, order, rng):
    from study.flow import Answer

    answers = {}
    for pos, item_id in enumerate(order, start=1):
        item = next(it for it in step.items if it.id == item_id)
        if item.type in ("choice", "attention"):
            value = item.correct if item.type == "attention" else rng.choice(item.options).value
        elif item.type == "text":
            value = "bot"
        elif item.id == "consent":
            value = "agree"
        else:
            lo, hi, st = item.min, item.max, item.step or 1
            k = rng.randint(0, int(round((hi - lo) / st)))
            value = lo + k * st
        answers[item_id] = Answer(value, response_time_ms=rng.randint(300, 5000), shown_position=pos)
    if "consent" in answers:
        answers["consent"] = Answer("agree")
    return answers


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def start_routes(engine, port):
    import uvicorn

    import server

    app = server.make_app(engine, {}, streamlit=False)
    # Keep-alive longer than the longest think time, else a reused connection can meet its close.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", timeout_keep_alive=30)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return srv, thread


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(n: int, url: str, think: tuple[float, float], seed: int) -> dict:
    import httpx

    from study import flow, store

    engine = store.make_engine(url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    port = free_port()
    srv, _ = start_routes(engine, port)
    base = f"http://127.0.0.1:{port}"

    page_ms: list[float] = []
    event_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(n + 1)
    rss_before = rss_mb()

    def participant(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        client = httpx.Client(base_url=base, timeout=30)
        try:
            state = store.enrol(engine, study_id, prolific_pid=f"bench-{i}")
            ready.wait()
            seq = 0
            while state.step.kind != "complete":
                time.sleep(rng.uniform(*think))
                state = store.get_state(engine, state.token)  # the rerun that renders the page
                step = state.step
                if step.has_clip:
                    events = [{"seq": seq + k, "position": step.position, "stimulus_id": step.stimulus_id,
                               "event": "progress", "media_time": k * 0.5, "client_time": time.time() * 1000,
                               "detail": {"watched_share": min(1.0, (k + 1) / 10)}} for k in range(10)]
                    seq += 10
                    t0 = time.perf_counter()
                    resp = client.post("/api/events", json={"token": state.token, "events": events})
                    dt = (time.perf_counter() - t0) * 1000
                    if resp.status_code != 200:
                        raise RuntimeError(f"events: {resp.status_code} {resp.text[:200]}")
                    with lock:
                        event_ms.append(dt)
                if step.kind == "device_check":  # answered as simulate's bots do (study/flow.py)
                    from types import SimpleNamespace

                    answers = flow.kind_of(step).bot_answers(SimpleNamespace(state=state), step)
                else:
                    answers = bot_answers(step, state.item_order, rng) if step.collects_data else {}
                t0 = time.perf_counter()
                if flow.validate_answers(step, answers) if step.collects_data else {}:
                    raise RuntimeError(f"bot answers invalid on {step.key}")
                meta = {"watched_share": 1.0} if step.has_clip else None
                result = store.submit_step(engine, state.token, step.key, answers, trial_meta=meta)
                if not result.ok:
                    raise RuntimeError(f"{step.key}: {result.message} {result.errors}")
                state = store.get_state(engine, state.token)  # the rerun that shows the next page
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    page_ms.append(dt)
        except Exception as exc:  # reported below; one failing bot must not hide the others' numbers
            with lock:
                errors.append(f"participant {i}: {exc.__class__.__name__}: {exc}")
            try:
                ready.abort()
            except threading.BrokenBarrierError:
                pass
        finally:
            client.close()

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(n)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    rss_active = rss_mb()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    srv.should_exit = True
    engine.dispose()
    return {
        "participants": n, "url": engine.url.render_as_string(hide_password=True), "pages": len(page_ms),
        "page_p50": statistics.median(page_ms) if page_ms else float("nan"),
        "page_p95": percentile(page_ms, 95), "page_max": max(page_ms, default=float("nan")),
        "events": len(event_ms), "events_p50": statistics.median(event_ms) if event_ms else float("nan"),
        "events_p95": percentile(event_ms, 95), "wall_s": wall, "rss_before": rss_before,
        "rss_active": rss_active, "errors": errors,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", "-n", type=int, default=100)
    ap.add_argument("--url", help="database URL (default: a new SQLite file in a temporary folder)")
    ap.add_argument("--think-min", type=float, default=0.2)
    ap.add_argument("--think-max", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        r = run(args.participants, url, (args.think_min, args.think_max), args.seed)
    print(__doc__.split("\n\n")[1].strip())
    print(__doc__.split("\n\n")[2].rstrip())
    print()
    print(f"database: {r['url']}")
    print(f"participants: {r['participants']} concurrent, think time {args.think_min}-{args.think_max} s, "
          f"wall {r['wall_s']:.1f} s")
    print(f"response-to-next-page (submit + next state): {r['pages']} pages, p50 {r['page_p50']:.1f} ms, "
          f"p95 {r['page_p95']:.1f} ms, max {r['page_max']:.1f} ms")
    print(f"POST /api/events (10 events per batch, HTTP): {r['events']} batches, p50 {r['events_p50']:.1f} ms, "
          f"p95 {r['events_p95']:.1f} ms")
    per = (r["rss_active"] - r["rss_before"]) / max(1, r["participants"])
    print(f"process memory: {r['rss_before']:.0f} MB before, {r['rss_active']:.0f} MB with all active "
          f"({per * 1024:.0f} KB per participant, store/flow side only)")
    if r["errors"]:
        print(f"ERRORS ({len(r['errors'])}):")
        for e in r["errors"][:10]:
            print("  " + e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
