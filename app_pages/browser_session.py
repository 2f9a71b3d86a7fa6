"""What the participant's browser keeps between visits, and how the study ends in it.

`components/session/` holds two tiny Streamlit components v2 (plain JS, no build):

- keeper: the participant's token in localStorage, per study. A link without `?t=` (a study
  link reopened, or Back to the first address and a reload) asks the browser first, and a
  stored token of this study resumes that participant instead of enrolling a new one. A reload
  keeps the participant anyway: the token is also in the address bar (st.query_params survives
  a reload; st.session_state does not).
- redirect: the completion page's countdown and redirect, in the same tab.

Pure part, tested without a browser: `resumable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from app_pages import browser_component

KEEPER_KEY = "kuleshov-participant-token"


_keeper = browser_component("kuleshov.token", "session", "keeper.html", js=("keeper.js",))
_redirect = browser_component("kuleshov.redirect", "session", "redirect.html", css=("redirect.css",),
                              js=("redirect.js",))


def _noop() -> None:
    return None


def stored_token(study_id: str, pilot: bool) -> str | None:
    """The token this browser keeps for the study ("" for none), or None until it has answered.

    The first run of a fresh session cannot know (the browser answers after it has drawn the
    component): the page then waits for the rerun the answer causes.
    """
    # The answer of the run before is in the session state before this run draws anything, so
    # a run that knows it draws the keeper once, later, with the token to keep (keep_token).
    stored = _stored(st.session_state.get(KEEPER_KEY))
    if isinstance(stored, dict) and stored.get("study") == study_id:
        token = stored.get("token")
        return token if isinstance(token, str) else ""
    _keeper(key=KEEPER_KEY, data={"study": study_id, "pilot": bool(pilot)},
            default={"stored": None}, on_stored_change=_noop)
    return None


def _stored(result: Any) -> Any:
    if isinstance(result, Mapping):
        return result.get("stored")
    return getattr(result, "stored", None)


def keep_token(study_id: str, token: str, pilot: bool) -> None:
    """Store the participant's token in the browser (every run: cheap, and survives a cleared storage)."""
    _keeper(key=KEEPER_KEY, data={"study": study_id, "pilot": bool(pilot), "token": token},
            default={"stored": None}, on_stored_change=_noop)


def resumable(state, study_id: str, is_pilot: bool) -> bool:
    """Whether a token the browser kept may stand in for enrolling on this study link.

    Only a participant of this very study, of the same kind (a pilot link never resumes a real
    participant, nor the other way round). Finished sessions resume too: they see their end page
    again rather than a second enrolment.
    """
    return state is not None and state.study_id == study_id and bool(state.is_pilot) == bool(is_pilot)


def redirect(url: str, seconds: int, texts: dict[str, str]) -> None:
    """Count down and go to `url` in this tab; the link in it goes at once."""
    _redirect(key="kuleshov-redirect", data={"url": url, "seconds": int(seconds), "texts": texts})
