"""Python side of the clip player (components/player, Streamlit components v2).

The browser code lives in plain files next to each other and is passed inline: components v2
then needs no build step and no asset manifest. continuous.js (continuous rating and moment
marks) is joined before player.js into one module, which calls it once per clip. The strings are multi-line on purpose, since a
one-line css/js string containing '/' is taken for an asset path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app_pages import browser_component, component_data

EVENTS_URL = "/api/events"


_player = browser_component("kuleshov.player", "player", "player.html", css=("player.css", "continuous.css"),
                            js=("continuous.js", "player.js"))


@dataclass(frozen=True)
class PlayerStatus:
    """What the browser reported for this player instance (all False until it says so)."""

    share: float = 0.0
    enough: bool = False
    ended: bool = False
    failed: bool = False
    failure: str | None = None


def status_from_state(progress: Any, failure: Any, instance: str) -> PlayerStatus:
    """Read the component's state values, ignoring anything from an earlier instance."""
    share, enough, ended = 0.0, False, False
    if isinstance(progress, dict) and progress.get("instance") == instance:
        try:
            share = min(1.0, max(0.0, float(progress.get("share") or 0.0)))
        except (TypeError, ValueError):
            share = 0.0
        enough = bool(progress.get("enough"))
        ended = bool(progress.get("ended"))
    failed, message = False, None
    if isinstance(failure, dict) and failure.get("instance") == instance:
        failed = True
        message = str(failure.get("message") or failure.get("code") or "unknown error")[:200]
    return PlayerStatus(share=share, enough=enough, ended=ended, failed=failed, failure=message)


def _noop() -> None:
    return None


def player(
    *,
    key: str,
    instance: str,
    src: str,
    token: str,
    position: int,
    stimulus_id: str,
    controls: bool,
    allow_seek: bool,
    min_share: float,
    duration: float | None = None,
    capture: dict | None = None,
    captions: str | None = None,
    texts: dict[str, str] | None = None,
    require_sound: bool = False,
    next_src: str | None = None,
    next_stimulus_id: str | None = None,
) -> PlayerStatus:
    """Mount the player; returns what the browser has reported so far.

    `key` must differ per trial (so one clip's 'watched enough' never carries over to the next);
    `instance` changes only when the clip must be loaded afresh. `next_src`: the next clip of
    the session, loaded in the background once this one has ended (preload).
    """
    data = {
        "instance": instance,
        "src": src,
        "token": token,
        "events_url": EVENTS_URL,
        "position": position,
        "stimulus_id": stimulus_id,
        "controls": bool(controls),
        "allow_seek": bool(allow_seek),
        "min_share": float(min_share),
        "duration": duration,
        "capture": capture,
        "traces_url": (capture or {}).get("traces_url"),
        "captions_src": captions,
        "require_sound": bool(require_sound),
        "next_src": next_src,
        "next_stimulus_id": next_stimulus_id,
        **(texts or {}),
    }
    result = _player(
        key=key,
        data=component_data(data),
        default={"progress": None, "failure": None},
        on_progress_change=_noop,
        on_failure_change=_noop,
    )
    return status_from_state(getattr(result, "progress", None), getattr(result, "failure", None), instance)
