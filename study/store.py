"""The database: tables, engine, migrations, and the only functions that write.

Everything a participant gives goes through one of the functions below, each in one short
transaction. Readers (analysis/load.py, the dashboard) may SELECT from these tables directly;
the table and column names are part of the contract and change only through a migration.

Tables (all times UTC):

- ``studies``: one row per study id. ``spec_yaml`` is the exact study file as registered,
  ``spec_hash`` its sha256, ``manifest`` the manifest rows as JSON; ``status`` is
  open | paused | closed. It describes the newest version, the one new participants get.
- ``study_versions``: (study_id, version) -> that version's frozen ``spec_yaml``, ``spec_hash``,
  ``manifest`` and ``stimuli_dir``, kept for good: each participant is served the version in
  their ``study_version``.
- ``stimuli``: (study_id, stimulus_id) with source (human | ai), pair_id, sha256, duration and
  provenance (credit, licence, generator, version, prompt, seed, notes) as JSON.
- ``participants``: ``token`` (secret, in the participant's URL), ``pseudonym`` (P0001 ..., the
  only id in exports), Prolific ids, ``label_condition``, ``list_index``, ``participant_number``
  (1, 2, ... in enrolment order), ``status`` (see STATUSES), ``step_index``/``step_key`` (where
  they are in study.flow's step list), ``attention_failed`` (count), ``excluded_reason``.
- ``planned_trials``: the assigned clip sequence; position 0 is the practice clip
  (kind practice), positions 1..n the main clips (kind main).
- ``trials``: one row per clip actually shown (position as in planned_trials): when it started,
  when its ratings were submitted, ``watched_share`` (0..1, the max reported), ``max_time``,
  ``play_count`` and ``item_order`` (item ids in the order shown).
- ``responses``: one row per answered item. ``step_key`` is the flow step: ``trial:<pos>`` for
  clip ratings, ``practice``, ``mood_pre``, ``mood_post``, ``demographics``, ``consent``,
  ``attention:<id>``. Unique (participant_id, step_key, item_id). ``value_num`` holds numbers,
  ``value_text`` text and choices; ``untouched`` marks a slider left at its start (value null).
- ``playback_events`` and ``continuous_samples``: what the player reported, unique by
  (participant_id, position, seq) so a resent batch is stored once.
- ``audit_log``: researcher and system actions; ``participant_ref`` is a hash of the pseudonym,
  never a raw id.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from study import flow
from study.errors import Problem, UserError
from study.texts import t

STUDY_STATUSES = ("open", "paused", "closed")
# started: enrolled, consent not yet given; declined: said no at consent.
STATUSES = ("started", "in_progress", "completed", "withdrawn", "declined", "timed_out")
ACTIVE_STATUSES = flow.ACTIVE_STATUSES

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- tables


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


TS = sa.DateTime(timezone=True)


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(300))
    version: Mapped[str] = mapped_column(sa.String(50))
    status: Mapped[str] = mapped_column(sa.String(20), default="open")
    spec_yaml: Mapped[str] = mapped_column(sa.Text)
    spec_hash: Mapped[str] = mapped_column(sa.String(64))
    manifest: Mapped[Any] = mapped_column(sa.JSON)
    # Absolute folder of the stimulus manifest when registered: the server serves clip files
    # from here (and only from here), also after a restart without the study file at hand.
    stimuli_dir: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    # Participants ever enrolled (deleted ones included): numbers and pseudonyms are never reused.
    participants_enrolled: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


class StudyVersionRow(Base):
    """Every version of a study file ever registered, frozen (migration 0004). Participants are
    served the version they enrolled under (participants.study_version); `studies` holds the
    newest, which new participants get."""

    __tablename__ = "study_versions"

    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    spec_yaml: Mapped[str] = mapped_column(sa.Text)
    spec_hash: Mapped[str] = mapped_column(sa.String(64))
    manifest: Mapped[Any] = mapped_column(sa.JSON)
    stimuli_dir: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(TS)


class StimulusRow(Base):
    __tablename__ = "stimuli"

    study_id: Mapped[str] = mapped_column(
        sa.ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    stimulus_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(10))
    pair_id: Mapped[str | None] = mapped_column(sa.String(100))
    title: Mapped[str | None] = mapped_column(sa.String(300))
    file: Mapped[str | None] = mapped_column(sa.String(500))
    url: Mapped[str | None] = mapped_column(sa.String(1000))
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    video_codec: Mapped[str | None] = mapped_column(sa.String(50))
    provenance: Mapped[Any | None] = mapped_column(sa.JSON)


class ParticipantRow(Base):
    __tablename__ = "participants"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "pseudonym"),
        sa.UniqueConstraint("study_id", "participant_number"),
        sa.UniqueConstraint("study_id", "prolific_pid"),
        sa.Index(None, "study_id", "status"),
        sa.Index(None, "study_id", "is_pilot", "list_index"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(sa.ForeignKey("studies.id", ondelete="CASCADE"))
    token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    pseudonym: Mapped[str] = mapped_column(sa.String(20))
    participant_number: Mapped[int] = mapped_column(sa.Integer)
    prolific_pid: Mapped[str | None] = mapped_column(sa.String(100))
    prolific_study_id: Mapped[str | None] = mapped_column(sa.String(100))
    prolific_session_id: Mapped[str | None] = mapped_column(sa.String(100))
    label_condition: Mapped[str] = mapped_column(sa.String(20))
    list_index: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(20), default="started")
    excluded_reason: Mapped[str | None] = mapped_column(sa.String(300))
    attention_failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    step_index: Mapped[int] = mapped_column(sa.Integer, default=0)
    step_key: Mapped[str] = mapped_column(sa.String(100))
    is_pilot: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    study_version: Mapped[str] = mapped_column(sa.String(50))
    user_agent: Mapped[str | None] = mapped_column(sa.String(500))
    # screen size, touch, browser language ... as reported by the player (migration 0002)
    device_info: Mapped[Any | None] = mapped_column(sa.JSON)
    started_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    completed_at: Mapped[datetime | None] = mapped_column(TS)
    withdrawn_at: Mapped[datetime | None] = mapped_column(TS)


class PlannedTrialRow(Base):
    __tablename__ = "planned_trials"

    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    stimulus_id: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(10))  # main | practice


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (sa.UniqueConstraint("participant_id", "position"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[int] = mapped_column(sa.ForeignKey("participants.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    stimulus_id: Mapped[str] = mapped_column(sa.String(100))
    started_at: Mapped[datetime | None] = mapped_column(TS)
    submitted_at: Mapped[datetime | None] = mapped_column(TS)
    watched_share: Mapped[float | None] = mapped_column(sa.Float)
    max_time: Mapped[float | None] = mapped_column(sa.Float)
    play_count: Mapped[int | None] = mapped_column(sa.Integer)
    item_order: Mapped[Any | None] = mapped_column(sa.JSON)


class ResponseRow(Base):
    __tablename__ = "responses"
    __table_args__ = (
        sa.UniqueConstraint("participant_id", "step_key", "item_id"),
        sa.Index(None, "trial_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[int] = mapped_column(sa.ForeignKey("participants.id", ondelete="CASCADE"))
    trial_id: Mapped[int | None] = mapped_column(sa.ForeignKey("trials.id", ondelete="CASCADE"))
    step_key: Mapped[str] = mapped_column(sa.String(100))
    instrument_id: Mapped[str] = mapped_column(sa.String(100))
    item_id: Mapped[str] = mapped_column(sa.String(100))
    value_num: Mapped[float | None] = mapped_column(sa.Float)
    value_text: Mapped[str | None] = mapped_column(sa.Text)
    untouched: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    shown_position: Mapped[int | None] = mapped_column(sa.Integer)
    response_time_ms: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(TS)


class PlaybackEventRow(Base):
    __tablename__ = "playback_events"
    __table_args__ = (
        sa.UniqueConstraint("participant_id", "position", "seq"),
        # playback problems by clip on the dashboard (migration 0002)
        sa.Index(None, "stimulus_id", "event"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[int] = mapped_column(sa.ForeignKey("participants.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    stimulus_id: Mapped[str] = mapped_column(sa.String(100))
    seq: Mapped[int] = mapped_column(sa.Integer)
    event: Mapped[str] = mapped_column(sa.String(30))
    media_time: Mapped[float | None] = mapped_column(sa.Float)
    client_time: Mapped[float | None] = mapped_column(sa.Float)  # ms since epoch, browser clock
    server_time: Mapped[datetime] = mapped_column(TS)
    detail: Mapped[Any | None] = mapped_column(sa.JSON)


class ContinuousSampleRow(Base):
    __tablename__ = "continuous_samples"

    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    stimulus_id: Mapped[str] = mapped_column(sa.String(100))
    media_time: Mapped[float | None] = mapped_column(sa.Float)
    value: Mapped[float] = mapped_column(sa.Float)
    client_time: Mapped[float | None] = mapped_column(sa.Float)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (sa.Index(None, "study_id", "at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(TS)
    actor: Mapped[str] = mapped_column(sa.String(100))
    action: Mapped[str] = mapped_column(sa.String(50))
    study_id: Mapped[str | None] = mapped_column(sa.String(100))
    participant_ref: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[Any | None] = mapped_column(sa.JSON)


studies = StudyRow.__table__
study_versions = StudyVersionRow.__table__
stimuli = StimulusRow.__table__
participants = ParticipantRow.__table__
planned_trials = PlannedTrialRow.__table__
trials = TrialRow.__table__
responses = ResponseRow.__table__
playback_events = PlaybackEventRow.__table__
continuous_samples = ContinuousSampleRow.__table__
audit_log = AuditRow.__table__


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

        return engine
    if url.startswith("postgresql"):
        return sa.create_engine(url, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW, pool_pre_ping=True)
    return sa.create_engine(url, pool_pre_ping=True)


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: BEGIN IMMEDIATE on SQLite, a normal transaction elsewhere."""
    with engine.connect().execution_options(kuleshov_write=True) as conn:
        with conn.begin():
            yield conn


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


# --------------------------------------------------------------------------- audit


def participant_ref(study_id: str, pseudonym: str) -> str:
    """What the audit log keeps about a participant: a hash of the pseudonym, not a raw id."""
    return hashlib.sha256(f"{study_id}:{pseudonym}".encode()).hexdigest()[:16]


def _audit(conn: Connection, actor: str, action: str, study_id: str | None = None,
           participant_ref: str | None = None, detail: dict | None = None) -> None:
    conn.execute(audit_log.insert().values(
        at=utcnow(), actor=actor, action=action, study_id=study_id,
        participant_ref=participant_ref, detail=detail,
    ))


def audit(engine: Engine, actor: str, action: str, study_id: str | None = None,
          participant_ref: str | None = None, detail: dict | None = None) -> None:
    """Record a researcher or system action (login failures, exports, status changes ...)."""
    with _write(engine) as conn:
        _audit(conn, actor, action, study_id, participant_ref, detail)


# --------------------------------------------------------------------------- studies


class StudyClosed(UserError):
    """The study is not taking new participants; the message is meant for the participant."""


@dataclass
class StudyInfo:
    id: str
    title: str
    version: str
    status: str
    spec_hash: str
    spec_yaml: str
    study: Any  # study.protocol.Study, parsed from spec_yaml
    manifest: list[dict]
    participants_enrolled: int
    created_at: datetime
    updated_at: datetime
    manifest_dir: str | None = None  # where the clip files are (studies.stimuli_dir)


def _parse_spec(spec_yaml: str, study_id: str):
    """The Study model from the frozen YAML text (no file on disk needed)."""
    import yaml

    from study.protocol import Study

    try:
        # Cross-checks ran when the file was registered; the frozen text is taken as it was.
        return Study.model_validate(yaml.safe_load(spec_yaml), context={"skip_cross_checks": True})
    except Exception as exc:  # a stored spec that no longer validates: schema changed under it
        raise UserError(
            f"The stored study file of {study_id!r} no longer passes the current schema ({exc.__class__.__name__}). "
            "Re-register it with a new version."
        ) from exc


def _stimulus_rows(stims) -> tuple[list[dict], list[dict]]:
    """(rows for the stimuli table, JSON snapshot of the manifest) from probed Stimulus models."""
    rows, snapshot = [], []
    for s in stims:
        data = s.model_dump(mode="json")
        snapshot.append(data)
        rows.append({
            "stimulus_id": s.id, "source": s.source, "pair_id": s.pair_id or None, "title": s.title or None,
            "file": s.file, "url": s.url, "sha256": s.sha256, "duration_s": s.duration_s,
            "width": s.width, "height": s.height, "video_codec": s.video_codec,
            "provenance": {k: data.get(k) for k in
                           ("credit", "licence", "generator", "generator_version", "prompt", "seed", "notes")},
        })
    return rows, snapshot


def register_study(engine: Engine, study_path: str | Path, actor: str = "cli") -> str:
    """Store a study file (frozen text + sha256) and its probed clips; returns the study id.

    Registering the same file again changes nothing. A changed file under the same id and
    version is refused once real (non-pilot) participants of that version exist: bump `version`
    instead, so the data always say which study file they were collected under. Each version is
    kept in `study_versions`; the one registered last is the study's current version, which new
    participants get, while everyone already enrolled finishes under their own.
    """
    from study.protocol import load_study
    from study.stimuli import load_probed

    path = Path(study_path)
    spec = load_study(path)  # reports every problem of the file before anything is stored
    raw = path.read_bytes()
    spec_yaml = raw.decode("utf-8")
    stims, problems = load_probed(spec.manifest_path, hash=True)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise UserError(f"Cannot register {path}: its stimulus manifest has problems.", errors)
    rows, snapshot = _stimulus_rows(stims)
    stimuli_dir = str(spec.manifest_path.resolve().parent)
    # The hash of the file's bytes, as `study.protocol.study_hash` computes it (CRLF kept).
    spec_hash = hashlib.sha256(raw).hexdigest()
    now = utcnow()
    version = str(spec.version)
    with _write(engine) as conn:
        old = conn.execute(sa.select(studies).where(studies.c.id == spec.id)).mappings().first()
        frozen = conn.execute(sa.select(study_versions).where(
            study_versions.c.study_id == spec.id, study_versions.c.version == version)).mappings().first()
        if old is not None and old["version"] == version and frozen is not None:
            same = old["spec_hash"] == spec_hash and old["manifest"] == snapshot
            if same:
                if old["stimuli_dir"] != stimuli_dir:  # the same files, moved: follow them
                    conn.execute(studies.update().where(studies.c.id == spec.id).values(stimuli_dir=stimuli_dir))
                    conn.execute(study_versions.update().where(
                        study_versions.c.study_id == spec.id, study_versions.c.version == version)
                        .values(stimuli_dir=stimuli_dir))
                return spec.id
        changed = frozen is not None and (frozen["spec_hash"] != spec_hash or frozen["manifest"] != snapshot)
        if changed:
            # Pilots may be moved onto an edited file; real participants never are.
            real = conn.execute(sa.select(sa.func.count()).select_from(participants).where(
                participants.c.study_id == spec.id, participants.c.is_pilot.is_(False),
                participants.c.study_version == version)).scalar_one()
            if real:
                raise UserError(
                    f"Study {spec.id!r} version {spec.version} already has {real} participant(s), and the "
                    f"study file or its clips have changed since it was registered. Change `version` in "
                    f"{path} to record the change, then register again."
                )
        if old is not None:
            conn.execute(studies.update().where(studies.c.id == spec.id).values(
                title=spec.title, version=version, spec_yaml=spec_yaml, spec_hash=spec_hash,
                manifest=snapshot, stimuli_dir=stimuli_dir, updated_at=now))
            action = "study_updated"
            detail = {"old_version": old["version"], "old_hash": old["spec_hash"],
                      "version": version, "hash": spec_hash}
        else:
            conn.execute(studies.insert().values(
                id=spec.id, title=spec.title, version=version, status="open", spec_yaml=spec_yaml,
                spec_hash=spec_hash, manifest=snapshot, stimuli_dir=stimuli_dir, participants_enrolled=0,
                created_at=now, updated_at=now))
            action = "study_registered"
            detail = {"version": version, "hash": spec_hash}
        frozen_values = {"spec_yaml": spec_yaml, "spec_hash": spec_hash, "manifest": snapshot,
                         "stimuli_dir": stimuli_dir}
        if frozen is None:
            conn.execute(study_versions.insert().values(study_id=spec.id, version=version, registered_at=now,
                                                        **frozen_values))
        elif changed or frozen["stimuli_dir"] != stimuli_dir:
            conn.execute(study_versions.update().where(
                study_versions.c.study_id == spec.id, study_versions.c.version == version)
                .values(registered_at=now if changed else frozen["registered_at"], **frozen_values))
        # Clips dropped from the manifest keep their rows: earlier participants may have seen them.
        existing = set(conn.execute(sa.select(stimuli.c.stimulus_id).where(stimuli.c.study_id == spec.id)).scalars())
        for row in rows:
            if row["stimulus_id"] in existing:
                conn.execute(stimuli.update().where(
                    stimuli.c.study_id == spec.id, stimuli.c.stimulus_id == row["stimulus_id"]).values(**row))
            else:
                conn.execute(stimuli.insert().values(study_id=spec.id, **row))
        _audit(conn, actor, action, spec.id, detail=detail)
    return spec.id


def _study_row(conn: Connection, study_id: str, lock: bool = False):
    q = sa.select(studies).where(studies.c.id == study_id)
    if lock and _is_pg(conn):
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        known = list(conn.execute(sa.select(studies.c.id).order_by(studies.c.id)).scalars())
        raise UserError(f"No study with id {study_id!r} in the database"
                        + (f" (known: {', '.join(known)})." if known else " (none registered yet: run `kuleshov study register STUDY.yaml`)."))
    return row


def set_study_status(engine: Engine, study_id: str, status: str, actor: str = "cli") -> None:
    """Open, pause or close a study. Paused: only pilot links enrol; closed: nobody enrols or submits."""
    if status not in STUDY_STATUSES:
        raise UserError(f"Study status must be one of {', '.join(STUDY_STATUSES)}, not {status!r}.")
    with _write(engine) as conn:
        row = _study_row(conn, study_id, lock=True)
        if row["status"] == status:
            return
        conn.execute(studies.update().where(studies.c.id == study_id).values(status=status, updated_at=utcnow()))
        _audit(conn, actor, "study_status", study_id, detail={"from": row["status"], "to": status})


def list_studies(engine: Engine) -> list[dict]:
    """Every registered study with its participant counts by status (keys: id, title, version,
    status, spec_hash, created_at, updated_at, participants, by_status)."""
    with _read(engine) as conn:
        rows = conn.execute(sa.select(studies.c.id, studies.c.title, studies.c.version, studies.c.status,
                                      studies.c.spec_hash, studies.c.created_at, studies.c.updated_at)
                            .order_by(studies.c.created_at)).mappings().all()
        counts = conn.execute(sa.select(participants.c.study_id, participants.c.status, sa.func.count())
                              .group_by(participants.c.study_id, participants.c.status)).all()
    out = []
    for r in rows:
        by_status = {status: n for sid, status, n in counts if sid == r["id"]}
        out.append({**dict(r), "participants": sum(by_status.values()), "by_status": by_status})
    return out


def get_study(engine: Engine, study_id: str, version: str | None = None) -> StudyInfo:
    """The study as registered: the frozen spec parsed into protocol.Study, and its status.

    Without `version` the current (newest registered) version; with it, that version's frozen
    file and manifest (the status is always the study's current one).
    """
    with _read(engine) as conn:
        row = _study_row(conn, study_id)
        if version is not None and str(version) != row["version"]:
            frozen = conn.execute(sa.select(study_versions).where(
                study_versions.c.study_id == study_id, study_versions.c.version == str(version))).mappings().first()
            if frozen is None:
                known = [v["version"] for v in _versions(conn, study_id)]
                raise UserError(f"Study {study_id!r} has no version {version!r} (registered: {', '.join(known)}).")
            row = {**row, "version": frozen["version"], "spec_yaml": frozen["spec_yaml"],
                   "spec_hash": frozen["spec_hash"], "manifest": frozen["manifest"],
                   "stimuli_dir": frozen["stimuli_dir"], "updated_at": frozen["registered_at"]}
    return StudyInfo(
        id=row["id"], title=row["title"], version=row["version"], status=row["status"],
        spec_hash=row["spec_hash"], spec_yaml=row["spec_yaml"],
        study=_context(row).study, manifest=row["manifest"],
        participants_enrolled=row["participants_enrolled"], created_at=row["created_at"],
        updated_at=row["updated_at"], manifest_dir=row["stimuli_dir"],
    )


def _versions(conn: Connection, study_id: str) -> list[dict]:
    v = study_versions.c
    rows = conn.execute(sa.select(v.version, v.spec_yaml, v.spec_hash, v.registered_at)
                        .where(v.study_id == study_id).order_by(v.registered_at, v.version)).mappings().all()
    return [dict(r) for r in rows]


def list_versions(engine: Engine, study_id: str) -> list[dict]:
    """Every registered version of a study, oldest first: version, spec_yaml (the frozen file),
    spec_hash, registered_at, participants (enrolled under it), current (the one new
    participants get)."""
    with _read(engine) as conn:
        row = _study_row(conn, study_id)
        out = _versions(conn, study_id)
        counts = dict(conn.execute(sa.select(participants.c.study_version, sa.func.count())
                                   .where(participants.c.study_id == study_id)
                                   .group_by(participants.c.study_version)).all())
    for v in out:
        v["participants"] = counts.get(v["version"], 0)
        v["current"] = v["version"] == row["version"]
    return out


def resolve_study_id(target: str) -> str:
    """A study id from a CLI argument that may be a study file or an id."""
    path = Path(target)
    if target.endswith((".yaml", ".yml")) or path.is_file():
        from study.protocol import load_study

        return load_study(path).id
    return target


def cli_study(args) -> int:
    engine = make_engine(getattr(args, "url", None))
    try:
        if args.action == "register":
            if not args.target:
                raise UserError("Give the study file to register: kuleshov study register STUDY.yaml")
            upgrade(engine)
            study_id = register_study(engine, args.target)
            info = get_study(engine, study_id)
            print(f"registered {study_id} version {info.version} (sha256 {info.spec_hash[:12]}), status {info.status}")
        elif args.action == "list":
            rows = list_studies(engine)
            if not rows:
                print("no studies registered")
            for r in rows:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(r["by_status"].items())) or "no participants"
                print(f"{r['id']}\tv{r['version']}\t{r['status']}\t{r['title']}\t({counts})")
        else:
            if not args.target:
                raise UserError(f"Give the study id: kuleshov study {args.action} STUDY_ID")
            status = {"open": "open", "pause": "paused", "close": "closed"}[args.action]
            study_id = resolve_study_id(args.target)
            set_study_status(engine, study_id, status)
            print(f"{study_id}: {status}")
    finally:
        engine.dispose()
    return 0


# --------------------------------------------------------------------------- study context (cached)


@dataclass(frozen=True)
class _Context:
    """What every participant of one registered study version shares, parsed once per process."""

    study: Any
    spec: Any  # design.DesignSpec
    clips: tuple  # design.Clip, main clips only
    practice_id: str | None
    stimuli: dict  # stimulus_id -> {source, title, file, url, duration_s, pair_id}


_CONTEXTS: dict[tuple, _Context] = {}
_STEPS: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 256


def _context(row) -> _Context:
    from study.design import Clip, DesignSpec

    key = (row["id"], row["spec_hash"], str(row["updated_at"]))
    ctx = _CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    study = _parse_spec(row["spec_yaml"], row["id"])
    practice_id = getattr(study.stimuli, "practice", None) or None
    stim = {}
    for s in row["manifest"] or []:
        stim[s["id"]] = {"stimulus_id": s["id"], "source": s["source"], "title": s.get("title") or s["id"],
                         "file": s.get("file"), "url": s.get("url"), "duration_s": s.get("duration_s"),
                         "pair_id": s.get("pair_id") or None}
    clips = tuple(Clip(id=s["stimulus_id"], source=s["source"], pair_id=s["pair_id"])
                  for sid, s in stim.items() if sid != practice_id)
    d = study.design
    spec = DesignSpec(clips_per_participant=d.clips_per_participant, ordering=d.ordering, seed=d.seed,
                      pairs=d.pairs, label_conditions=tuple(d.label_conditions))
    ctx = _Context(study=study, spec=spec, clips=clips, practice_id=practice_id, stimuli=stim)
    with _CACHE_LOCK:
        if len(_CONTEXTS) >= _CACHE_MAX:
            _CONTEXTS.clear()
        _CONTEXTS[key] = ctx
    return ctx


def _steps(ctx: _Context, ctx_key: tuple, sequence: tuple[str, ...], practice_id: str | None) -> tuple:
    key = (ctx_key, sequence, practice_id)
    steps = _STEPS.get(key)
    if steps is None:
        steps = tuple(flow.build_steps(ctx.study, list(sequence), practice_id))
        with _CACHE_LOCK:
            if len(_STEPS) >= 4096:
                _STEPS.clear()
            _STEPS[key] = steps
    return steps


# --------------------------------------------------------------------------- participants


@dataclass
class ParticipantState:
    """Where one participant is, with everything the participant page needs to render it."""

    participant_id: int
    token: str
    pseudonym: str
    study_id: str
    status: str
    label_condition: str
    list_index: int
    participant_number: int
    is_pilot: bool
    step_index: int
    step: Any  # flow.Step
    steps: tuple  # every flow.Step of this participant's session
    sequence: list[str]  # main clip ids in order (position 1..n)
    practice_id: str | None
    study: Any  # protocol.Study as registered
    stimuli: dict  # stimulus_id -> {source, title, file, url, duration_s, pair_id}
    item_order: list[str]  # item ids of the current step in the order to show them
    answers: dict  # item_id -> flow.Answer already stored for the current step
    attention_failed: int = 0
    excluded_reason: str | None = None
    prolific_pid: str | None = None
    study_status: str = "open"

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def step_key(self) -> str:
        return self.step.key

    @property
    def progress(self) -> float:
        """Share of the session done, 0..1, for a progress bar."""
        return min(1.0, self.step_index / max(1, len(self.steps) - 1))

    @property
    def completion_code(self) -> str | None:
        return getattr(self.study.completion, "code", None) if self.completed else None

    @property
    def redirect_url(self) -> str | None:
        return getattr(self.study.completion, "redirect_url", None) if self.completed else None

    @property
    def debrief(self) -> list[dict]:
        """The main clips this participant saw, in order, with which were AI-generated."""
        from study.flow import debrief_info

        return debrief_info(self.study, self.stimuli, self.sequence)


@dataclass
class SubmitResult:
    """What happened to a submitted page. ok False: nothing was written; see errors / message."""

    ok: bool
    state: ParticipantState
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    duplicate: bool = False  # the step had already been stored (double click, second tab)


_P_COLUMNS = [participants.c[name] for name in (
    "id", "study_id", "token", "pseudonym", "participant_number", "prolific_pid", "label_condition",
    "list_index", "status", "excluded_reason", "attention_failed", "step_index", "step_key", "is_pilot",
)]
# The participant's own version of the study file; the study's current file only for
# participants of a version registered before study_versions existed (migration 0004).
_V = study_versions
_S_COLUMNS = [studies.c.id.label("s_id"), studies.c.status.label("s_status"),
              participants.c.study_version.label("s_version"),
              sa.func.coalesce(_V.c.spec_yaml, studies.c.spec_yaml).label("s_yaml"),
              sa.func.coalesce(_V.c.spec_hash, studies.c.spec_hash).label("s_hash"),
              sa.func.coalesce(_V.c.registered_at, studies.c.updated_at).label("s_updated"),
              sa.case((_V.c.version.is_(None), studies.c.manifest), else_=_V.c.manifest).label("s_manifest")]


_LOAD = (sa.select(*_P_COLUMNS, *_S_COLUMNS).join(studies, studies.c.id == participants.c.study_id)
         .outerjoin(_V, (_V.c.study_id == participants.c.study_id) & (_V.c.version == participants.c.study_version))
         .where(participants.c.token == sa.bindparam("token")))
_LOAD_FOR_UPDATE = _LOAD.with_for_update(of=participants)


def _load(conn: Connection, token: str, lock: bool = False):
    """(participant row, study row as a dict shaped like `studies`) for a token, or None.

    The study row is the participant's version (spec_yaml, spec_hash, manifest; updated_at is
    when that version was registered), so a newer version registered mid-session never changes
    their steps; status is the study's current one.
    """
    if not token or not isinstance(token, str) or len(token) > 64:
        return None
    q = _LOAD_FOR_UPDATE if lock and _is_pg(conn) else _LOAD
    p = conn.execute(q, {"token": token}).mappings().first()
    if p is None:
        return None
    srow = {"id": p["s_id"], "status": p["s_status"], "version": p["s_version"], "spec_yaml": p["s_yaml"],
            "spec_hash": p["s_hash"], "updated_at": p["s_updated"], "manifest": p["s_manifest"]}
    return p, srow


def _ctx_key(srow) -> tuple:
    return (srow["id"], srow["spec_hash"], str(srow["updated_at"]))


_PLANNED = (sa.select(planned_trials.c.position, planned_trials.c.stimulus_id, planned_trials.c.kind)
            .where(planned_trials.c.participant_id == sa.bindparam("pid")).order_by(planned_trials.c.position))
_PLANNED_CACHE: dict[tuple[int, str], tuple[tuple[str, ...], str | None]] = {}


def _planned(conn: Connection, participant_id: int, token: str) -> tuple[tuple[str, ...], str | None]:
    """(main clip ids by position, practice clip id). Never changes after enrolment, so it is
    cached per process; the key includes the token because SQLite may reuse a deleted row's id."""
    key = (participant_id, token)
    hit = _PLANNED_CACHE.get(key)
    if hit is not None:
        return hit
    rows = conn.execute(_PLANNED, {"pid": participant_id}).all()
    practice = next((sid for pos, sid, kind in rows if kind == "practice"), None)
    value = tuple(sid for pos, sid, kind in rows if kind == "main"), practice
    with _CACHE_LOCK:
        if len(_PLANNED_CACHE) >= 20_000:
            _PLANNED_CACHE.clear()
        _PLANNED_CACHE[key] = value
    return value


def _stored_answers(conn: Connection, participant_id: int, step_key: str) -> dict:
    from study.flow import Answer

    rows = conn.execute(sa.select(responses.c.item_id, responses.c.value_num, responses.c.value_text,
                                  responses.c.untouched, responses.c.response_time_ms, responses.c.shown_position)
                        .where(responses.c.participant_id == participant_id, responses.c.step_key == step_key)).all()
    return {r.item_id: Answer(value=r.value_num if r.value_num is not None else r.value_text,
                              untouched=bool(r.untouched), response_time_ms=r.response_time_ms,
                              shown_position=r.shown_position) for r in rows}


def _build_state(conn: Connection, p, srow, step_index: int | None = None, status: str | None = None,
                 attention_failed: int | None = None, excluded_reason: str | None = None,
                 with_answers: bool = True) -> ParticipantState:
    ctx = _context(srow)
    sequence, practice_id = _planned(conn, p["id"], p["token"])
    steps = _steps(ctx, _ctx_key(srow), sequence, practice_id)
    index = min(p["step_index"] if step_index is None else step_index, len(steps) - 1)
    step = steps[index]
    seed = flow.participant_seed(ctx.spec.seed, p["participant_number"])
    answers = _stored_answers(conn, p["id"], step.key) if with_answers and step.collects_data else {}
    return ParticipantState(
        participant_id=p["id"], token=p["token"], pseudonym=p["pseudonym"], study_id=p["study_id"],
        status=status or p["status"], label_condition=p["label_condition"], list_index=p["list_index"],
        participant_number=p["participant_number"], is_pilot=bool(p["is_pilot"]), step_index=index, step=step,
        steps=steps, sequence=list(sequence), practice_id=practice_id, study=ctx.study, stimuli=ctx.stimuli,
        item_order=flow.item_order(step, seed), answers=answers,
        attention_failed=p["attention_failed"] if attention_failed is None else attention_failed,
        excluded_reason=p["excluded_reason"] if excluded_reason is None else excluded_reason,
        prolific_pid=p["prolific_pid"], study_status=srow["status"],
    )


def _balance_counts(conn: Connection, study_id: str, version: str, is_pilot: bool,
                    timeout_minutes: float | None, now: datetime | None = None) -> dict[tuple[int, str], int]:
    """Participants per (list_index, label_condition) cell who count for balance.

    Counted: completed sessions and sessions still active within the study's timeout, of the
    same study version (lists of another version are other clip sets) and the same kind (pilots
    are balanced among themselves). Never counted: declined, withdrawn and timed-out sessions,
    nor active ones idle past the timeout that no job has marked yet, so their places are
    given to the next participants.
    """
    c = participants.c
    counted = c.status == "completed"
    if timeout_minutes:
        cutoff = (now or utcnow()) - timedelta(minutes=float(timeout_minutes))
        counted = counted | (c.status.in_(ACTIVE_STATUSES) & (c.updated_at > cutoff))
    else:
        counted = counted | c.status.in_(ACTIVE_STATUSES)
    rows = conn.execute(sa.select(c.list_index, c.label_condition, sa.func.count())
                        .where(c.study_id == study_id, c.is_pilot.is_(is_pilot), c.study_version == version, counted)
                        .group_by(c.list_index, c.label_condition)).all()
    return {(list_index, condition): n for list_index, condition, n in rows}


def enrol(engine: Engine, study_id: str, *, prolific_pid: str | None = None, prolific_study_id: str | None = None,
          prolific_session_id: str | None = None, is_pilot: bool = False,
          user_agent: str | None = None) -> ParticipantState:
    """A new participant in a balanced cell (list x label condition), or the existing one for a PROLIFIC_PID.

    Counting and inserting happen in one transaction that holds the study's lock (a row lock on
    PostgreSQL, the database write lock on SQLite), so concurrent enrolments, from any number
    of app processes, see each other's counts and balance holds at every N. Only sessions that
    can still yield data count (`_balance_counts`). Pilots are balanced among themselves. New
    participants get the newest registered version and stay on it (`_load`). A paused study takes only pilots; a closed one nobody (StudyClosed).
    """
    from study import design

    for name, value in (("PROLIFIC_PID", prolific_pid), ("STUDY_ID", prolific_study_id),
                        ("SESSION_ID", prolific_session_id)):
        if value is not None and len(value) > 100:
            raise UserError(f"The link's {name} is too long ({len(value)} characters; at most 100).")
    with _write(engine) as conn:
        srow = _study_row(conn, study_id, lock=True)
        if prolific_pid:
            token = conn.execute(sa.select(participants.c.token).where(
                participants.c.study_id == study_id, participants.c.prolific_pid == prolific_pid)).scalar()
            if token is not None:
                loaded = _load(conn, token)
                return _build_state(conn, *loaded)
        if srow["status"] == "closed" or (srow["status"] == "paused" and not is_pilot):
            raise StudyClosed(t("enrol.closed") if srow["status"] == "closed" else t("enrol.paused"))
        ctx = _context(srow)
        lists = design.build_lists(ctx.spec, ctx.clips)
        cells = _balance_counts(conn, study_id, str(srow["version"]), bool(is_pilot),
                                getattr(ctx.study, "timeout_minutes", None))
        number = srow["participants_enrolled"] + 1
        list_index, condition = design.choose_assignment(cells, len(lists), ctx.spec)
        # Ordinal within the list, counting everyone ever assigned to it in this version (dropouts
        # too): it alternates pair and block order, so it must never repeat within a list.
        list_ordinal = conn.execute(sa.select(sa.func.count()).where(
            participants.c.study_id == study_id, participants.c.is_pilot.is_(bool(is_pilot)),
            participants.c.study_version == str(srow["version"]),
            participants.c.list_index == list_index)).scalar_one()
        sequence = design.sequence_for(ctx.spec, ctx.clips, list_index, list_ordinal)
        steps = _steps(ctx, _ctx_key(srow), tuple(sequence), ctx.practice_id)
        now = utcnow()
        pid = conn.execute(participants.insert().values(
            study_id=study_id, token=secrets.token_urlsafe(24), pseudonym=f"P{number:04d}",
            participant_number=number, prolific_pid=prolific_pid or None, prolific_study_id=prolific_study_id,
            prolific_session_id=prolific_session_id, label_condition=condition, list_index=list_index,
            status="started", attention_failed=0, step_index=0, step_key=steps[0].key, is_pilot=bool(is_pilot),
            study_version=str(srow["version"]), user_agent=(user_agent or None) and user_agent[:500],
            started_at=now, updated_at=now,
        ).returning(participants.c.id)).scalar_one()
        planned = [{"participant_id": pid, "position": pos, "stimulus_id": sid, "kind": "main"}
                   for pos, sid in enumerate(sequence, start=1)]
        if ctx.practice_id:
            planned.insert(0, {"participant_id": pid, "position": 0, "stimulus_id": ctx.practice_id,
                               "kind": "practice"})
        conn.execute(planned_trials.insert(), planned)
        conn.execute(studies.update().where(studies.c.id == study_id).values(participants_enrolled=number))
        p = conn.execute(sa.select(*_P_COLUMNS).where(participants.c.id == pid)).mappings().one()
        return _build_state(conn, p, srow, with_answers=False)


def get_state(engine: Engine, token: str) -> ParticipantState | None:
    """The participant behind a link's token, or None for an unknown token."""
    with _read(engine) as conn:
        loaded = _load(conn, token)
        if loaded is None:
            return None
        return _build_state(conn, *loaded)


def stored_watched_share(engine: Engine, participant_id: int, position: int) -> float | None:
    """The share of a clip already recorded for a participant (events sent before a reload count)."""
    with _read(engine) as conn:
        return conn.execute(sa.select(trials.c.watched_share).where(
            trials.c.participant_id == participant_id, trials.c.position == position)).scalar()


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING in the dialect's own syntax."""
    if not rows:
        return
    conn.execute(_dialect_insert(conn, table).on_conflict_do_nothing(index_elements=keys), rows)


def _greatest(column, value):
    """max(column, value) ignoring NULLs, portable across SQLite and PostgreSQL."""
    return sa.case((column.is_(None), value), (value.is_(None), column), (column < value, value), else_=column)


def _dialect_insert(conn: Connection, table: sa.Table):
    if _is_pg(conn):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


_UPSERT_TRIAL: dict[tuple[str, bool], Any] = {}


def _upsert_trial_stmt(conn: Connection, submitted: bool):
    key = (conn.dialect.name, submitted)
    stmt = _UPSERT_TRIAL.get(key)
    if stmt is None:
        ins = _dialect_insert(conn, trials)
        t, new = trials.c, ins.excluded
        update = {"watched_share": _greatest(t.watched_share, new.watched_share),
                  "max_time": _greatest(t.max_time, new.max_time),
                  "play_count": _greatest(t.play_count, new.play_count)}
        if submitted:
            update.update(submitted_at=new.submitted_at, item_order=new.item_order)
        stmt = ins.on_conflict_do_update(index_elements=["participant_id", "position"], set_=update).returning(t.id)
        _UPSERT_TRIAL[key] = stmt
    return stmt


def _upsert_trial(conn: Connection, participant_id: int, position: int, stimulus_id: str, now: datetime,
                  started_at: datetime | None = None, watched_share: float | None = None,
                  max_time: float | None = None, play_count: int | None = None,
                  submitted: bool = False, item_order: list[str] | None = None) -> int:
    """Create the trial row on first sight (events or submit) or update it; returns its id.

    watched_share, max_time and play_count only ever grow: events and submits may arrive in
    any order and twice.
    """
    values = {"participant_id": participant_id, "position": position, "stimulus_id": stimulus_id,
              "started_at": started_at or now, "watched_share": watched_share, "max_time": max_time,
              "play_count": play_count}
    if submitted:
        values.update(submitted_at=now, item_order=item_order)
    return conn.execute(_upsert_trial_stmt(conn, submitted), values).scalar_one()


INACTIVE_MESSAGES = {status: t(f"status.{status}") for status in ("withdrawn", "declined", "timed_out", "completed")}
CLOSED_MESSAGE = t("study.closed")
INVALID_LINK_MESSAGE = t("link.invalid")


def submit_step(engine: Engine, token: str, step_key: str, answers: dict, trial_meta: dict | None = None,
                actor: str = "participant") -> SubmitResult:
    """Store one page's answers and move the participant on, in one transaction.

    A page submitted twice (double click, reload, a second tab) is answered with the stored
    state and writes nothing (duplicate=True); a page that is not the current one is refused
    politely. Invalid answers write nothing and come back in `errors`. `trial_meta` for clip
    steps: started_at (datetime), watched_share, max_time, play_count.
    """
    now = utcnow()
    with _write(engine) as conn:
        loaded = _load(conn, token, lock=True)
        if loaded is None:
            raise UserError(INVALID_LINK_MESSAGE)
        p, srow = loaded
        state = _build_state(conn, p, srow, with_answers=False)
        keys = [s.key for s in state.steps]
        if step_key not in keys:
            return SubmitResult(False, state, message=t("submit.not_in_study"))
        index = keys.index(step_key)
        if index < state.step_index:
            return SubmitResult(True, state, duplicate=True, message=t("submit.already_saved"))
        if state.status not in ACTIVE_STATUSES and not (state.completed and index == state.step_index):
            return SubmitResult(False, state, message=INACTIVE_MESSAGES.get(state.status))
        if index > state.step_index:
            return SubmitResult(False, state, message=t("submit.not_current"))
        if srow["status"] == "closed" and state.active:
            return SubmitResult(False, state, message=CLOSED_MESSAGE)
        step = state.steps[index]
        if flow.is_final(step):
            return SubmitResult(True, state)
        answers = {k: (v if isinstance(v, flow.Answer) else flow.Answer(v)) for k, v in (answers or {}).items()}
        errors = flow.validate_answers(step, answers)
        if errors:
            return SubmitResult(False, state, errors=errors, message=t("submit.check_answers"))

        trial_id = None
        if step.has_clip:
            meta = trial_meta or {}
            play_count = meta.get("play_count")
            trial_id = _upsert_trial(
                conn, p["id"], step.position, step.stimulus_id, now, started_at=meta.get("started_at"),
                watched_share=flow.as_number(meta.get("watched_share")),
                max_time=flow.as_number(meta.get("max_time")),
                play_count=play_count if isinstance(play_count, int) and not isinstance(play_count, bool) else None,
                submitted=True, item_order=state.item_order)
        if step.collects_data:
            order = {item_id: i for i, item_id in enumerate(state.item_order, start=1)}
            by_id = {item.id: item for item in step.items}
            rows = []
            for item_id, answer in answers.items():
                item = by_id[item_id]
                num, text = flow.stored_value(item, answer)
                rows.append({"participant_id": p["id"], "trial_id": trial_id, "step_key": step.key,
                             "instrument_id": item.instrument, "item_id": item_id, "value_num": num,
                             "value_text": text, "untouched": bool(answer.untouched),
                             "shown_position": answer.shown_position or order.get(item_id),
                             "response_time_ms": answer.response_time_ms, "created_at": now})
            _insert_ignore(conn, responses, rows, ["participant_id", "step_key", "item_id"])
        session = flow.Session(status=state.status, step_index=index, attention_failed=state.attention_failed,
                               excluded_reason=state.excluded_reason,
                               max_failed_attention=getattr(state.study.exclusions, "max_failed_attention_checks", None))
        outcome = flow.advance(session, state.steps, answers)
        new_index, new_status = outcome.new_index, outcome.status
        attention_failed, excluded_reason = outcome.attention_failed, outcome.excluded_reason
        values: dict[str, Any] = {"updated_at": now, **{stamp: now for stamp in outcome.stamps}}
        if attention_failed != state.attention_failed:
            values["attention_failed"] = attention_failed
        if excluded_reason != state.excluded_reason:
            values["excluded_reason"] = excluded_reason
        new_step = state.steps[new_index]
        values.update(step_index=new_index, step_key=new_step.key, status=new_status)
        conn.execute(participants.update().where(participants.c.id == p["id"]).values(**values))
        new_state = _build_state(conn, p, srow, step_index=new_index, status=new_status,
                                 attention_failed=attention_failed, excluded_reason=excluded_reason,
                                 with_answers=False)
        return SubmitResult(True, new_state)


# --------------------------------------------------------------------------- playback events

# What the player may report (components/player). "sample" rows go to continuous_samples.
EVENT_TYPES = frozenset({
    "loaded", "start_click", "play", "playing", "pause", "seeking", "seeked", "timeupdate", "progress",
    "ended", "waiting", "stalled", "error", "retry", "skip", "play_rejected", "visibility_hidden",
    "visibility_visible", "fullscreen_enter", "fullscreen_exit", "volume", "rate", "watched",
})
SAMPLE_EVENT = "sample"
MAX_EVENTS_PER_BATCH = 1000
MAX_DETAIL_CHARS = 2000


class RefusedValue:
    """Stands in for a JSON value the reader would not turn into a number (NaN, Infinity, an
    integer of thousands of digits), so the event holding it is refused on its own instead of
    the whole request failing."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.reason}>"


MAX_DETAIL_DEPTH = 8


def bad_text(text: str) -> str | None:
    """Why a string cannot be stored on both databases (PostgreSQL refuses NUL in text; neither
    driver can encode a lone UTF-16 surrogate, which JSON's \\ud800 escape can produce), or None."""
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds an unpaired surrogate (not valid Unicode)"
    return None


_SAFE_INT = 2**53  # beyond this a JSON number loses precision in browsers and in PostgreSQL's json


def unsafe_json(value: Any, depth: int = 0) -> str | None:
    """Why `value` cannot be stored as JSON on both databases, or None if it can.

    PostgreSQL refuses NUL characters in text and NaN/Infinity in json; Python's encoder
    would write them. Depth is bounded so that encoding never recurses without end.
    """
    if depth > MAX_DETAIL_DEPTH:
        return f"is nested deeper than {MAX_DETAIL_DEPTH} levels"
    if isinstance(value, RefusedValue):
        return value.reason
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -_SAFE_INT <= value <= _SAFE_INT else "holds an integer too large to store"
    if isinstance(value, float):
        return None if value == value and value not in (float("inf"), float("-inf")) else "holds NaN or Infinity"
    if isinstance(value, str):
        return bad_text(value)
    if isinstance(value, list):
        return next((why for item in value if (why := unsafe_json(item, depth + 1))), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "has a key that is not text"
            if why := bad_text(key) or unsafe_json(item, depth + 1):
                return why
        return None
    return f"holds a {type(value).__name__}, which is not JSON"


@dataclass(frozen=True)
class EventsOutcome:
    """What became of each event of a batch: `accepted` (indexes stored now or before) and
    `refused` (index -> reason). Refused events will never be accepted: the sender drops them."""

    recorded: int
    accepted: list[int]
    refused: dict[int, str]


def _event_problem(ev: Any, planned: dict[int, str]) -> str | None:
    if not isinstance(ev, dict):
        return "is not an object"
    if why := unsafe_json(ev):
        return why
    kind = ev.get("event", ev.get("type"))
    position, seq = ev.get("position"), ev.get("seq")
    if kind != SAMPLE_EVENT and kind not in EVENT_TYPES:
        return f"unknown event type {kind!r}"
    if not isinstance(position, int) or isinstance(position, bool) or position not in planned:
        return f"position {position!r} is not one of this participant's clips"
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**31:
        return f"seq must be a whole number from 0, not {seq!r}"
    detail = ev.get("detail")
    if detail is not None and (not isinstance(detail, dict) or len(json.dumps(detail)) > MAX_DETAIL_CHARS):
        return f"detail must be an object of at most {MAX_DETAIL_CHARS} characters"
    share = flow.as_number(ev.get("watched_share", (detail or {}).get("watched_share")))
    if share is not None and not 0 <= share <= 1.0001:
        return f"watched_share must be between 0 and 1, not {share}"
    if kind == SAMPLE_EVENT and flow.as_number(ev.get("value")) is None:
        return "a sample needs a numeric value"
    return None


def record_event_batch(engine: Engine, token: str, events: list) -> EventsOutcome:
    """Store the good events of a batch and say why each other one was refused.

    Each event: {position, seq, event, media_time, client_time, detail, watched_share} (only
    position, seq and event are required; "sample" events carry `value`). A resent batch is
    stored once (unique participant, position, seq). Each event is judged on its own, so one
    malformed event never costs the good ones beside it. `watched_share` raises the trial's
    share, never lowers it. Raises UserError only for the batch as a whole (not a list, too
    long, unknown token, participant no longer recording).
    """
    if not isinstance(events, list):
        raise UserError("Events must be sent as a list.")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise UserError(f"Too many events in one batch ({len(events)}; at most {MAX_EVENTS_PER_BATCH}). Send them in smaller batches.")
    if isinstance(token, str) and bad_text(token):
        raise UserError("This study link is not valid.")
    now = utcnow()
    with _write(engine) as conn:
        loaded = _load(conn, token)
        if loaded is None:
            raise UserError("This study link is not valid.")
        p, _ = loaded
        if p["status"] not in ("started", "in_progress", "completed"):
            raise UserError(f"No more data are recorded for this participant (status {p['status']}).")
        sequence, practice_id = _planned(conn, p["id"], p["token"])
        planned = dict(enumerate(sequence, start=1))
        if practice_id:
            planned[0] = practice_id
        refused: dict[int, str] = {}
        accepted: list[int] = []
        event_rows, sample_rows = [], []
        watched: dict[int, float] = {}
        max_time: dict[int, float] = {}
        for i, ev in enumerate(events):
            if why := _event_problem(ev, planned):
                refused[i] = why
                continue
            accepted.append(i)
            kind = ev.get("event", ev.get("type"))
            position, seq, detail = ev["position"], ev["seq"], ev.get("detail")
            media_time = flow.as_number(ev.get("media_time"))
            client_time = flow.as_number(ev.get("client_time"))
            share = flow.as_number(ev.get("watched_share", (detail or {}).get("watched_share")))
            if share is not None:
                watched[position] = max(watched.get(position, 0.0), min(share, 1.0))
            if media_time is not None:
                max_time[position] = max(max_time.get(position, 0.0), media_time)
            base = {"participant_id": p["id"], "position": position, "stimulus_id": planned[position], "seq": seq}
            if kind == SAMPLE_EVENT:
                sample_rows.append({**base, "media_time": media_time, "value": flow.as_number(ev.get("value")),
                                    "client_time": client_time})
            else:
                event_rows.append({**base, "event": kind, "media_time": media_time, "client_time": client_time,
                                   "server_time": now, "detail": detail})
        new = 0
        for table, rows in ((playback_events, event_rows), (continuous_samples, sample_rows)):
            if rows:
                stmt = _dialect_insert(conn, table).on_conflict_do_nothing(
                    index_elements=["participant_id", "position", "seq"]).returning(table.c.seq)
                new += len(conn.execute(stmt, rows).all())
        for position in set(watched) | set(max_time):
            _upsert_trial(conn, p["id"], position, planned[position], now,
                          watched_share=watched.get(position), max_time=max_time.get(position))
        if new:
            conn.execute(participants.update().where(participants.c.id == p["id"]).values(updated_at=now))
        return EventsOutcome(new, accepted, refused)


def record_events(engine: Engine, token: str, events: list[dict]) -> int:
    """record_event_batch for callers that send only well-formed events (the participant page,
    the simulator): returns how many were new; raises UserError listing any refused event
    (the good ones of the batch are stored all the same)."""
    outcome = record_event_batch(engine, token, events)
    if outcome.refused:
        problems = [Problem(f"event {i + 1}", why) for i, why in outcome.refused.items()]
        raise UserError(f"{len(problems)} of {len(events)} events could not be stored; the others were.", problems)
    return outcome.recorded


# --------------------------------------------------------------------------- ending, deleting


def withdraw(engine: Engine, token: str) -> ParticipantState:
    """The participant stops: status withdrawn, nothing more is recorded. Their data stay until
    deletion is asked for (delete_participant)."""
    now = utcnow()
    with _write(engine) as conn:
        loaded = _load(conn, token, lock=True)
        if loaded is None:
            raise UserError(INVALID_LINK_MESSAGE)
        p, srow = loaded
        if p["status"] in ("withdrawn", "declined"):
            return _build_state(conn, p, srow, with_answers=False)
        conn.execute(participants.update().where(participants.c.id == p["id"]).values(
            status="withdrawn", withdrawn_at=now, updated_at=now))
        _audit(conn, "participant", "withdrawn", p["study_id"], participant_ref(p["study_id"], p["pseudonym"]),
               {"step_key": p["step_key"], "previous_status": p["status"]})
        return _build_state(conn, p, srow, status="withdrawn", with_answers=False)


def mark_timed_out(engine: Engine, study_id: str, now: datetime | None = None) -> int:
    """Participants inactive for longer than the study's timeout_minutes become timed_out; returns how many."""
    now = now or utcnow()
    with _write(engine) as conn:
        srow = _study_row(conn, study_id)
        minutes = getattr(_context(srow).study, "timeout_minutes", None)
        if not minutes:
            return 0
        cutoff = now - timedelta(minutes=float(minutes))
        result = conn.execute(participants.update().where(
            participants.c.study_id == study_id, participants.c.status.in_(ACTIVE_STATUSES),
            participants.c.updated_at < cutoff).values(status="timed_out", updated_at=now))
        if result.rowcount:
            _audit(conn, "system", "timed_out", study_id, detail={"participants": result.rowcount,
                                                                   "timeout_minutes": minutes})
        return result.rowcount


def delete_participant(engine: Engine, study_id: str, ref: str, actor: str = "cli") -> int:
    """Delete every row of one participant (found by token, pseudonym or Prolific ID); returns rows deleted.

    What remains is one audit entry holding a hash of the pseudonym; earlier audit entries about
    the participant are removed too.
    """
    if not ref:
        raise UserError("Give the participant's token, pseudonym or Prolific ID.")
    with _write(engine) as conn:
        _study_row(conn, study_id, lock=True)
        c = participants.c
        p = conn.execute(sa.select(c.id, c.pseudonym).where(
            c.study_id == study_id, sa.or_(c.token == ref, c.pseudonym == ref, c.prolific_pid == ref))).first()
        if p is None:
            raise UserError(f"No participant {ref!r} in study {study_id!r} (give a token, a pseudonym such as "
                            "P0001, or a Prolific ID).")
        pref = participant_ref(study_id, p.pseudonym)
        deleted = 0
        for table in (responses, continuous_samples, playback_events, trials, planned_trials):
            deleted += conn.execute(table.delete().where(table.c.participant_id == p.id)).rowcount
        conn.execute(audit_log.delete().where(audit_log.c.study_id == study_id, audit_log.c.participant_ref == pref))
        deleted += conn.execute(participants.delete().where(c.id == p.id)).rowcount
        _audit(conn, actor, "participant_deleted", study_id, pref, {"rows": deleted})
        return deleted


def cli_delete_participant(args) -> int:
    engine = make_engine(getattr(args, "url", None))
    try:
        study_id = resolve_study_id(args.study)
        n = delete_participant(engine, study_id, args.participant)
        print(f"deleted participant {args.participant} of {study_id}: {n} rows; an audit entry records the deletion")
    finally:
        engine.dispose()
    return 0


# ---------------------------------------------------------------------------------------------
# For the web server: its one engine per URL, the reads behind its clip route, and the timeout
# job. server.py reaches the database only through these (and the functions above).

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(url: str | None = None) -> Engine:
    """One engine per URL per process, shared by the Streamlit pages, the HTTP routes and the jobs."""
    if url is None:
        from study.config import database_url

        url = database_url()
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = make_engine(url)
        return _ENGINES[url]


def stimulus_file(engine: Engine, study_id: str, stimulus_id: str) -> str | None:
    """The `file` column of one registered clip (relative to the study's clip folder), or None."""
    with _read(engine) as conn:
        return conn.execute(sa.select(stimuli.c.file).where(
            stimuli.c.study_id == study_id, stimuli.c.stimulus_id == stimulus_id)).scalar()


def mark_all_timed_out(engine: Engine, now: datetime | None = None) -> dict[str, int]:
    """mark_timed_out for every study that still takes answers (open or paused).

    Returns {study id: participants marked} for the studies where someone timed out. One study
    that cannot be read (e.g. its frozen file no longer parses) does not stop the others.
    """
    marked: dict[str, int] = {}
    with _read(engine) as conn:
        ids = conn.execute(sa.select(studies.c.id).where(studies.c.status.in_(("open", "paused")))
                           .order_by(studies.c.id)).scalars().all()
    for study_id in ids:
        try:
            n = mark_timed_out(engine, study_id, now)
        except UserError:
            continue
        if n:
            marked[study_id] = n
    return marked
