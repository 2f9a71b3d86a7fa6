"""Durability: SQLite commits with synchronous=FULL in WAL mode, and `kuleshov db backup` makes a
consistent copy while participants are writing, on SQLite (backup API) and PostgreSQL (pg_dump).

Consistency is checked through the writers' transactions: each one stores exactly BATCH events,
so a copy taken mid-transaction would hold a count that is not a multiple of BATCH, or events
of a participant it does not hold.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

import cli
from study import store
from study.errors import UserError

DEMO = Path(__file__).resolve().parent.parent / "stimuli" / "demo" / "study.yaml"
BATCH = 10


class Writers:
    """Threads enrolling participants and storing events in BATCH-sized transactions."""

    def __init__(self, engine, study_id, threads=3):
        self.engine, self.study_id = engine, study_id
        self.stop = threading.Event()
        self.batches = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        try:
            while not self.stop.is_set():
                state = store.enrol(self.engine, self.study_id)
                for b in range(5):
                    events = [{"seq": b * BATCH + i, "position": 1, "event": "timeupdate", "media_time": i * 0.1}
                              for i in range(BATCH)]
                    assert store.record_events(self.engine, state.token, events) == BATCH
                    with self._lock:
                        self.batches += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)

    def __enter__(self):
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 30
        while self.batches < 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # let writing get going before the first copy
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not self.errors, self.errors


def _check_copy(conn) -> dict[str, int]:
    """Row counts of a restored copy, with the invariants of whole transactions."""
    pe = store.playback_events.c
    counts = {"participants": conn.execute(sa.select(sa.func.count()).select_from(store.participants)).scalar_one(),
              "events": conn.execute(sa.select(sa.func.count()).select_from(store.playback_events)).scalar_one()}
    per_participant = conn.execute(sa.select(pe.participant_id, sa.func.count()).group_by(pe.participant_id)).all()
    assert all(n % BATCH == 0 for _, n in per_participant), per_participant
    orphans = conn.execute(sa.select(sa.func.count()).select_from(store.playback_events).where(
        ~pe.participant_id.in_(sa.select(store.participants.c.id)))).scalar_one()
    assert orphans == 0
    assert counts["events"] > 0 and counts["participants"] > 0
    return counts


def test_sqlite_runs_wal_with_synchronous_full(sqlite_url):
    engine = store.make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # 2 = FULL
    engine.dispose()


def test_sqlite_backup_while_writing(tmp_path, sqlite_url):
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    copies = []
    with Writers(engine, study_id):
        for i in range(3):
            copies.append(store.backup(engine, tmp_path / "backups" / f"copy-{i}.db"))
            time.sleep(0.05)
    assert not list((tmp_path / "backups").glob("*.partial"))
    previous = 0
    for made in copies:
        raw = sqlite3.connect(made.path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
        raw.close()
        restored = store.make_engine(f"sqlite:///{made.path}")
        assert store.current_revision(restored) == store.head_revision()
        with restored.connect() as conn:
            counts = _check_copy(conn)
            token = conn.execute(sa.select(store.participants.c.token).limit(1)).scalar_one()
        assert counts["events"] == made.tables["playback_events"]
        assert counts["participants"] == made.tables["participants"]
        assert counts["events"] >= previous  # later copies hold at least as much
        previous = counts["events"]
        assert store.get_state(restored, token).token == token  # a working database, not only a file
        restored.dispose()
    with engine.connect() as conn:
        assert _check_copy(conn)["events"] >= previous
    with pytest.raises(UserError, match="already exists"):
        store.backup(engine, copies[0].path)
    engine.dispose()


def test_cli_db_backup(tmp_path, sqlite_url, capsys):
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    store.register_study(engine, DEMO)
    engine.dispose()
    out = tmp_path / "b.db"
    assert cli.main(["db", "backup", str(out), "--url", sqlite_url]) == 0
    printed = capsys.readouterr().out
    assert f"backup written to {out}" in printed and "studies 1" in printed
    assert cli.main(["db", "backup", str(out), "--url", sqlite_url]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["db", "backup", "--url", sqlite_url]) == 2
    assert "needs the file to write" in capsys.readouterr().err


def test_postgres_backup_while_writing(tmp_path, pg_url):
    from conftest import PG_URL, _pg_admin_engine

    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.fail("pg_dump and pg_restore are needed (Debian: postgresql-client)")
    engine = store.make_engine(pg_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    with Writers(engine, study_id):
        made = store.backup(engine, tmp_path / "kuleshov.dump")
    assert made.path.stat().st_size > 1000
    admin = _pg_admin_engine()
    name = f"kuleshov_restore_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    restored_url = PG_URL.rsplit("/", 1)[0] + "/" + name
    try:
        libpq = restored_url.replace("postgresql+psycopg://", "postgresql://")
        subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "--dbname", libpq, str(made.path)],
                       check=True, capture_output=True, text=True)
        restored = store.make_engine(restored_url)
        assert store.current_revision(restored) == store.head_revision()
        with restored.connect() as conn:
            counts = _check_copy(conn)
        restored.dispose()
        with engine.connect() as conn:
            live = _check_copy(conn)
        assert counts["events"] <= live["events"]
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        engine.dispose()


def test_postgres_backup_without_pg_dump_says_how(tmp_path, pg_url, monkeypatch):
    engine = store.make_engine(pg_url)
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump here
    with pytest.raises(UserError, match="pg_dump is not on PATH") as exc:
        store.backup(engine, tmp_path / "x.dump")
    assert "pg_restore --no-owner" in str(exc.value)
    engine.dispose()


def test_connection_budget_checked_at_start(pg_url, sqlite_url, monkeypatch):
    """Several processes on one PostgreSQL: the start-up check that their pools fit."""
    from study.config import app_processes

    engine = store.make_engine(pg_url)
    with engine.connect() as conn:
        allowed = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
    store.check_connection_budget(engine, 2)
    too_many = allowed // (store.PG_POOL_SIZE + store.PG_MAX_OVERFLOW) + 1
    with pytest.raises(UserError, match=rf"{too_many} app processes x 10 database connections = {too_many * 10}, "
                                        rf"but PostgreSQL allows \d+ \(max_connections {allowed}"):
        store.check_connection_budget(engine, too_many)
    engine.dispose()
    store.check_connection_budget(store.make_engine(sqlite_url), 1000)  # SQLite: nothing to check
    monkeypatch.setenv("KULESHOV_APP_PROCESSES", "two")
    with pytest.raises(UserError, match="whole number"):
        app_processes()
