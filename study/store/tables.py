"""Tables and statuses: the schema every reader and writer shares (see study/store/__init__.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from study import flow

STUDY_STATUSES = ("open", "paused", "closed")
# started: enrolled, consent not yet given; declined: said no at consent; ineligible_device:
# failed the device check before consent (device_info says why).
STATUSES = ("started", "in_progress", "completed", "withdrawn", "declined", "timed_out", "ineligible_device")
ACTIVE_STATUSES = flow.ACTIVE_STATUSES

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


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
    # the language the pages were shown in, one of the study's `languages` (migration 0005)
    language: Mapped[str] = mapped_column(sa.String(20), server_default="en")
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
    # How the clip was seen and heard, computed from its playback events (study/playback.py,
    # migration 0006); NULL until the trial is submitted.
    replayed: Mapped[bool | None] = mapped_column(sa.Boolean)
    skipped: Mapped[bool | None] = mapped_column(sa.Boolean)
    seconds_hidden: Mapped[float | None] = mapped_column(sa.Float)
    share_muted: Mapped[float | None] = mapped_column(sa.Float)
    seconds_stalled: Mapped[float | None] = mapped_column(sa.Float)
    load_ms: Mapped[int | None] = mapped_column(sa.Integer)
    seconds_offline: Mapped[float | None] = mapped_column(sa.Float)


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


class TraceBatchRow(Base):
    """One batch of a continuous-rating trace and/or moment marks, as the player sent it (migration 0008).

    Packed: a batch (a few seconds of samples, `t`/`x`/`y` as JSON arrays of equal length) is one
    row, not one row per sample. The batch is the unit the browser sends, resends and is
    answered about, so its key (participant, position, attempt, seq) is what makes a resend a
    no-op; at 10 Hz and a batch every 3 s this is 30x fewer rows (and index entries) than a
    row per sample, about 15 bytes of JSON per sample against ~60 for a row with a composite
    key, and the analysis always reads whole traces, never single samples, so nothing is lost by
    packing. `attempt` is a random id the player draws when the clip is mounted: a reload starts a
    new attempt and the old one's samples stay, marked partial by the loader.
    """

    __tablename__ = "trace_batches"

    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    stimulus_id: Mapped[str] = mapped_column(sa.String(100))
    mode: Mapped[str] = mapped_column(sa.String(10))  # 1d | 2d | marks (marks only, no control)
    final: Mapped[bool] = mapped_column(sa.Boolean, default=False)  # sent when the clip ended
    t: Mapped[Any] = mapped_column(sa.JSON)  # video times (s), strictly increasing
    x: Mapped[Any] = mapped_column(sa.JSON)  # 1d: rating; 2d: valence
    y: Mapped[Any | None] = mapped_column(sa.JSON)  # 2d: arousal
    marks: Mapped[Any | None] = mapped_column(sa.JSON)  # [[video time, prompt id], ...]
    start_x: Mapped[float | None] = mapped_column(sa.Float)  # where the control started
    start_y: Mapped[float | None] = mapped_column(sa.Float)
    first_move_t: Mapped[float | None] = mapped_column(sa.Float)  # video time of the first move, null = not yet
    client_time: Mapped[float | None] = mapped_column(sa.Float)  # ms since epoch, browser clock
    server_time: Mapped[datetime] = mapped_column(TS)


class FollowupLinkRow(Base):
    """A participant's personal follow-up link (migration 0009): an unguessable token shown at the
    end of session 1 to participants who came by an anonymous link. It identifies the study
    record, never the person; deleting the participant deletes it."""

    __tablename__ = "followup_links"

    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(TS)


class FollowupSessionRow(Base):
    """One follow-up session of a participant (migration 0009): session_number 2, 3 ... in the order
    of the study's follow_ups; delay_hours is the actual time since session 1 was completed when
    the follow-up was started, late whether that was after its window."""

    __tablename__ = "followup_sessions"
    __table_args__ = (sa.UniqueConstraint("participant_id", "followup"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    participant_id: Mapped[int] = mapped_column(sa.ForeignKey("participants.id", ondelete="CASCADE"))
    followup: Mapped[str] = mapped_column(sa.String(64))
    session_number: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(20), default="started")  # started | completed
    step_index: Mapped[int] = mapped_column(sa.Integer, default=0)
    still_order: Mapped[Any] = mapped_column(sa.JSON)  # recognition: stimulus ids in the order shown
    language: Mapped[str] = mapped_column(sa.String(20))
    delay_hours: Mapped[float] = mapped_column(sa.Float)
    late: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(TS)
    updated_at: Mapped[datetime] = mapped_column(TS)
    completed_at: Mapped[datetime | None] = mapped_column(TS)


class FollowupAnswerRow(Base):
    """One answered item of a follow-up page (migration 0009), stored once: a resubmitted page
    finds its key taken and writes nothing. step_key: recall | recognition | clip:<stimulus id>;
    item_id: recall_text, old:<id>, confidence:<id>, vividness, intrusions, valence_now,
    arousal_now, watch_more."""

    __tablename__ = "followup_answers"

    followup_session_id: Mapped[int] = mapped_column(
        sa.ForeignKey("followup_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    step_key: Mapped[str] = mapped_column(sa.String(150), primary_key=True)
    item_id: Mapped[str] = mapped_column(sa.String(150), primary_key=True)
    stimulus_id: Mapped[str | None] = mapped_column(sa.String(100))
    value_num: Mapped[float | None] = mapped_column(sa.Float)
    value_text: Mapped[str | None] = mapped_column(sa.Text)
    shown_position: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(TS)


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


RESEARCHER_ROLES = ("owner", "editor", "viewer")


class ResearcherRow(Base):
    """A researcher account (see study/store/researchers.py). ``password_hash`` is an argon2id
    hash (never the password); ``locked`` is set by an owner or by too many failed logins."""

    __tablename__ = "researchers"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(sa.String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(10))
    locked: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(TS)
    last_login_at: Mapped[datetime | None] = mapped_column(TS)


class ResearcherAccessRow(Base):
    """Which studies an editor or viewer may see (owners see every study)."""

    __tablename__ = "researcher_study_access"

    researcher_id: Mapped[int] = mapped_column(sa.ForeignKey("researchers.id", ondelete="CASCADE"), primary_key=True)
    study_id: Mapped[str] = mapped_column(sa.ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(TS)


studies = StudyRow.__table__
study_versions = StudyVersionRow.__table__
stimuli = StimulusRow.__table__
participants = ParticipantRow.__table__
planned_trials = PlannedTrialRow.__table__
trials = TrialRow.__table__
responses = ResponseRow.__table__
playback_events = PlaybackEventRow.__table__
continuous_samples = ContinuousSampleRow.__table__
trace_batches = TraceBatchRow.__table__
audit_log = AuditRow.__table__
followup_links = FollowupLinkRow.__table__
followup_sessions = FollowupSessionRow.__table__
followup_answers = FollowupAnswerRow.__table__
researchers = ResearcherRow.__table__
researcher_study_access = ResearcherAccessRow.__table__


