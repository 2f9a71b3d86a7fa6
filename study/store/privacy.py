"""Ending a session: withdrawal, timeouts and deletion on request."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from study.errors import UserError
from study.store.engine import _write, make_engine
from study.store.sessions import (
    INVALID_LINK_MESSAGE,
    ParticipantState,
    _build_state,
    _load,
)
from study.store.studies import (
    _audit,
    _context,
    _study_row,
    participant_ref,
    resolve_study_id,
)
from study.store.tables import (
    ACTIVE_STATUSES,
    audit_log,
    continuous_samples,
    followup_answers,
    followup_links,
    followup_sessions,
    participants,
    planned_trials,
    playback_events,
    responses,
    trace_batches,
    trials,
    utcnow,
)

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
    """Delete every row of one participant, all their sessions (session 1 and follow-ups) included,
    found by token, pseudonym, Prolific ID or personal follow-up token; returns rows deleted.

    What remains is one audit entry holding a hash of the pseudonym; earlier audit entries about
    the participant are removed too.
    """
    if not ref:
        raise UserError("Give the participant's token, pseudonym or Prolific ID.")
    with _write(engine) as conn:
        _study_row(conn, study_id, lock=True)
        c = participants.c
        p = conn.execute(sa.select(c.id, c.pseudonym).where(
            c.study_id == study_id, sa.or_(c.token == ref, c.pseudonym == ref, c.prolific_pid == ref,
                                           c.id.in_(sa.select(followup_links.c.participant_id).where(
                                               followup_links.c.token == ref))))).first()
        if p is None:
            raise UserError(f"No participant {ref!r} in study {study_id!r} (give a token, a pseudonym such as "
                            "P0001, or a Prolific ID).")
        pref = participant_ref(study_id, p.pseudonym)
        deleted = 0
        # every session of the person: the follow-ups' answers first (they hang off followup_sessions)
        sessions = sa.select(followup_sessions.c.id).where(followup_sessions.c.participant_id == p.id)
        deleted += conn.execute(followup_answers.delete().where(
            followup_answers.c.followup_session_id.in_(sessions))).rowcount
        for table in (followup_sessions, followup_links, responses, continuous_samples, trace_batches,
                      playback_events, trials, planned_trials):
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


