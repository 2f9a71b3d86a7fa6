"""Crash tests: SIGKILL in the middle of a burst of writes, restart, and check that what was
acknowledged is stored exactly once and that every participant resumes. SQLite and PostgreSQL.

Two writers are killed: the real app process (`cli.py run`) while players post event
batches over HTTP, and a process submitting pages through the store (the same calls the
participant page makes), which prints each page only after its transaction committed.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from study import store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser_util import start_server  # noqa: E402
from crash_worker import answers_for  # noqa: E402

DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
PLAYERS = 4
BATCH = 20


def _post(url: str, token: str, events: list[dict]) -> dict | None:
    """The answer to one batch, or None when none came (the server died)."""
    body = json.dumps({"token": token, "events": events}).encode()
    req = urllib.request.Request(url + "/api/events", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return None


def _batch(n: int) -> list[dict]:
    return [{"seq": n * BATCH + i, "position": 1, "event": "timeupdate", "media_time": i * 0.1,
             "client_time": 1.7e12 + i} for i in range(BATCH)]


def _stored_seqs(engine, participant_id) -> list[int]:
    t = store.playback_events.c
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t.seq).where(t.participant_id == participant_id)).scalars())


def test_app_killed_mid_burst_of_events(db_url, tmp_path):
    engine = store.make_engine(db_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    players = [store.enrol(engine, study_id) for _ in range(PLAYERS)]
    acked: dict[str, set[int]] = defaultdict(set)  # token -> batch numbers answered 200
    sent: dict[str, set[int]] = defaultdict(set)  # token -> batch numbers posted, answered or not
    lock = threading.Lock()

    def burst(url: str, token: str, numbers) -> list[int]:
        """Post batches until the server stops answering; returns the unanswered ones."""
        pending = list(numbers)
        while pending:
            n = pending[0]
            with lock:
                sent[token].add(n)
            answer = _post(url, token, _batch(n))
            if answer is None:
                return pending
            assert answer["refused"] == [] and len(answer["accepted"]) == BATCH, answer
            with lock:
                acked[token].add(n)
            pending.pop(0)
        return []

    first = start_server(db_url, tmp_path)
    failures: list[BaseException] = []

    def player(token: str) -> None:
        try:
            burst(first.url, token, range(10_000))
        except BaseException as exc:  # an assertion in a thread must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=player, args=(p.token,)) for p in players]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while sum(len(v) for v in acked.values()) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(first.proc.pid, signal.SIGKILL)  # mid-burst: players have batches in flight
    first.proc.wait(timeout=10)
    for t in threads:
        t.join(timeout=30)
    assert not failures, failures
    assert sum(len(v) for v in acked.values()) >= 60

    # After the restart, before any resend: everything acknowledged is there, once; beyond it,
    # at most the batches whose answer was lost (stored whole or not at all).
    for p in players:
        seqs = _stored_seqs(engine, p.participant_id)
        assert len(seqs) == len(set(seqs))
        batches = Counter(s // BATCH for s in seqs)
        assert all(n == BATCH for n in batches.values()), batches  # no half batch
        assert acked[p.token] <= set(batches) <= sent[p.token]

    second = start_server(db_url, tmp_path)
    try:
        # The players resend what got no answer, then carry on for a few batches.
        for p in players:
            lost = sorted(sent[p.token] - acked[p.token])
            assert burst(second.url, p.token, lost + [max(sent[p.token]) + k for k in (1, 2, 3)]) == []
    finally:
        second.stop()
    for p in players:
        seqs = _stored_seqs(engine, p.participant_id)
        assert sorted(seqs) == sorted(n * BATCH + i for n in sent[p.token] for i in range(BATCH))
        assert acked[p.token] == sent[p.token]
    engine.dispose()


def test_store_writer_killed_mid_burst_of_pages(db_url, tmp_path):
    engine = store.make_engine(db_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "crash_worker.py"), db_url, study_id, "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    try:
        while sum(line.startswith("ack ") for line in lines) < 120:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the worker stopped: {proc.stderr.read()}")
            lines.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        lines += [line.strip() for line in proc.stdout.read().splitlines()]  # printed before the kill
    finally:
        if proc.poll() is None:
            proc.kill()
    tokens = [line.split()[1] for line in lines if line.startswith("enrolled ")]
    acks = [line.split()[1:] for line in lines if line.startswith("ack ")]
    items_of = {key: int(n) for _, key, n in acks}

    r = store.responses.c
    with engine.connect() as conn:
        groups = conn.execute(sa.select(store.participants.c.token, r.step_key, sa.func.count(),
                                        sa.func.count(sa.distinct(r.item_id)))
                              .join(store.participants, store.participants.c.id == r.participant_id)
                              .group_by(store.participants.c.token, r.step_key)).all()
    stored = {(token, key): (n, distinct) for token, key, n, distinct in groups}
    # Every acknowledged page is stored, once per item.
    for token, key, n in acks:
        if int(n):
            assert stored.get((token, key)) == (int(n), int(n)), (token, key)
    # Nothing half-written: every stored page holds all its items (pages acknowledged by
    # other participants tell how many that is).
    for (token, key), (n, distinct) in stored.items():
        assert n == distinct
        if key in items_of:
            assert n == items_of[key], (token, key, n)

    # Every participant resumes where the store says, and can finish.
    assert len(tokens) >= 4
    for token in tokens:
        state = store.get_state(engine, token)
        done = [key for t, key, _ in acks if t == token]
        if done and state.active:
            assert state.step.key not in done  # never asked again for an acknowledged page
        while state.active:
            meta = {"watched_share": 1.0, "max_time": 8.0, "play_count": 1} if state.step.has_clip else None
            result = store.submit_step(engine, token, state.step.key, answers_for(state), meta)
            assert result.ok, (state.step.key, result.errors, result.message)
            state = result.state
        assert state.completed
    engine.dispose()
