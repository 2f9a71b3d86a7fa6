"""The trials table's playback columns, written from the trial's stored events (study/playback.py)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from study.playback import trial_metrics
from study.store.tables import playback_events, trials

_E = playback_events.c
_EVENTS = (sa.select(_E.seq, _E.event, _E.media_time, _E.client_time, _E.detail)
           .where(_E.participant_id == sa.bindparam("pid"), _E.position == sa.bindparam("pos")))


def refresh_trial_metrics(conn: Connection, participant_id: int, position: int) -> dict | None:
    """Recompute one trial's playback columns from all its stored events; returns what was
    written (None, and nothing written, when the trial has no events: a row filled by a
    submit without playback keeps what the submit gave)."""
    rows = conn.execute(_EVENTS, {"pid": participant_id, "pos": position}).mappings().all()
    metrics = trial_metrics(rows)
    if metrics is None:
        return None
    values = metrics.row()
    conn.execute(trials.update().where(trials.c.participant_id == participant_id, trials.c.position == position)
                 .values(**values))
    return values


def refresh_submitted(conn: Connection, participant_id: int, positions: set[int]) -> None:
    """refresh_trial_metrics for those of `positions` whose ratings are already submitted: events
    that arrive after the submit (the player's last batch) still reach the row."""
    if not positions:
        return
    done = conn.execute(sa.select(trials.c.position).where(
        trials.c.participant_id == participant_id, trials.c.position.in_(sorted(positions)),
        trials.c.submitted_at.is_not(None))).scalars().all()
    for position in done:
        refresh_trial_metrics(conn, participant_id, position)
