"""The database: tables, engine, migrations, and the only functions that write.

Everything a participant gives goes through one of the functions below, each in one short
transaction. Readers (analysis/load.py, the dashboard) may SELECT from these tables directly;
the table and column names are part of the contract and change only through a migration.

Tables (all times UTC):

- ``studies``: one row per study id. ``spec_yaml`` is the exact study file as registered,
  ``spec_hash`` its sha256, ``manifest`` the manifest rows as JSON; ``status`` is
  open | paused | closed.
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

from study.errors import Problem, UserError

STUDY_STATUSES = ("open", "paused", "closed")
# started: enrolled, consent not yet given; declined: said no at consent.
STATUSES = ("started", "in_progress", "completed", "withdrawn", "declined", "timed_out")
ACTIVE_STATUSES = ("started", "in_progress")

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
    created_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)


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


def make_engine(url: str | None = None) -> Engine:
    """One engine per process. SQLite: WAL, foreign keys, busy timeout, BEGIN IMMEDIATE for writes.

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
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get("kuleshov_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    if url.startswith("postgresql"):
        return sa.create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
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
