"""Researcher login: one shared password, compared in constant time, with failed logins limited.

The password comes from study.access.researcher_password (KULESHOV_RESEARCHER_PASSWORD or
`researcher_password` in .streamlit/secrets.toml); `serve()` refuses to start in production
mode without one (the demo generates one and prints it). Failed attempts are limited three ways, because a reload gives an
attacker a fresh Streamlit session: per session, per client address and for the whole process.
Every failure and lockout goes to the audit log.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque

import streamlit as st

# The participant page checks pilot links through this module.
from study.access import is_pilot_key, researcher_password  # noqa: F401

SESSION_KEY = "_kuleshov_researcher"
WINDOW_S = 15 * 60
MAX_PER_SESSION = 5
MAX_PER_ADDRESS = 10
MAX_GLOBAL = 30
LOCKOUT_S = 5 * 60


class _Limiter:
    """Sliding windows of failure times, per key; process-wide (all sessions are threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fails: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked_for(self, keys: list[str], now: float) -> float:
        """Seconds until every key may try again (0 if none is locked)."""
        with self._lock:
            return max((self._locked_until.get(k, 0.0) - now for k in keys), default=0.0)

    def fail(self, limits: dict[str, int], now: float) -> list[str]:
        """Record a failure under each key; return the keys that are now locked out."""
        locked = []
        with self._lock:
            for key, limit in limits.items():
                q = self._fails.setdefault(key, deque())
                q.append(now)
                while q and now - q[0] > WINDOW_S:
                    q.popleft()
                if len(q) >= limit:
                    self._locked_until[key] = now + LOCKOUT_S
                    q.clear()
                    locked.append(key)
            if len(self._fails) > 10_000:  # forget idle addresses so the dict cannot grow forever
                for key in [k for k, q in self._fails.items() if not q or now - q[-1] > WINDOW_S]:
                    self._fails.pop(key, None)
        return locked


LIMITER = _Limiter()


def password_ok(given: str, expected: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_researcher() -> bool:
    return bool(st.session_state.get(SESSION_KEY))


def _client_address() -> str:
    try:
        return str(st.context.ip_address or "unknown")
    except Exception:
        return "unknown"


def _session_id() -> str:
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

        ctx = get_script_run_ctx()
        return ctx.session_id if ctx else "none"
    except Exception:
        return "none"


def _audit(action: str, detail: dict) -> None:
    from app_pages import get_engine
    from study import store

    try:
        store.audit(get_engine(), "researcher-login", action, detail=detail)
    except Exception as exc:  # the audit log must never turn a login page into a traceback
        print(f"kuleshov: could not write audit log entry {action}: {exc}")


def attempt_login(given: str) -> tuple[bool, str]:
    """Check one login attempt against the limits and the password; returns (ok, message)."""
    now = time.monotonic()
    address = _client_address()
    keys = {f"session:{_session_id()}": MAX_PER_SESSION, f"address:{address}": MAX_PER_ADDRESS, "global": MAX_GLOBAL}
    wait = LIMITER.locked_for(list(keys), now)
    if wait > 0:
        _audit("login_refused_locked", {"address": address})
        return False, f"Too many failed logins. Try again in {int(wait // 60) + 1} minute(s)."
    expected = researcher_password()
    if expected is None:
        return False, "No researcher password is configured on this server (KULESHOV_RESEARCHER_PASSWORD)."
    if password_ok(given, expected):
        st.session_state[SESSION_KEY] = True
        _audit("login", {"address": address})
        return True, ""
    locked = LIMITER.fail(keys, now)
    _audit("login_failed", {"address": address, "locked": locked})
    # A short pause makes guessing slower without making a typo painful.
    time.sleep(0.5)
    return False, "Wrong password."


def login_form() -> None:
    st.title("Researcher login")
    st.caption("If you are taking part in a study, please use the link you were given.")
    with st.form("researcher-login", clear_on_submit=True):
        given = st.text_input("Password", type="password", key="researcher-password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        ok, message = attempt_login(given or "")
        if ok:
            st.rerun()
        st.error(message)


def require_researcher() -> None:
    """First line of every researcher page: show the login form and stop unless logged in."""
    if not is_researcher():
        login_form()
        st.stop()


def logout() -> None:
    st.session_state.pop(SESSION_KEY, None)
    st.rerun()
