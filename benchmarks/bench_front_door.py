"""bench_sessions through the front door: nginx (deploy/nginx.conf as shipped, only the ports
changed, as tests/test_nginx.py runs it) in front of two app processes on one PostgreSQL database or one SQLite file (WAL mode, as the
store opens it).

The bots are bench_sessions' own (real Streamlit sessions over the websocket, event POSTs);
each bot's websocket is one connection, so nginx keeps a session on one process without the
routing cookie, and its event POSTs go to either process, as a browser's may. CPU and resident
memory are the two app processes' together; acknowledged vs stored as in bench_sessions.
`--continuous K`: K of the participants take part in the continuous-rating study instead (as
bench_sessions' option; registered before the processes start), and their trace samples sent,
acknowledged and stored are counted too.

    python benchmarks/bench_front_door.py --participants 300 --continuous 100 --db postgresql+psycopg://postgres@127.0.0.1:5432/front
    python benchmarks/bench_front_door.py --participants 300 --continuous 100 --db sqlite:////tmp/front.db

Needs /usr/sbin/nginx (Debian's nginx package). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sessions as bs  # noqa: E402

ROOT = bs.ROOT
NGINX = "/usr/sbin/nginx"
SITE = ROOT / "deploy" / "nginx.conf"


def render_site(app_ports: list[int], listen: int) -> str:
    """deploy/nginx.conf with these ports in place of 8501, 8502 and 8080 (as tests/test_nginx.py)."""
    text = SITE.read_text()
    for shipped, port in zip((8501, 8502), app_ports, strict=True):
        assert f"server 127.0.0.1:{shipped} " in text
        text = text.replace(f"server 127.0.0.1:{shipped} ", f"server 127.0.0.1:{port} ")
    assert "listen 8080;" in text
    return text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")


def start_nginx(prefix: Path, app_ports: list[int]) -> tuple[subprocess.Popen, str]:
    listen = bs.free_port()
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "kuleshov.conf").write_text(render_site(app_ports, listen))
    user = "user root;\n" if os.geteuid() == 0 else ""
    # Every participant holds a websocket to nginx and nginx one to the app: 2 per participant.
    (prefix / "nginx.conf").write_text(f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/kuleshov.conf;
}}
""")
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=(prefix / "logs" / "stderr.log").open("w"))
    url = f"http://127.0.0.1:{listen}"
    bs.wait_ready(url + "/api/health", proc, prefix / "logs" / "stderr.log")
    return proc, url


def start_app(db_url: str, workdir: Path, study: Path) -> tuple[subprocess.Popen, int]:
    port = bs.free_port()
    env = {**os.environ, "KULESHOV_DATABASE_URL": db_url, "KULESHOV_DATA_DIR": str(workdir / "data"),
           "KULESHOV_LOG_LEVEL": "warning", "KULESHOV_APP_PROCESSES": "2", "KULESHOV_TRUSTED_PROXIES": "127.0.0.1"}
    log = workdir / f"kuleshov-{port}.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", "--host", "127.0.0.1", "--port", str(port),
                             "--study", str(study)], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    bs.wait_ready(f"http://127.0.0.1:{port}/api/health", proc, log)
    return proc, port


async def drive_pair(url: str, query: str, n: int, args, pids: list[int], db: str, continuous: int = 0) -> dict:
    """bs.drive against nginx, with the two processes' CPU and memory sampled alongside."""
    usage0 = [bs.proc_usage(pid)[0] for pid in pids]
    rss_max = [0] * len(pids)
    done = asyncio.Event()

    async def sample() -> None:
        await asyncio.sleep(args.ramp)
        while not done.is_set():
            for i, pid in enumerate(pids):
                rss_max[i] = max(rss_max[i], bs.proc_usage(pid)[1])
            await asyncio.sleep(1.0)

    t0 = time.monotonic()
    sampler = asyncio.create_task(sample())
    r = await bs.drive(url, query, n, args, None, db, continuous)
    done.set()
    await sampler
    elapsed = time.monotonic() - t0
    cpu = sum(bs.proc_usage(pid)[0] for pid in pids) - sum(usage0)
    # Over the whole run (ramp and wind-down included), not only the measured window.
    r["cpu_s_per_session_min"] = cpu / max(n, 1) / (elapsed / 60)
    r["cpu_ms_per_request"] = float("nan")
    r["rss_mb"] = sum(rss_max) / 2**20
    r["rss_mb_per_session"] = r["rss_mb"] / max(n, 1)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", default="300")
    ap.add_argument("--db", required=True, help="PostgreSQL or SQLite URL (an empty database)")
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--ramp", type=float, default=15.0)
    ap.add_argument("--think-min", type=float, default=2.0)
    ap.add_argument("--think-max", type=float, default=5.0)
    ap.add_argument("--watch", type=float, default=3.0)
    ap.add_argument("--continuous", type=int, default=0, help="participants in the continuous-rating study")
    args = ap.parse_args(argv)
    args.study_id = "bench-sessions"
    kind = args.db.split(":", 1)[0].split("+")[0]
    work = Path(tempfile.mkdtemp(prefix="kuleshov-front-"))
    study = bs.bench_study(work)
    print(f"# bench_front_door: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, nginx + 2 app processes, "
          f"think {args.think_min}-{args.think_max} s, {args.duration:.0f} s measured", flush=True)
    print("| app | participants | actions | p50 ms | p95 ms | p99 ms | errors | CPU s/session/min | RSS MB | p95 vs minimal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for n in [int(x) for x in args.participants.split(",") if x.strip()]:
        proc, url = bs.start_minimal(work)
        try:
            base = asyncio.run(bs.drive(url, "n={i}-{n}", n, args, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        print(bs.row("minimal Streamlit app (one process, direct)", base, None), flush=True)
        apps = []
        nginx = None
        k = min(args.continuous, n)
        if k:
            bs.register_continuous(args.db, work)
        try:
            # One after the other: the first migrates and registers the study, the second finds it.
            for _ in range(2):
                apps.append(start_app(args.db, work, study))
            nginx, front = start_nginx(work / "nginx", [port for _, port in apps])
            query = f"study=bench-sessions&PROLIFIC_PID=front-{{i}}-{{n}}-{time.time_ns()}"
            r = asyncio.run(drive_pair(front, query, n, args, [p.pid for p, _ in apps], args.db, k))
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(timeout=20)
            for p, _ in apps:
                p.terminate()
                p.wait(timeout=20)
        r["stored"] = bs.stored_sessions(args.db, continuous=bool(k))
        print(bs.row(f"Kuleshov, nginx + 2 processes, {kind}", r, base), flush=True)
        print(f"  stored: {r['stored']}; answers acknowledged to bots: {r['acknowledged']}; "
              f"whole sessions finished by bots: {r['sessions_done']}; events p95 {r['events_p95_ms']:.0f} ms"
              + (f"; {r['pg_transactions_per_request']:.2f} PostgreSQL transactions per request"
                 if r["pg_transactions_per_request"] is not None else ""), flush=True)
        if k:
            print(bs.continuous_line(r), flush=True)
        if r["errors"]:
            print(f"  errors: {r['error_examples']}", flush=True)
    print(f"# load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
