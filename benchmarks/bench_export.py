"""Export benchmark: 2,000 participants x 60 clips x 20 items = 2.4 million answers.

    .venv/bin/python benchmarks/bench_export.py [--participants 2000] [--clips 60] [--db FILE]

The database is a fixture, filled by bulk inserts straight into the tables (walking 2,000 bots
through study.store would take far longer and measures something else): one study with 60
clips (30 matched pairs) and four per-clip instruments with 20 numeric items (sam,
discrete_emotions, moved, ai_qualities), every participant completed, a response per item per
clip, four player events per clip. Then `export_dataset` runs in a fresh child process, so its
peak resident memory (ru_maxrss of the child) is the export's alone, not the fixture's.
Target (issue 5): within 60 s and 2 GB on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STUDY_ID = "bench-export"
ITEMS = ["valence", "arousal", "dominance", *[f"emo_{e}" for e in ("amusement", "sadness", "fear", "anger", "disgust",
                                                                       "tenderness", "awe", "surprise", "unease")],
         "moved_1", "moved_2", "moved_3", "moved_4", "aiq_physics", "aiq_consistency", "aiq_detail", "aiq_story"]
INSTRUMENT = {**{i: "sam" for i in ITEMS[:3]}, **{i: "discrete_emotions" for i in ITEMS[3:12]},
              **{i: "moved" for i in ITEMS[12:16]}, **{i: "ai_qualities" for i in ITEMS[16:]}}


def spec_yaml(n_clips: int) -> str:
    return f"""id: {STUDY_ID}
title: Export benchmark
version: "1"
consent:
  text: Benchmark fixture.
demographics: []
stimuli:
  manifest: manifest.csv
measures:
  per_clip: [sam, discrete_emotions, moved, ai_qualities]
design:
  clips_per_participant: {n_clips}
  ordering: random
  seed: 1
  pairs: both
  label_conditions: [none]
"""


def build(url: str, n_participants: int, n_clips: int) -> None:
    import sqlalchemy as sa

    from study import store

    engine = store.make_engine(url)
    store.upgrade(engine)
    rng = random.Random(1)
    now = datetime.now(timezone.utc)
    clips = [(f"{src}_{k:02d}", src, f"pair_{k:02d}") for k in range(n_clips // 2) for src in ("human", "ai")]
    text = spec_yaml(n_clips)
    import hashlib

    with engine.begin() as conn:
        conn.execute(store.studies.insert().values(
            id=STUDY_ID, title="Export benchmark", version="1", status="open", spec_yaml=text,
            spec_hash=hashlib.sha256(text.encode()).hexdigest(),
            manifest=[{"id": c, "source": s, "pair_id": p, "file": f"{c}.mp4"} for c, s, p in clips],
            participants_enrolled=n_participants, created_at=now, updated_at=now))
        conn.execute(store.stimuli.insert(), [
            {"study_id": STUDY_ID, "stimulus_id": c, "source": s, "pair_id": p, "file": f"{c}.mp4", "sha256": "0" * 64,
             "duration_s": 10.0, "width": 640, "height": 360, "video_codec": "h264",
             "provenance": {"credit": "benchmark", "licence": "CC0-1.0"}} for c, s, p in clips])
    chunk = 100
    for start in range(0, n_participants, chunk):
        people, planned, trials, responses, events = [], [], [], [], []
        for n in range(start, min(start + chunk, n_participants)):
            pid = n + 1
            t0 = now - timedelta(minutes=30)
            people.append({"id": pid, "study_id": STUDY_ID, "token": f"tok{pid:08d}{rng.getrandbits(64):016x}",
                           "pseudonym": f"P{pid:04d}", "participant_number": pid, "prolific_pid": f"pro{pid:012d}",
                           "prolific_study_id": "bench", "prolific_session_id": f"s{pid}",
                           "label_condition": "none", "list_index": 0, "status": "completed", "attention_failed": 0,
                           "step_index": 3 + n_clips, "step_key": "complete", "is_pilot": False,
                           "study_version": "1", "started_at": t0, "updated_at": now, "completed_at": now})
            order = rng.sample(range(n_clips), n_clips)
            for pos, k in enumerate(order, start=1):
                clip = clips[k][0]
                tid = (pid - 1) * n_clips + pos
                planned.append({"participant_id": pid, "position": pos, "stimulus_id": clip, "kind": "main"})
                trials.append({"id": tid, "participant_id": pid, "position": pos, "stimulus_id": clip,
                               "started_at": t0, "submitted_at": t0, "watched_share": 1.0, "max_time": 10.0,
                               "play_count": 1, "item_order": ITEMS})
                for j, item in enumerate(ITEMS, start=1):
                    responses.append({"participant_id": pid, "trial_id": tid, "step_key": f"trial:{pos}",
                                      "instrument_id": INSTRUMENT[item], "item_id": item,
                                      "value_num": float(rng.randint(1, 7)), "value_text": None, "untouched": False,
                                      "shown_position": j, "response_time_ms": rng.randint(500, 5000),
                                      "created_at": now})
                for seq, ev in enumerate(("start_click", "play", "timeupdate", "ended")):
                    events.append({"participant_id": pid, "position": pos, "stimulus_id": clip, "seq": seq,
                                   "event": ev, "media_time": seq * 3.0, "client_time": 1.7e12 + seq,
                                   "server_time": now, "detail": None})
        with engine.begin() as conn:
            for table, rows in ((store.participants, people), (store.planned_trials, planned),
                                (store.trials, trials), (store.responses, responses),
                                (store.playback_events, events)):
                conn.execute(table.insert(), rows)
        print(f"  fixture: {min(start + chunk, n_participants)} of {n_participants} participants", flush=True)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(store.responses)).scalar_one()
    engine.dispose()
    print(f"  fixture: {n:,} responses")


CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from study import store
from analysis.export import export_dataset
engine = store.make_engine({url!r})
t = time.perf_counter()
folder = export_dataset(engine, {study!r}, {out!r})
took = time.perf_counter() - t
size = sum(p.stat().st_size for p in folder.iterdir())
print(json.dumps({{"seconds": took, "bytes": size}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=2000)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--db", help="SQLite file to (re)use; default a temporary file")
    ap.add_argument("--url", help="database URL instead of a SQLite file (e.g. an empty PostgreSQL database)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kuleshov-bench-"))
    url = args.url or f"sqlite:///{Path(args.db) if args.db else tmp / 'bench.db'}"
    fresh = args.url is None and not (args.db and Path(args.db).exists())
    if fresh or args.url:
        t = time.perf_counter()
        build(url, args.participants, args.clips)
        print(f"fixture built in {time.perf_counter() - t:.1f} s")
    out = tmp / "dataset"
    code = CHILD.format(root=str(ROOT), url=url, study=STUDY_ID, out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    if not args.db and not args.url:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode:
        print(proc.stdout, proc.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: kilobytes
    n = args.participants * args.clips * len(ITEMS)
    print(f"export of {args.participants} participants x {args.clips} clips x {len(ITEMS)} items = {n:,} responses "
          f"({url.split(':')[0]}): {result['seconds']:.1f} s, peak RSS {peak_mb:.0f} MB, "
          f"folder {result['bytes'] / 1e6:.0f} MB")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    ok = result["seconds"] <= 60 and peak_mb <= 2048
    print("within target (60 s, 2 GB)" if ok else "OUTSIDE target (60 s, 2 GB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
