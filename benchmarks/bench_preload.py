"""Preload benchmark: clip load time and stalls with and without preloading the next clip.

    .venv/bin/python benchmarks/bench_preload.py [--clips 4] [--latency 100] [--kbps 1000]

One participant in headless Chromium through a study of the demo clips, on the real server
(SQLite), with the network throttled by Chromium's own emulation (latency in ms, download
kbit/s). Mode `preload`: the player as shipped. Mode `no-preload`: the same, but every clip
request before that clip's own trial is aborted (a Playwright route), so each clip is fetched
only when its trial starts. Reported per clip position from the trials table: `load_ms` (source
set -> canplay) and `seconds_stalled`. Position 1 is never preloaded (nothing comes before it).

Last results (2 shared cores with other helpers' tests running, Debian Chromium, 100 ms
latency, 1000 kbit/s, 4 clips; three runs, 2 December 2026):

    preload     load_ms by position: [507, 20, 78, 70]; seconds_stalled: [0.388, 0.0, 0.0, 0.0]
    no-preload  load_ms by position: [546, 409, 420, 467]; seconds_stalled: [0.324, 0.343, 0.306, 0.371]
    preload     load_ms by position: [150, 22, 75, 36]; seconds_stalled: [0.0, 0.0, 0.0, 0.0]
    no-preload  load_ms by position: [680, 421, 964, 453]; seconds_stalled: [0.397, 0.224, 0.369, 0.334]
    preload     load_ms by position: [322, 62, 31, 35]; seconds_stalled: [0.0, 0.0, 0.0, 0.0]
    no-preload  load_ms by position: [862, 465, 567, 685]; seconds_stalled: [0.596, 0.279, 0.039, 0.5]

A fourth run (the first one made) stopped with a timeout waiting for a clip's Start button
under the throttled network; it did not recur and was not investigated.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_util import launch, start_server  # noqa: E402
from study import store  # noqa: E402
from test_browser_playback import enrol, rate_and_continue, start_clip, trial_row, wait_step, write_study  # noqa: E402


def run(mode: str, clips: int, latency: int, kbps: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        url = f"sqlite:///{tmp_path / 'bench.db'}"
        engine = store.make_engine(url)
        store.upgrade(engine)
        study_id = store.register_study(engine, write_study(tmp_path, "bench-preload", clips=clips, sound=False))
        server = start_server(url, tmp_path)
        allowed: set[str] = set()
        try:
            with sync_playwright() as pw:
                browser = launch(pw)
                page = browser.new_page()

                def gate(route):
                    clip = route.request.url.split("?")[0].rsplit("/", 1)[-1]
                    if clip in allowed:
                        route.continue_()
                    else:
                        route.abort()

                token = enrol(page, server, study_id, engine)
                state = store.get_state(engine, token)
                if mode == "no-preload":
                    page.route(f"**/clips/{study_id}/**", gate)
                cdp = page.context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.send("Network.emulateNetworkConditions", {
                    "offline": False, "latency": latency, "downloadThroughput": kbps * 1000 / 8,
                    "uploadThroughput": kbps * 1000 / 8})
                rng = random.Random(1)
                for position in range(1, clips + 1):
                    wait_step(engine, token, f"trial:{position}")
                    allowed.add(state.sequence[position - 1])
                    page.locator("h3", has_text=f"Clip {position} of {clips}").first.wait_for(timeout=60_000)
                    start_clip(page)
                    rate_and_continue(page, engine, token, rng)
                deadline = time.monotonic() + 30
                while store.get_state(engine, token).step.key == f"trial:{clips}" and time.monotonic() < deadline:
                    time.sleep(0.2)
                browser.close()
            return [trial_row(engine, state.participant_id, pos) for pos in range(1, clips + 1)]
        finally:
            engine.dispose()
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--latency", type=int, default=100, help="added latency per request, ms")
    parser.add_argument("--kbps", type=int, default=1000, help="download and upload throughput, kbit/s")
    args = parser.parse_args()
    print(f"{args.clips} clips, {args.latency} ms latency, {args.kbps} kbit/s")
    for mode in ("preload", "no-preload"):
        rows = run(mode, args.clips, args.latency, args.kbps)
        print(f"{mode:<11} load_ms by position: {[r['load_ms'] for r in rows]}; "
              f"seconds_stalled: {[r['seconds_stalled'] for r in rows]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
