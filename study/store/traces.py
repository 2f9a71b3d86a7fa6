"""Continuous-rating traces and moment marks from the player, a batch at a time.

The browser (components/player/continuous.js) samples the control at the study's rate in video
time and sends batches every few seconds, at a pause and at the end, to POST /api/traces. Each
batch is judged on its own against the participant's study (mode, ranges, prompts, the clip's
length), so one bad batch never costs the good ones beside it, and stored as one row of
`trace_batches` (see TraceBatchRow for why a batch rather than a sample is a row). A batch
sent twice is stored once: its key (participant, position, attempt, seq) is the primary key and
the insert does nothing on conflict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from study.errors import Problem, UserError
from study.store.engine import _write
from study.store.events import RefusedValue, bad_text
from study.store.sessions import _dialect_insert, _recording
from study.store.studies import _context
from study.store.tables import participants, trace_batches, utcnow

MAX_BATCHES_PER_REQUEST = 50
MAX_SAMPLES_PER_BATCH = 1200  # 2 min at 10 Hz; the player sends every 3 s
MAX_MARKS_PER_BATCH = 200
MAX_ATTEMPT = 2**31 - 1
MAX_SEQ = 2**20
# A clip's duration as probed may differ from the browser's by a frame or two; a clip of
# unknown length (a URL never probed) gets this bound instead.
DURATION_SLACK_S = 1.0
UNKNOWN_DURATION_S = 6 * 3600.0
RANGE_SLACK = 1e-6


@dataclass(frozen=True)
class TracesOutcome:
    """What became of each batch: `accepted` (indexes stored now or before) and `refused`
    (index -> reason). A refused batch will never be accepted: the sender drops it."""

    recorded: int
    accepted: list[int]
    refused: dict[int, str]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _why_not_number(value: Any) -> str:
    if isinstance(value, RefusedValue):
        return value.reason
    return f"is {value!r}, not a number"


@dataclass(frozen=True)
class CaptureSpec:
    """What a study's player records: the mode, the value ranges and the mark prompts."""

    mode: str | None  # 1d | 2d | marks | None (nothing recorded)
    x_range: tuple[float, float] | None
    y_range: tuple[float, float] | None
    prompts: frozenset[str]


def capture_spec(study: Any) -> CaptureSpec:
    cr = getattr(study.playback, "continuous_rating", None)
    marks = getattr(study.playback, "marks", None)
    prompts = frozenset(p.id for p in marks.prompts) if marks is not None else frozenset()
    if cr is not None:
        y = (cr.arousal_min, cr.arousal_max) if cr.mode == "2d" else None
        return CaptureSpec(cr.mode, (cr.min, cr.max), y, prompts)
    return CaptureSpec("marks" if marks is not None else None, None, None, prompts)


def _times(values: Any, name: str, limit: float, n_max: int, strictly_increasing: bool) -> tuple[list[float], str | None]:
    if not isinstance(values, list):
        return [], f"{name} must be a list"
    if len(values) > n_max:
        return [], f"{name} holds {len(values)} values; at most {n_max} per batch (send smaller batches)"
    out: list[float] = []
    for k, v in enumerate(values):
        number = _number(v)
        if number is None:
            return [], f"{name}[{k}] {_why_not_number(v)}"
        if not 0 <= number <= limit:
            return [], f"{name}[{k}] is {number:g} s, outside the clip (0 to {limit:g} s)"
        if strictly_increasing and out and number <= out[-1]:
            return [], (f"{name}[{k}] is {number:g} s, not after {name}[{k - 1}] ({out[-1]:g} s): video times in a "
                        "batch must increase")
        out.append(number)
    return out, None


def _values(values: Any, name: str, n: int, bounds: tuple[float, float]) -> tuple[list[float], str | None]:
    if not isinstance(values, list):
        return [], f"{name} must be a list"
    if len(values) != n:
        return [], f"{name} holds {len(values)} values but t holds {n}; they must be the same length"
    low, high = bounds
    out: list[float] = []
    for k, v in enumerate(values):
        number = _number(v)
        if number is None:
            return [], f"{name}[{k}] {_why_not_number(v)}"
        if not low - RANGE_SLACK <= number <= high + RANGE_SLACK:
            return [], f"{name}[{k}] is {number:g}, outside the scale ({low:g} to {high:g})"
        out.append(number)
    return out, None


def _optional_in(value: Any, name: str, bounds: tuple[float, float] | None) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    number = _number(value)
    if number is None:
        return None, f"{name} {_why_not_number(value)}"
    if bounds is not None and not bounds[0] - RANGE_SLACK <= number <= bounds[1] + RANGE_SLACK:
        return None, f"{name} is {number:g}, outside {bounds[0]:g} to {bounds[1]:g}"
    return number, None


def judge_batch(batch: Any, spec: CaptureSpec, planned: dict[int, str], durations: dict[str, float | None]
                ) -> tuple[dict | None, str | None]:
    """(row to store, None) for a good batch, or (None, why it is refused)."""
    if not isinstance(batch, dict):
        return None, "must be an object"
    position = batch.get("position")
    if not _whole(position, 0, 10**6) or position not in planned:
        return None, f"position {position!r} is not one of this participant's clips"
    if not _whole(batch.get("attempt"), 0, MAX_ATTEMPT):
        return None, f"attempt must be a whole number from 0 to {MAX_ATTEMPT}, not {batch.get('attempt')!r}"
    if not _whole(batch.get("seq"), 0, MAX_SEQ):
        return None, f"seq must be a whole number from 0 to {MAX_SEQ}, not {batch.get('seq')!r}"
    if spec.mode is None:
        return None, "this study records no continuous rating and no marks"
    mode = batch.get("mode")
    if mode != spec.mode:
        return None, f"mode is {mode!r}, but this study records {spec.mode!r}"
    final = batch.get("final", False)
    if not isinstance(final, bool):
        return None, "final must be true or false"
    stimulus_id = planned[position]
    duration = durations.get(stimulus_id)
    limit = (duration + DURATION_SLACK_S) if duration else UNKNOWN_DURATION_S
    t, why = _times(batch.get("t", []), "t", limit, MAX_SAMPLES_PER_BATCH, strictly_increasing=True)
    if why:
        return None, why
    x: list[float] = []
    y: list[float] | None = None
    if spec.mode in ("1d", "2d"):
        x, why = _values(batch.get("x", []), "x", len(t), spec.x_range)
        if why:
            return None, why
        if spec.mode == "2d":
            y, why = _values(batch.get("y", []), "y", len(t), spec.y_range)
            if why:
                return None, why
        elif batch.get("y") not in (None, []):
            return None, "y is only sent by a 2d grid; this study's control is 1d"
    elif t or batch.get("x"):
        return None, "this study records marks only, so a batch carries no samples (t, x)"
    marks_in = batch.get("marks") or []
    if not isinstance(marks_in, list) or len(marks_in) > MAX_MARKS_PER_BATCH:
        return None, f"marks must be a list of at most {MAX_MARKS_PER_BATCH} [time, prompt id] pairs"
    if marks_in and not spec.prompts:
        return None, "this study asks for no marks"
    marks: list[list] = []
    for k, mark in enumerate(marks_in):
        if not isinstance(mark, list) or len(mark) != 2:
            return None, f"marks[{k}] must be a pair [video time, prompt id]"
        when = _number(mark[0])
        if when is None:
            return None, f"marks[{k}] time {_why_not_number(mark[0])}"
        if not 0 <= when <= limit:
            return None, f"marks[{k}] is at {when:g} s, outside the clip (0 to {limit:g} s)"
        if not isinstance(mark[1], str) or mark[1] not in spec.prompts:
            return None, f"marks[{k}] names prompt {mark[1]!r}; this study's prompts are {', '.join(sorted(spec.prompts))}"
        marks.append([when, mark[1]])
    start_x, why = _optional_in(batch.get("start_x"), "start_x", spec.x_range)
    if why:
        return None, why
    start_y, why = _optional_in(batch.get("start_y"), "start_y", spec.y_range)
    if why:
        return None, why
    first_move_t, why = _optional_in(batch.get("first_move_t"), "first_move_t", (0.0, limit))
    if why:
        return None, why
    client_time, why = _optional_in(batch.get("client_time"), "client_time", None)
    if why:
        return None, why
    return {"position": position, "attempt": batch["attempt"], "seq": batch["seq"], "stimulus_id": stimulus_id,
            "mode": mode, "final": final, "t": t, "x": x, "y": y, "marks": marks or None, "start_x": start_x,
            "start_y": start_y, "first_move_t": first_move_t, "client_time": client_time}, None


def _check_request(token: Any, batches: Any) -> None:
    if not isinstance(batches, list):
        raise UserError("Batches must be sent as a list.")
    if len(batches) > MAX_BATCHES_PER_REQUEST:
        raise UserError(f"Too many batches in one request ({len(batches)}; at most {MAX_BATCHES_PER_REQUEST}).")
    if not isinstance(token, str) or bad_text(token):
        raise UserError("This study link is not valid.")


def _record(conn, token: str, batches: list, now) -> TracesOutcome:
    """One request's batches inside an open write transaction. Raises UserError before writing
    anything of this request, so a refused request leaves the transaction as it was."""
    _check_request(token, batches)
    p, srow, planned = _recording(conn, token)
    ctx = _context(srow)
    durations = {sid: (ctx.stimuli.get(sid) or {}).get("duration_s") for sid in planned.values()}
    spec = capture_spec(ctx.study)
    rows, accepted, refused = [], [], {}
    for i, batch in enumerate(batches):
        row, why = judge_batch(batch, spec, planned, durations)
        if why:
            refused[i] = why
            continue
        accepted.append(i)
        rows.append({**row, "participant_id": p["id"], "server_time": now})
    new = 0
    if rows:
        stmt = _dialect_insert(conn, trace_batches).on_conflict_do_nothing(
            index_elements=["participant_id", "position", "attempt", "seq"]).returning(trace_batches.c.seq)
        new = len(conn.execute(stmt, rows).all())
    if new:
        conn.execute(participants.update().where(participants.c.id == p["id"]).values(updated_at=now))
    return TracesOutcome(new, accepted, refused)


def record_trace_requests(engine: Engine, requests: list[tuple[str, list]]) -> list[TracesOutcome | UserError]:
    """Several requests' batches in one write transaction: one commit (one fsync) for all.

    The web server's trace writer (server.GroupWriter) hands over whatever requests arrived
    while the previous commit was under way, so under load the cost of a commit is shared
    instead of each request queueing for its own. Each request is judged on its own: its
    outcome, or the UserError that refused it as a whole (nothing of it written).
    """
    now = utcnow()
    out: list[TracesOutcome | UserError] = []
    with _write(engine) as conn:
        for token, batches in requests:
            try:
                out.append(_record(conn, token, batches, now))
            except UserError as exc:
                out.append(exc)
    return out


def record_trace_batch(engine: Engine, token: str, batches: list) -> TracesOutcome:
    """Store the good batches and say why each other one was refused.

    A batch: {position, attempt, seq, mode, final, t: [...], x: [...], y: [...] (2d only),
    marks: [[t, prompt id], ...], start_x, start_y, first_move_t, client_time}. Raises UserError
    only for the request as a whole (not a list, too long, unknown token, participant no longer
    recording).
    """
    _check_request(token, batches)
    outcome = record_trace_requests(engine, [(token, batches)])[0]
    if isinstance(outcome, UserError):
        raise outcome
    return outcome


def record_traces(engine: Engine, token: str, batches: list[dict]) -> int:
    """record_trace_batch for callers that send only well-formed batches (the simulator): returns
    how many were new; raises UserError listing any refused batch (the good ones are stored)."""
    outcome = record_trace_batch(engine, token, batches)
    if outcome.refused:
        problems = [Problem(f"batch {i + 1}", why) for i, why in outcome.refused.items()]
        raise UserError(f"{len(problems)} of {len(batches)} trace batches could not be stored; the others were.",
                        problems)
    return outcome.recorded
