"""The server's timeout job: timeouts are marked on a schedule, by the server, for every study
that takes answers, whether or not a researcher has the dashboard open (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import server
from study import store

from conftest import DEMO_STUDY

TIMEOUT = timedelta(minutes=120)  # timeout_minutes of the demo study


def second_study(tmp_path: Path, study_id: str) -> Path:
    text = DEMO_STUDY.read_text()
    for old, new in {"id: kuleshov-demo": f"id: {study_id}",
                     "manifest: manifest.csv": f"manifest: {DEMO_STUDY.parent / 'manifest.csv'}"}.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{study_id}.yaml"
    path.write_text(text)
    return path


def status(engine, token):
    return store.get_state(engine, token).status


def test_every_study_that_takes_answers_is_checked(engine, tmp_path):
    demo = store.register_study(engine, DEMO_STUDY)
    paused = store.register_study(engine, second_study(tmp_path, "paused-study"))
    closed = store.register_study(engine, second_study(tmp_path, "closed-study"))
    people = {sid: store.enrol(engine, sid).token for sid in (demo, paused, closed)}
    store.set_study_status(engine, paused, "paused")
    store.set_study_status(engine, closed, "closed")

    assert store.mark_all_timed_out(engine, store.utcnow()) == {}
    assert store.mark_all_timed_out(engine, store.utcnow() + TIMEOUT - timedelta(minutes=1)) == {}
    assert store.mark_all_timed_out(engine, store.utcnow() + TIMEOUT + timedelta(minutes=1)) == {demo: 1, paused: 1}
    assert status(engine, people[demo]) == status(engine, people[paused]) == "timed_out"
    assert status(engine, people[closed]) == "started"  # a closed study takes no answers anyway


def test_job_marks_on_its_schedule_with_nobody_watching(engine):
    demo = store.register_study(engine, DEMO_STUDY)
    token = store.enrol(engine, demo).token
    now = [store.utcnow()]  # the fake clock the job reads
    job = server.TimeoutJob(engine, interval_s=0.05, clock=lambda: now[0]).start()
    try:
        time.sleep(0.3)  # several runs with the clock before the timeout
        assert status(engine, token) == "started"
        now[0] += TIMEOUT + timedelta(seconds=1)
        deadline = time.monotonic() + 10
        while status(engine, token) != "timed_out" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status(engine, token) == "timed_out"
    finally:
        job.stop()
    assert not job._thread.is_alive()


def test_job_survives_a_failing_run(engine, monkeypatch, capsys):
    calls = []

    def flaky(engine_, now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return {}

    monkeypatch.setattr(store, "mark_all_timed_out", flaky)
    job = server.TimeoutJob(engine, interval_s=0.02).start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    job.stop()
    assert len(calls) >= 3
    assert "marking timeouts failed (RuntimeError: database went away)" in capsys.readouterr().err


def test_zero_interval_turns_the_job_off(engine):
    job = server.TimeoutJob(engine, interval_s=0).start()
    assert job._thread is None


def test_the_dashboard_only_reads():
    source = (Path(server.ROOT) / "app_pages" / "dashboard.py").read_text()
    assert "mark_timed_out" not in source and "mark_all_timed_out" not in source
