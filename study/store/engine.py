"""Engines (SQLite pragmas, BEGIN IMMEDIATE), transactions, migrations and backups."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from study.errors import UserError
from study.store.tables import MIGRATIONS_DIR

# --------------------------------------------------------------------------- engine


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// (and postgres://) URLs by pointing them at psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 5


def check_connection_budget(engine: Engine, processes: int) -> None:
    """Refuse to start when `processes` app processes, each with a full pool, could open more
    connections than PostgreSQL allows: past that, participants get "sorry, too many clients
    already" at the busiest moment instead of a clear message now. Nothing to check on SQLite."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        allowed = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
    per_process = PG_POOL_SIZE + PG_MAX_OVERFLOW
    needed = processes * per_process
    if needed > allowed - reserved:
        raise UserError(
            f"{processes} app processes x {per_process} database connections = {needed}, but PostgreSQL "
            f"allows {allowed - reserved} (max_connections {allowed} minus {reserved} reserved for "
            "superusers): run fewer processes (KULESHOV_APP_PROCESSES) or raise max_connections")


def make_engine(url: str | None = None) -> Engine:
    """One engine per process. SQLite: WAL, synchronous=FULL, foreign keys, busy timeout,
    BEGIN IMMEDIATE for writes.

    Deferred BEGIN cannot wait for the write lock when a read-then-write transaction meets
    another writer (it fails at once with "database is locked"), so write transactions start
    with BEGIN IMMEDIATE and queue on the busy timeout instead (see docs/NOTES on concurrency).
    """
    if url is None:
        from study.config import database_url

        url = database_url()
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Hand transaction control to SQLAlchemy's begin event (pysqlite's own BEGIN
            # handling is deferred and emitted lazily).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # FULL: a commit survives a power cut too, not only a crash of the process (NORMAL
            # in WAL mode may lose the last commits). Measured: 0.2 ms per page against 0.04 ms.
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("kuleshov_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        _WRITE_LOCKS[engine] = threading.RLock()
        return engine
    if url.startswith("postgresql"):
        engine = sa.create_engine(url, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW)
        _ping_when_idle(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


# A pooled PostgreSQL connection is pinged before use only when it has lain unused this long.
# pool_pre_ping pinged at every checkout: one more round trip per transaction, a fifth of a
# page's, while participants' threads queued for the pool's connections (bench_sessions). A
# connection in steady use is used unpinged; if the server went away meanwhile, that one
# statement fails, SQLAlchemy recognises the disconnect and replaces every connection of the
# pool, and the next try works.
PG_PING_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    import time

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["kuleshov_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        since = record.info.get("kuleshov_checked_in")
        if since is None or time.monotonic() - since < PG_PING_IDLE_S:
            return  # new, or in steady use
        try:
            ok = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            if not engine.dialect.is_disconnect(exc, dbapi_conn, None):
                raise
            ok = False
        if not ok:
            # The pool drops this connection and checks out another (a new one if need be).
            raise sa.exc.DisconnectionError("stale connection")


# SQLite: one lock per engine that the process's write transactions take before BEGIN IMMEDIATE.
# Waiting for the database's write lock itself is SQLite's busy handler, which sleeps in steps
# that grow to 100 ms whatever the holder's commit takes (a few ms): with 100 participants'
# threads in one process, a page often slept 25-100 ms for a lock that was free after 3 ms
# (benchmarks/bench_sessions.py). Threads of one process now wait on this lock and are woken as
# soon as it is released; other processes still meet on the busy timeout.
_WRITE_LOCKS: "weakref.WeakKeyDictionary[Engine, threading.RLock]" = weakref.WeakKeyDictionary()


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite, a normal transaction elsewhere."""
    lock = _WRITE_LOCKS.get(engine)
    # As long as the busy timeout (30 s), then the error a locked database gives.
    if lock is not None and not lock.acquire(timeout=30):
        raise sa.exc.OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked (waited 30 s)"))
    try:
        with engine.connect().execution_options(kuleshov_write=True) as conn:
            with conn.begin():
                yield conn
    finally:
        if lock is not None:
            lock.release()


@contextmanager
def _read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def _is_pg(conn_or_engine) -> bool:
    return conn_or_engine.dialect.name == "postgresql"


# --------------------------------------------------------------------------- migrations


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(engine_or_url: Engine | str | None = None, revision: str = "head") -> str | None:
    """Bring the database to `revision` (default: the newest). Returns the revision reached.

    On PostgreSQL an advisory lock keeps two processes from migrating at once.
    """
    from alembic import command

    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)
    cfg = _alembic_config()
    with _write(engine) as conn:
        if _is_pg(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7345901)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def cli_db(args) -> int:
    engine = make_engine(getattr(args, "url", None))
    try:
        if args.action == "upgrade":
            rev = upgrade(engine)
            print(f"database at revision {rev} ({_safe_url(engine)})")
        elif args.action == "backup":
            if not args.out:
                raise UserError("kuleshov db backup needs the file to write, e.g. kuleshov db backup backups/2026-12-02.db")
            made = backup(engine, args.out)
            rows = ", ".join(f"{name} {n}" for name, n in made.tables.items() if n)
            print(f"backup written to {made.path} ({_safe_url(engine)}); rows: {rows or 'none'}")
        else:
            rev = current_revision(engine)
            head = head_revision()
            state = "up to date" if rev == head else f"behind: newest is {head}, run `kuleshov db upgrade`"
            print(f"revision {rev or '(none)'}: {state}")
    finally:
        engine.dispose()
    return 0


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


# --------------------------------------------------------------------------- backups

PG_DUMP_GUIDANCE = (
    "pg_dump makes a consistent copy of a running PostgreSQL database (one snapshot, writers "
    "carry on):\n"
    "    pg_dump --format=custom --no-owner --file kuleshov.dump 'postgresql://user@host/db'\n"
    "restore it into an empty database with:\n"
    "    pg_restore --no-owner --dbname 'postgresql://user@host/newdb' kuleshov.dump\n"
    "then point KULESHOV_DATABASE_URL at the new database."
)


@dataclass(frozen=True)
class Backup:
    path: Path
    tables: dict[str, int]  # rows per table: in the copy (SQLite), in the database just after the dump (PostgreSQL)


def backup(engine: Engine, out: str | Path) -> Backup:
    """A consistent copy of the whole database at one moment, taken while participants write.

    SQLite: the online backup API into `out` (a single-file database, checked with
    integrity_check). PostgreSQL: pg_dump's custom format (restore with pg_restore); without
    pg_dump on PATH, a UserError that says how to do it by hand.
    """
    from study.config import check_writable

    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists; give a new file name (a backup never overwrites)")
    check_writable(out, "backup")
    out.parent.mkdir(parents=True, exist_ok=True)
    if engine.dialect.name == "sqlite":
        return _sqlite_backup(engine, out)
    if engine.dialect.name == "postgresql":
        return _pg_backup(engine, out)
    raise UserError(f"backups of {engine.dialect.name} databases are not supported; use its own tools")


def _sqlite_backup(engine: Engine, out: Path) -> Backup:
    import sqlite3

    source = engine.url.database
    if not source or source == ":memory:":
        raise UserError("an in-memory SQLite database cannot be backed up")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(partial)
    try:
        # One step (pages=-1) is one read transaction: in WAL mode writers carry on, and the
        # copy is the database as it was when the step began.
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise UserError(f"the copy failed its integrity check ({check}); the database was not changed")
        names = [r[0] for r in dst.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        tables = {name: dst.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}
    finally:
        dst.close()
        src.close()
    os.replace(partial, out)
    return Backup(out, tables)


def _pg_backup(engine: Engine, out: Path) -> Backup:
    import shutil
    import subprocess

    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise UserError("pg_dump is not on PATH (Debian: apt-get install postgresql-client).\n" + PG_DUMP_GUIDANCE)
    url = engine.url.set(drivername="postgresql")
    env = {**os.environ}
    if url.password:
        env["PGPASSWORD"] = str(url.password)  # not on the command line, where `ps` shows it
    libpq = url.set(password=None).render_as_string(hide_password=False)
    partial = out.with_name(out.name + ".partial")
    done = subprocess.run([pg_dump, "--format=custom", "--no-owner", "--file", str(partial), libpq],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise UserError(f"pg_dump failed: {done.stderr.strip()}\n" + PG_DUMP_GUIDANCE)
    with engine.connect() as conn:
        names = sorted(sa.inspect(conn).get_table_names())
        tables = {name: conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one() for name in names}
    os.replace(partial, out)
    # Counted after the dump (PostgreSQL has no cheap way to count inside pg_dump's snapshot):
    # at least the rows in the copy.
    return Backup(out, tables)


