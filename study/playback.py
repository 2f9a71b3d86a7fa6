"""What one clip's playback events say about how it was seen and heard (pure, no database).

The player (components/player/player.js) reports events, each with its `seq` (unique per
participant and clip, increasing within one page load and across reloads), the video's
`media_time` (seconds) and the browser clock `client_time` (ms since the epoch). From the
stored events of one trial, `trial_metrics` computes the columns of the trials table an
exclusion rule needs (PLAYBACK_METRICS). It runs when the trial is submitted and again when
a late batch of the same trial's events arrives (study/store/events.py), so the row always
follows from the events alone.

Robust to what the network does to events: they are ordered by seq (batches may arrive out
of order), a repeated seq counts once, and a stretch whose closing event never came (hidden
tab never shown again, offline never back online, a stall without `playing`) is closed at the
trial's last event.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

# Columns written on the trials table, in this order (migration 0005, export, codebook).
PLAYBACK_METRICS = ("play_count", "replayed", "skipped", "seconds_hidden", "share_muted", "seconds_stalled",
                    "load_ms", "seconds_offline")

# A rise of media time this much larger than the wall time between two events is a jump (a
# seek whose event was lost, a reload), not playback.
JUMP_SLACK_S = 1.5
# A play that starts below this media time, after the clip had got past RESTART_FROM, starts the clip again.
RESTART_AT_S = 0.5
RESTART_FROM_S = 1.0

_STARTS_PLAYING = {"play", "playing"}
_STOPS_PLAYING = {"pause", "ended", "error"}
_ENDS_STALL = {"playing", "pause", "ended", "error", "skip", "seeked"}


@dataclass(frozen=True)
class TrialMetrics:
    """How a clip was played. None where the events cannot tell (e.g. share_muted of a clip
    that never played, load_ms when the clip never became playable)."""

    play_count: int
    replayed: bool
    skipped: bool
    seconds_hidden: float
    share_muted: float | None
    seconds_stalled: float
    load_ms: int | None
    seconds_offline: float
    seconds_played: float  # media seconds played (the denominator of share_muted); not stored

    def row(self) -> dict[str, Any]:
        """The values for the trials table (PLAYBACK_METRICS)."""
        values = asdict(self)
        return {name: values[name] for name in PLAYBACK_METRICS}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def ordered(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Events by seq, each seq once (the first one seen), those without a whole-number seq dropped."""
    seen: dict[int, Mapping[str, Any]] = {}
    for ev in events:
        seq = ev.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq not in seen:
            seen[seq] = ev
    return [seen[s] for s in sorted(seen)]


class _Periods:
    """Wall time spent in a state that opens and closes by events (hidden, offline, stalled)."""

    def __init__(self) -> None:
        self.total_ms = 0.0
        self.since: float | None = None

    def open(self, at: float | None) -> None:
        if self.since is None and at is not None:
            self.since = at

    def close(self, at: float | None) -> None:
        if self.since is not None and at is not None:
            self.total_ms += max(0.0, at - self.since)
        if at is not None:
            self.since = None

    @property
    def is_open(self) -> bool:
        return self.since is not None


def trial_metrics(events: Iterable[Mapping[str, Any]]) -> TrialMetrics | None:
    """The PLAYBACK_METRICS of one trial from its playback events, or None without any event.

    - play_count: plays from the start (the first play, a play after `ended`, or one that
      starts again below 0.5 s after the clip had passed 1 s, e.g. after a reload);
      replayed = play_count > 1; skipped = a `skip` event (the clip failed and was skipped).
    - seconds_hidden: wall time during which the page was hidden (`visibility_hidden` ..
      `visibility_visible`) or the window out of focus (`window_blur` .. `window_focus`),
      overlaps counted once.
    - share_muted: of the media seconds played (media time advancing between consecutive
      events while playing; seeks and jumps excluded), the share played muted or at volume 0,
      from `volume` events (detail: volume 0-1, muted); before the first one, sound is on.
    - seconds_stalled: wall time from `waiting` or `stalled` during playback to the next
      `playing` (or pause, ended, error, skip, seeked).
    - load_ms: the player's load time of the clip (source set to `canplay`), of the first
      `canplay` after the last `retry`.
    - seconds_offline: wall time from `offline` to `online`.
    """
    evs = ordered(events)
    if not evs:
        return None
    play_count = 0
    skipped = False
    playing = False
    furthest = 0.0
    after_end = False
    muted = False
    rate = 1.0
    last_mt: float | None = None
    last_ct: float | None = None
    played = muted_played = 0.0
    hidden = blurred = False
    away, offline, stalled = _Periods(), _Periods(), _Periods()
    load_ms: int | None = None
    last_time: float | None = None

    for ev in evs:
        kind = ev.get("event") or ev.get("type")
        mt = _number(ev.get("media_time"))
        ct = _number(ev.get("client_time"))
        detail = ev.get("detail") if isinstance(ev.get("detail"), Mapping) else {}
        if ct is not None:
            last_time = ct

        # Playback between the previous event and this one (media time that advanced).
        if kind in ("seeking", "seeked"):
            target = _number(detail.get("from")) if kind == "seeking" and detail.get("blocked") else mt
            last_mt, last_ct = target, ct
        elif mt is not None:
            if playing and last_mt is not None:
                step = mt - last_mt
                wall = (ct - last_ct) / 1000 if ct is not None and last_ct is not None else None
                if step > 0 and (wall is None or step <= max(wall, 0.0) * max(rate, 1.0) + JUMP_SLACK_S):
                    played += step
                    if muted:
                        muted_played += step
            last_mt, last_ct = mt, ct
            furthest = max(furthest, mt)

        # State changes.
        if kind == "play":
            starts_over = mt is not None and mt < RESTART_AT_S and furthest > RESTART_FROM_S
            if play_count == 0 or after_end or starts_over:
                play_count += 1
                if starts_over:
                    furthest = mt or 0.0
            after_end = False
        if kind in _STARTS_PLAYING:
            playing = True
        elif kind in _STOPS_PLAYING:
            playing = False
        if kind == "ended":
            after_end = True
        elif kind == "seeking" and detail.get("replay"):
            after_end = True
        elif kind == "volume":
            volume = _number(detail.get("volume"))
            muted = bool(detail.get("muted")) or (volume is not None and volume <= 0)
        elif kind == "rate":
            rate = _number(detail.get("rate")) or 1.0
        elif kind == "skip":
            skipped = True
        elif kind == "retry":
            load_ms = None
        elif kind == "canplay" and load_ms is None:
            value = _number(detail.get("load_ms"))
            load_ms = int(round(value)) if value is not None and value >= 0 else None

        if kind in ("visibility_hidden", "visibility_visible", "window_blur", "window_focus"):
            if kind == "visibility_hidden":
                hidden = True
            elif kind == "visibility_visible":
                hidden = False
            elif kind == "window_blur":
                blurred = True
            else:
                blurred = False
            if hidden or blurred:
                away.open(ct)
            else:
                away.close(ct)
        elif kind == "offline":
            offline.open(ct)
        elif kind == "online":
            offline.close(ct)

        if kind in _ENDS_STALL:
            stalled.close(ct)
        elif kind in ("waiting", "stalled") and playing:
            stalled.open(ct)

    for periods in (away, offline, stalled):
        if periods.is_open:
            periods.close(last_time)
    return TrialMetrics(
        play_count=play_count,
        replayed=play_count > 1,
        skipped=skipped,
        seconds_hidden=round(away.total_ms / 1000, 3),
        share_muted=round(muted_played / played, 4) if played > 0 else None,
        seconds_stalled=round(stalled.total_ms / 1000, 3),
        load_ms=load_ms,
        seconds_offline=round(offline.total_ms / 1000, 3),
        seconds_played=round(played, 3),
    )
