"""Playback events and continuous samples from the player, each judged on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from study import flow
from study.errors import Problem, UserError
from study.store.engine import _write
from study.store.metrics import refresh_submitted
from study.store.sessions import _dialect_insert, _recording, _upsert_trial
from study.store.tables import continuous_samples, participants, playback_events, utcnow

# --------------------------------------------------------------------------- playback events

# What the player may report (components/player). "sample" rows go to continuous_samples.
EVENT_TYPES = frozenset({
    "loaded", "start_click", "play", "playing", "pause", "seeking", "seeked", "timeupdate", "progress",
    "ended", "waiting", "stalled", "error", "retry", "skip", "play_rejected", "visibility_hidden",
    "visibility_visible", "fullscreen_enter", "fullscreen_exit", "volume", "rate", "watched",
    # how the clip was seen and heard (study/playback.py): load time, focus, connection, resume
    "canplay", "window_blur", "window_focus", "offline", "online", "resume_click", "preload",
})
# The participant turned the clip's captions on or off (detail {"shown": true/false}).
EVENT_TYPES |= {"captions"}
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
    share, never lowers it. Events of a trial already submitted update its playback columns
    (store.metrics). Raises UserError only for the batch as a whole (not a list, too
    long, unknown token, participant no longer recording).
    """
    outcome = record_event_requests(engine, [(token, events)])[0]
    if isinstance(outcome, UserError):
        raise outcome
    return outcome


def _check_request(token: Any, events: Any) -> None:
    if not isinstance(events, list):
        raise UserError("Events must be sent as a list.")
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise UserError(f"Too many events in one batch ({len(events)}; at most {MAX_EVENTS_PER_BATCH}). Send them in smaller batches.")
    if isinstance(token, str) and bad_text(token):
        raise UserError("This study link is not valid.")


def record_event_requests(engine: Engine, requests: list[tuple[str, list]]) -> list[EventsOutcome | Exception]:
    """Several requests' event batches in one write transaction: one commit (one fsync on
    SQLite, one pool connection on PostgreSQL) for all, as store.record_trace_requests.

    The web server's event writer (server.GroupWriter) hands over whatever requests arrived
    while the previous commit was under way: at 100 participants the events route's own
    transactions were the most numerous writes, each queueing for SQLite's write lock or a
    pool connection. Each request is judged on its own: its outcome, or the UserError that
    refused it as a whole (nothing of it written). If the shared transaction fails for another
    reason, each request is tried again in a transaction of its own, so no request costs the
    others; a request that fails on its own then gets its exception in place of an outcome.
    """
    now = utcnow()
    try:
        with _write(engine) as conn:
            return [_judged(conn, token, events, now) for token, events in requests]
    except Exception:
        if len(requests) == 1:
            raise
    out: list[EventsOutcome | Exception] = []
    for token, events in requests:
        try:
            with _write(engine) as conn:
                out.append(_judged(conn, token, events, now))
        except Exception as exc:  # this request's own failure, answered to it alone
            out.append(exc)
    return out


def _judged(conn, token: str, events: list, now) -> EventsOutcome | UserError:
    try:
        _check_request(token, events)
        return _record(conn, token, events, now)
    except UserError as exc:
        return exc


def _record(conn, token: str, events: list, now) -> EventsOutcome:
    """One request's events, in the caller's transaction; UserError (before anything is
    written) for the request as a whole."""
    p, _, planned = _recording(conn, token)
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
        refresh_submitted(conn, p["id"], {row["position"] for row in event_rows})
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


