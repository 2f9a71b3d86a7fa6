"""Follow-up sessions: who may start one, starting it, storing its pages (the only writer of the
followup_* tables), personal links, and the researcher's list of eligible Prolific IDs.

A follow-up link names the study, the follow-up and the participant: `PROLIFIC_PID=` (Prolific) or
`f=` (the personal token shown at the end of session 1 of an anonymous link). Only participants
who completed session 1 (and, unless the follow-up says `invite_excluded`, were not excluded
there) may start; before the follow-up opens they are told when to come back, after its window
they may still take part and the session is flagged `late`. All times come from
`study.followup.now` (the injectable clock).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from study import followup as fup
from study import texts
from study.store.engine import _is_pg, _read, _write
from study.store.sessions import _dialect_insert, _insert_ignore, _load, _planned
from study.store.studies import _audit, _context, participant_ref
from study.store.tables import followup_answers, followup_links, followup_sessions, participants

MAX_REF = 100


@dataclass
class FollowupState:
    """Where one participant is in one follow-up, with what its page needs."""

    session_id: int
    participant_id: int
    study_id: str
    followup: Any  # protocol FollowUp
    session_number: int
    status: str  # started | completed
    page_index: int
    pages: list  # followup.Page
    stimuli: dict  # stimulus_id -> manifest info (as ParticipantState.stimuli)
    language: str
    delay_hours: float
    late: bool
    pseudonym: str
    prolific_pid: str | None = None
    prolific_study_id: str | None = None
    prolific_session_id: str | None = None
    answers: dict = field(default_factory=dict)  # item_id -> value stored for the current page

    @property
    def page(self):
        return self.pages[self.page_index]

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def progress(self) -> float:
        return min(1.0, self.page_index / max(1, len(self.pages) - 1))

    @property
    def completion_code(self) -> str | None:
        return self.followup.completion.code if self.completed else None

    @property
    def redirect_url(self) -> str | None:
        if not self.completed:
            return None
        from study.completion import redirect_for

        c = self.followup.completion
        return redirect_for(c.redirect_url, prolific_pid=self.prolific_pid, prolific_study_id=self.prolific_study_id,
                            prolific_session_id=self.prolific_session_id, pseudonym=self.pseudonym, code=c.code)


@dataclass
class FollowupSubmit:
    ok: bool
    state: FollowupState
    errors: dict[str, str] = field(default_factory=dict)
    duplicate: bool = False
    message: str | None = None


def _follow_up(study, name: str):
    for k, fu in enumerate(getattr(study, "follow_ups", None) or []):
        if fu.name == name:
            return k, fu
    return None, None


def _participant_token(conn: Connection, study_id: str, prolific_pid: str | None, link_token: str | None) -> str | None:
    if prolific_pid:
        if not isinstance(prolific_pid, str) or len(prolific_pid) > MAX_REF:
            return None
        return conn.execute(sa.select(participants.c.token).where(
            participants.c.study_id == study_id, participants.c.prolific_pid == prolific_pid)).scalar()
    if link_token:
        if not isinstance(link_token, str) or len(link_token) > 64:
            return None
        return conn.execute(sa.select(participants.c.token).join(
            followup_links, followup_links.c.participant_id == participants.c.id).where(
            participants.c.study_id == study_id, followup_links.c.token == link_token)).scalar()
    return None


def find(engine: Engine, study_id: str, name: str, *, prolific_pid: str | None = None,
         link_token: str | None = None, at=None) -> fup.Access:
    """What a follow-up link leads to: unknown | not_eligible | early | open | late | completed."""
    at = at or fup.now()
    with _read(engine) as conn:
        return _find(conn, study_id, name, prolific_pid, link_token, at)


def _find(conn: Connection, study_id: str, name: str, prolific_pid, link_token, at) -> fup.Access:
    if not isinstance(study_id, str) or not isinstance(name, str) or len(study_id) > 100 or len(name) > 64:
        return fup.Access("unknown")
    token = _participant_token(conn, study_id, prolific_pid, link_token)
    if token is None:
        # An unknown Prolific ID on a real study and follow-up did not take session 1 here.
        if prolific_pid and isinstance(prolific_pid, str) and len(prolific_pid) <= MAX_REF:
            from study.store.studies import _study_row
            try:
                srow = _study_row(conn, study_id)
            except Exception:
                return fup.Access("unknown")
            if _follow_up(_context(srow).study, name)[1] is not None:
                return fup.Access("not_eligible", study_id)
        return fup.Access("unknown")
    p, srow = _load(conn, token)
    completed_at = conn.execute(sa.select(participants.c.completed_at).where(participants.c.id == p["id"])).scalar()
    study = _context(srow).study
    k, fu = _follow_up(study, name)
    lang = p["language"] or texts.DEFAULT_LANG
    if fu is None:
        return fup.Access("unknown", study_id, language=lang)
    access = fup.Access("not_eligible", study_id, fu, p["id"], language=lang,
                        extra={"token": token, "index": k})
    if p["status"] != "completed" or completed_at is None:
        return access
    if p["excluded_reason"] and not fu.invite_excluded:
        return access
    done = conn.execute(sa.select(followup_sessions.c.status).where(
        followup_sessions.c.participant_id == p["id"], followup_sessions.c.followup == name)).scalar()
    timing = fup.timing(fu, completed_at, at)
    access.timing = timing
    if done == "completed":
        access.outcome = "completed"
    elif done == "started":
        access.outcome = "open" if timing.status != "late" else "late"
    else:
        access.outcome = timing.status
    return access


_P = participants.c


def start(engine: Engine, study_id: str, name: str, *, prolific_pid: str | None = None,
          link_token: str | None = None, language: str | None = None) -> tuple[fup.Access, FollowupState | None]:
    """Start (or resume) the follow-up the link stands for; (access, state), state None unless
    the access is open, late or completed. Starting twice finds the same session."""
    at = fup.now()
    with _write(engine) as conn:
        access = _find(conn, study_id, name, prolific_pid, link_token, at)
        if access.outcome not in ("open", "late", "completed"):
            return access, None
        pid = access.participant_id
        row = conn.execute(sa.select(followup_sessions.c.id).where(
            followup_sessions.c.participant_id == pid, followup_sessions.c.followup == name)).scalar()
        if row is None:
            p, srow = _load(conn, access.extra["token"])
            ctx = _context(srow)
            sequence, _practice = _planned(conn, pid, access.extra["token"])
            fu = access.followup
            unseen = [c.id for c in ctx.clips if c.id not in sequence]
            seed = fup_seed(ctx.spec.seed, p["participant_number"], name)
            stills = fup.still_order(list(sequence), unseen, fu.ask.foils, seed) if fu.ask.recognition else []
            offered = list(getattr(ctx.study, "languages", None) or [texts.DEFAULT_LANG])
            lang = language if language in offered else (p["language"] if p["language"] in offered else offered[0])
            _insert_ignore(conn, followup_sessions, [{
                "participant_id": pid, "followup": name, "session_number": access.extra["index"] + 2,
                "status": "started", "step_index": 0, "still_order": stills, "language": lang,
                "delay_hours": access.timing.delay_hours, "late": access.timing.status == "late",
                "started_at": at, "updated_at": at}], ["participant_id", "followup"])
            row = conn.execute(sa.select(followup_sessions.c.id).where(
                followup_sessions.c.participant_id == pid, followup_sessions.c.followup == name)).scalar_one()
            _audit(conn, "participant", "followup_started", study_id, participant_ref(study_id, p["pseudonym"]),
                   {"followup": name, "late": access.timing.status == "late"})
        return access, _state(conn, row)


def fup_seed(study_seed: int, participant_number: int, name: str) -> int:
    import zlib

    return (int(study_seed) * 1_000_003 + int(participant_number) * 7919 + zlib.crc32(name.encode())) % (2 ** 31)


def _state(conn: Connection, session_id: int, lock: bool = False) -> FollowupState | None:
    fs = followup_sessions.c
    q = sa.select(followup_sessions, _P.token, _P.pseudonym, _P.prolific_pid, _P.prolific_study_id,
                  _P.prolific_session_id, _P.study_id).join(
        participants, participants.c.id == fs.participant_id).where(fs.id == session_id)
    if lock and _is_pg(conn):
        q = q.with_for_update(of=followup_sessions)
    r = conn.execute(q).mappings().first()
    if r is None:
        return None
    p, srow = _load(conn, r["token"])
    ctx = _context(srow)
    _, fu = _follow_up(ctx.study, r["followup"])
    sequence, _practice = _planned(conn, r["participant_id"], r["token"])
    pages = fup.pages(fu, list(sequence), list(r["still_order"] or []))
    index = min(r["step_index"], len(pages) - 1)
    stored = conn.execute(sa.select(followup_answers.c.item_id, followup_answers.c.value_num,
                                    followup_answers.c.value_text).where(
        followup_answers.c.followup_session_id == session_id,
        followup_answers.c.step_key == pages[index].key)).all()
    return FollowupState(
        session_id=session_id, participant_id=r["participant_id"], study_id=r["study_id"], followup=fu,
        session_number=r["session_number"], status=r["status"], page_index=index, pages=pages,
        stimuli=ctx.stimuli, language=r["language"], delay_hours=r["delay_hours"], late=bool(r["late"]),
        pseudonym=r["pseudonym"], prolific_pid=r["prolific_pid"], prolific_study_id=r["prolific_study_id"],
        prolific_session_id=r["prolific_session_id"],
        answers={i: (n if n is not None else t) for i, n, t in stored})


def get_state(engine: Engine, session_id: int) -> FollowupState | None:
    with _read(engine) as conn:
        return _state(conn, session_id)


def submit(engine: Engine, session_id: int, page_key: str, answers: dict) -> FollowupSubmit:
    """Store one follow-up page and move on, in one transaction. A page already stored (double
    click, second tab) writes nothing and answers duplicate=True; invalid answers write nothing."""
    at = fup.now()
    with _write(engine) as conn:
        state = _state(conn, session_id, lock=True)
        if state is None:
            raise KeyError(session_id)
        keys = [pg.key for pg in state.pages]
        if page_key not in keys:
            return FollowupSubmit(False, state, message="not_in_followup")
        index = keys.index(page_key)
        if index < state.page_index or state.completed:
            return FollowupSubmit(True, state, duplicate=True)
        if index > state.page_index:
            return FollowupSubmit(False, state, message="not_current")
        page = state.pages[index]
        if page.final:
            return FollowupSubmit(True, state)
        with texts.active(state.language):
            errors = fup.validate(page, answers or {})
        if errors:
            return FollowupSubmit(False, state, errors=errors)
        rows = [{"followup_session_id": session_id, "step_key": page.key, "created_at": at,
                 "shown_position": None, **r} for r in fup.rows_for(page, answers)]
        _insert_ignore(conn, followup_answers, rows, ["followup_session_id", "step_key", "item_id"])
        new_index = index + 1
        values: dict[str, Any] = {"step_index": new_index, "updated_at": at}
        if state.pages[new_index].final:
            values.update(status="completed", completed_at=at)
        # the guard on step_index makes a concurrent second submit of the same page a no-op
        done = conn.execute(followup_sessions.update().where(
            followup_sessions.c.id == session_id, followup_sessions.c.step_index == index).values(**values))
        if not done.rowcount:
            return FollowupSubmit(True, _state(conn, session_id), duplicate=True)
        return FollowupSubmit(True, _state(conn, session_id))


def personal_link_token(engine: Engine, token: str) -> str | None:
    """The personal follow-up token of a participant who completed session 1 of a study with
    follow-ups (made on first ask, the same after); None otherwise, and for Prolific
    participants, whom the researcher invites through Prolific."""
    with _write(engine) as conn:
        loaded = _load(conn, token)
        if loaded is None:
            return None
        p, srow = loaded
        if p["status"] != "completed" or p["prolific_pid"] or not getattr(_context(srow).study, "follow_ups", None):
            return None
        existing = conn.execute(sa.select(followup_links.c.token).where(
            followup_links.c.participant_id == p["id"])).scalar()
        if existing:
            return existing
        conn.execute(_dialect_insert(conn, followup_links).values(
            participant_id=p["id"], token=secrets.token_urlsafe(24), created_at=fup.now())
            .on_conflict_do_nothing(index_elements=["participant_id"]))
        return conn.execute(sa.select(followup_links.c.token).where(
            followup_links.c.participant_id == p["id"])).scalar_one()


def eligible(engine: Engine, study_id: str, name: str, at=None) -> list[dict]:
    """Participants invited to follow-up `name`: completed session 1 (not excluded, unless the
    follow-up invites them), with their Prolific ID, when it opens and closes, and whether they
    have started or completed it. `open_now` is true from the opening on (late included)."""
    at = at or fup.now()
    from study.store.studies import _study_row

    with _read(engine) as conn:
        srow = _study_row(conn, study_id)
        _, fu_current = _follow_up(_context(srow).study, name)
        q = (sa.select(_P.id, _P.token, _P.pseudonym, _P.prolific_pid, _P.completed_at, _P.excluded_reason,
                       _P.is_pilot, followup_sessions.c.status.label("fu_status"))
             .outerjoin(followup_sessions, (followup_sessions.c.participant_id == _P.id)
                        & (followup_sessions.c.followup == name))
             .where(_P.study_id == study_id, _P.status == "completed").order_by(_P.participant_number))
        out = []
        for r in conn.execute(q).mappings():
            p, prow = _load(conn, r["token"])
            _, fu = _follow_up(_context(prow).study, name)
            if fu is None or (r["excluded_reason"] and not fu.invite_excluded) or r["completed_at"] is None:
                continue
            timing = fup.timing(fu, r["completed_at"], at)
            out.append({"pseudonym": r["pseudonym"], "prolific_pid": r["prolific_pid"], "is_pilot": bool(r["is_pilot"]),
                        "opens_at": timing.opens_at, "closes_at": timing.closes_at,
                        "open_now": timing.status != "early", "late": timing.status == "late",
                        "followup_status": r["fu_status"] or ""})
        return out if fu_current is not None or out else []


def completed_at(engine: Engine, participant_id: int):
    """When the participant completed session 1 (None if not yet)."""
    with _read(engine) as conn:
        return conn.execute(sa.select(participants.c.completed_at).where(participants.c.id == participant_id)).scalar()


def session_counts(engine: Engine, study_id: str) -> dict[str, int]:
    """Follow-up name -> how many of its sessions are completed, in study `study_id`."""
    fs = followup_sessions.c
    with _read(engine) as conn:
        rows = conn.execute(sa.select(fs.followup, sa.func.count()).join(
            participants, participants.c.id == fs.participant_id).where(
            participants.c.study_id == study_id, fs.status == "completed").group_by(fs.followup)).all()
    return {name: int(n) for name, n in rows}
