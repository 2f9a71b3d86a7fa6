"""Participants: enrolment, balance, where they are, and storing a page (`submit_step` persists `flow.advance`)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from study import flow
from study.errors import UserError
from study.store.engine import _is_pg, _read, _write
from study.store.metrics import refresh_trial_metrics
from study.store.studies import _CACHE_LOCK, _CONTEXTS, StudyClosed, _context, _steps, _study_row
from study.store.tables import (
    ACTIVE_STATUSES,
    participants,
    planned_trials,
    responses,
    studies,
    study_versions,
    trials,
    utcnow,
)
from study import texts
from study.texts import t

# --------------------------------------------------------------------------- participants

NOT_READ = object()  # ParticipantState.clip_share when it was not read with the state


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
    prolific_study_id: str | None = None
    prolific_session_id: str | None = None
    language: str = texts.DEFAULT_LANG  # one of the study's languages: every page is shown in it
    device_info: Any = None  # participants.device_info: server-side only (its seed makes the sound test)
    study_version: str | None = None
    # The trial's stored watched_share for the current clip step, read with the state after a
    # submit (the next page's first run needs it); NOT_READ otherwise (StoreWriter asks then).
    clip_share: Any = NOT_READ

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
        """The study's redirect with this participant's placeholders filled (study.completion)."""
        if not self.completed:
            return None
        from study.completion import redirect_for

        completion = self.study.completion
        return redirect_for(getattr(completion, "redirect_url", None), prolific_pid=self.prolific_pid,
                            prolific_study_id=self.prolific_study_id,
                            prolific_session_id=self.prolific_session_id, pseudonym=self.pseudonym,
                            code=getattr(completion, "code", None))

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
    "prolific_study_id", "prolific_session_id",
    "language",
    "device_info",
)]
# The participant's own version of the study file; the study's current file only for
# participants of a version registered before study_versions existed (migration 0004).
_V = study_versions
_S_COLUMNS = [studies.c.id.label("s_id"), studies.c.status.label("s_status"),
              participants.c.study_version.label("s_version"),
              sa.func.coalesce(_V.c.spec_hash, studies.c.spec_hash).label("s_hash"),
              sa.func.coalesce(_V.c.registered_at, studies.c.updated_at).label("s_updated")]
# The version's study file and manifest, read only when this process has not parsed them yet
# (studies._context caches them per version): every page used to fetch both, and decode the
# manifest's JSON, to find them in the cache.
_SPEC_COLUMNS = [sa.func.coalesce(_V.c.spec_yaml, studies.c.spec_yaml).label("s_yaml"),
                 sa.case((_V.c.version.is_(None), studies.c.manifest), else_=_V.c.manifest).label("s_manifest")]


def _joined(*columns):
    return (sa.select(*columns).join(studies, studies.c.id == participants.c.study_id)
            .outerjoin(_V, (_V.c.study_id == participants.c.study_id) & (_V.c.version == participants.c.study_version)))


_LOAD = _joined(*_P_COLUMNS, *_S_COLUMNS).where(participants.c.token == sa.bindparam("token"))
_LOAD_FOR_UPDATE = _LOAD.with_for_update(of=participants)
_LOAD_SPEC = _joined(*_SPEC_COLUMNS).where(participants.c.id == sa.bindparam("pid"))


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
    srow = {"id": p["s_id"], "status": p["s_status"], "version": p["s_version"],
            "spec_hash": p["s_hash"], "updated_at": p["s_updated"]}
    ctx = _CONTEXTS.get(_ctx_key(srow))
    if ctx is None:  # parsed once per version and process; studies._context caches it
        srow["spec_yaml"], srow["manifest"] = conn.execute(_LOAD_SPEC, {"pid": p["id"]}).one()
        ctx = _context(srow)
    srow["context"] = ctx  # studies._context takes it from here
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


def _recording(conn: Connection, token: str):
    """(participant row, study row, {position: planned clip id}, with the practice clip at 0)
    of a participant whose browser data are still recorded (started, in progress or
    completed); UserError otherwise. Shared by the playback-events and trace writers."""
    loaded = _load(conn, token)
    if loaded is None:
        raise UserError("This study link is not valid.")
    p, srow = loaded
    if p["status"] not in ("started", "in_progress", "completed"):
        raise UserError(f"No more data are recorded for this participant (status {p['status']}).")
    sequence, practice_id = _planned(conn, p["id"], p["token"])
    planned = dict(enumerate(sequence, start=1))
    if practice_id:
        planned[0] = practice_id
    return p, srow, planned


_STORED_ANSWERS = (sa.select(responses.c.item_id, responses.c.value_num, responses.c.value_text,
                             responses.c.untouched, responses.c.response_time_ms, responses.c.shown_position)
                   .where(responses.c.participant_id == sa.bindparam("pid"),
                          responses.c.step_key == sa.bindparam("step_key")))


def _stored_answers(conn: Connection, participant_id: int, step_key: str) -> dict:
    from study.flow import Answer

    # One statement built at import (as _LOAD): building it per call cost more than running it.
    rows = conn.execute(_STORED_ANSWERS, {"pid": participant_id, "step_key": step_key}).all()
    return {r.item_id: Answer(value=r.value_num if r.value_num is not None else r.value_text,
                              untouched=bool(r.untouched), response_time_ms=r.response_time_ms,
                              shown_position=r.shown_position) for r in rows}


class StoredAnswers(Mapping):
    """The current step's stored answers (item_id -> flow.Answer), read from the database the
    first time they are looked at. No page reads them on an ordinary run (a page is stored and
    left in one transaction, so the current step has none), and every participant page's run
    used to pay a query for them (benchmarks/bench_sessions.py)."""

    def __init__(self, engine: Engine, participant_id: int, step_key: str):
        self._engine, self._pid, self._step_key = engine, participant_id, step_key
        self._answers: dict | None = None

    def _loaded(self) -> dict:
        if self._answers is None:
            with _read(self._engine) as conn:
                self._answers = _stored_answers(conn, self._pid, self._step_key)
        return self._answers

    def __getitem__(self, key):
        return self._loaded()[key]

    def __iter__(self):
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return repr(self._loaded())


_SHARE = (sa.select(trials.c.watched_share)
          .where(trials.c.participant_id == sa.bindparam("pid"), trials.c.position == sa.bindparam("pos")))


def _build_state(conn: Connection, p, srow, step_index: int | None = None, status: str | None = None,
                 attention_failed: int | None = None, excluded_reason: str | None = None,
                 with_answers: bool = True, with_share: bool = False) -> ParticipantState:
    ctx = _context(srow)
    sequence, practice_id = _planned(conn, p["id"], p["token"])
    steps = _steps(ctx, _ctx_key(srow), sequence, practice_id)
    index = min(p["step_index"] if step_index is None else step_index, len(steps) - 1)
    step = steps[index]
    seed = flow.participant_seed(ctx.spec.seed, p["participant_number"])
    answers = StoredAnswers(conn.engine, p["id"], step.key) if with_answers and step.collects_data else {}
    share = NOT_READ
    if with_share and step.has_clip:
        share = conn.execute(_SHARE, {"pid": p["id"], "pos": step.position}).scalar()
    return ParticipantState(
        participant_id=p["id"], token=p["token"], pseudonym=p["pseudonym"], study_id=p["study_id"],
        status=status or p["status"], label_condition=p["label_condition"], list_index=p["list_index"],
        participant_number=p["participant_number"], is_pilot=bool(p["is_pilot"]), step_index=index, step=step,
        steps=steps, sequence=list(sequence), practice_id=practice_id, study=ctx.study, stimuli=ctx.stimuli,
        item_order=flow.item_order(step, seed), answers=answers,
        attention_failed=p["attention_failed"] if attention_failed is None else attention_failed,
        excluded_reason=p["excluded_reason"] if excluded_reason is None else excluded_reason,
        prolific_pid=p["prolific_pid"], study_status=srow["status"], language=p["language"] or texts.DEFAULT_LANG,
        prolific_study_id=p["prolific_study_id"], prolific_session_id=p["prolific_session_id"],
        device_info=p["device_info"], study_version=srow["version"], clip_share=share,
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
          user_agent: str | None = None, language: str | None = None,
          accept_language: str | None = None) -> ParticipantState:
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
        # `language` (a ?lang= parameter) if the study offers it, else the browser's best, else its default
        language = texts.choose_language(getattr(ctx.study, "languages", None) or [texts.DEFAULT_LANG],
                                         language, accept_language)
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
            language=language,
            # The device check's sounds follow from this seed; it never leaves the server.
            device_info={"seed": secrets.token_hex(8)},
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


def study_language(study, wanted: str | None) -> str:
    """`wanted` if the study offers it, else the study's first (default) language."""
    offered = list(getattr(study, "languages", None) or [texts.DEFAULT_LANG])
    return wanted if wanted in offered else offered[0]


def set_language(engine: Engine, token: str, language: str) -> str | None:
    """Switch a participant's pages to `language` (one of the study's); the language now stored.

    None for an unknown token. A language the study does not offer changes nothing.
    """
    with _write(engine) as conn:
        loaded = _load(conn, token, lock=True)
        if loaded is None:
            return None
        p, srow = loaded
        chosen = study_language(_context(srow).study, language)
        if chosen != language:
            return p["language"]
        if chosen != p["language"]:
            conn.execute(participants.update().where(participants.c.id == p["id"]).values(language=chosen))
        return chosen


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
        return conn.execute(_SHARE, {"pid": participant_id, "pos": position}).scalar()


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


INACTIVE_MESSAGES = {status: t(f"status.{status}")
                     for status in ("withdrawn", "declined", "timed_out", "completed", "ineligible_device")}
CLOSED_MESSAGE = t("study.closed")
INVALID_LINK_MESSAGE = t("link.invalid")


def submit_step(engine: Engine, token: str, step_key: str, answers: dict, trial_meta: dict | None = None,
                actor: str = "participant") -> SubmitResult:
    """Store one page's answers and move the participant on, in one transaction.

    A page submitted twice (double click, reload, a second tab) is answered with the stored
    state and writes nothing (duplicate=True); a page that is not the current one is refused
    politely. Invalid answers write nothing and come back in `errors`. `trial_meta` for clip
    steps: started_at (datetime), watched_share, max_time, play_count; the trial's playback
    columns are then computed from its stored events (store.metrics, study/playback.py).
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
            return SubmitResult(False, state, message=t("submit.not_in_study", state.language))
        index = keys.index(step_key)
        if index < state.step_index:
            return SubmitResult(True, state, duplicate=True, message=t("submit.already_saved", state.language))
        if state.status not in ACTIVE_STATUSES and not (state.completed and index == state.step_index):
            return SubmitResult(False, state, message=t(f"status.{state.status}", state.language)
                                if state.status in INACTIVE_MESSAGES else None)
        if index > state.step_index:
            return SubmitResult(False, state, message=t("submit.not_current", state.language))
        if srow["status"] == "closed" and state.active:
            return SubmitResult(False, state, message=t("study.closed", state.language))
        step = state.steps[index]
        if flow.is_final(step):
            return SubmitResult(True, state)
        answers = {k: (v if isinstance(v, flow.Answer) else flow.Answer(v)) for k, v in (answers or {}).items()}
        with texts.active(state.language):  # the problems are sentences for this participant
            errors = flow.validate_answers(step, answers)
        if errors:
            return SubmitResult(False, state, errors=errors, message=t("submit.check_answers", state.language))

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
            refresh_trial_metrics(conn, p["id"], step.position)
        if step.collects_data:
            order = {item_id: i for i, item_id in enumerate(state.item_order, start=1)}
            by_id = {item.id: item for item in step.items}
            rows = []
            for item_id, answer in answers.items():
                item = by_id.get(item_id)
                if item is None:  # a step's own report (the device check), not an item's answer
                    continue
                num, text = flow.stored_value(item, answer)
                rows.append({"participant_id": p["id"], "trial_id": trial_id, "step_key": step.key,
                             "instrument_id": item.instrument, "item_id": item_id, "value_num": num,
                             "value_text": text, "untouched": bool(answer.untouched),
                             "shown_position": answer.shown_position or order.get(item_id),
                             "response_time_ms": answer.response_time_ms, "created_at": now})
            _insert_ignore(conn, responses, rows, ["participant_id", "step_key", "item_id"])
        session = flow.Session(status=state.status, step_index=index, attention_failed=state.attention_failed,
                               excluded_reason=state.excluded_reason,
                               max_failed_attention=getattr(state.study.exclusions, "max_failed_attention_checks", None),
                               study=state.study, device_info=state.device_info, token=state.token)
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
        if outcome.device_info is not None:
            values["device_info"] = outcome.device_info
        conn.execute(participants.update().where(participants.c.id == p["id"]).values(**values))
        if outcome.device_info is not None:
            p = {**p, "device_info": outcome.device_info}
        # The page drawn next is drawn from this state (participant.StoreWriter), in the same
        # script run: with the next clip's stored share, it needs no other query.
        new_state = _build_state(conn, p, srow, step_index=new_index, status=new_status,
                                 attention_failed=attention_failed, excluded_reason=excluded_reason,
                                 with_answers=False, with_share=True)
        return SubmitResult(True, new_state)


