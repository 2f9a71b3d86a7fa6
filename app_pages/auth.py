"""Researcher login: researcher accounts when any exists, else one shared password.

Accounts (study/store/researchers.py, made with `kuleshov researcher add`): the form asks for
a username and a password, checked with argon2 (an unknown name costs the same time), the same
message for every failure, and the account locked after store.MAX_FAILED_LOGINS wrong passwords.
The session keeps the store.Researcher; every page re-checks it (require_researcher), so a
locked or deleted account is logged out at its next click.

Shared password (no account exists, a one-person lab): compared in constant time.

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
    return isinstance(st.session_state.get(SESSION_KEY), store_researcher())


def store_researcher():
    from study.store.researchers import Researcher

    return Researcher


def who():
    """The logged-in researcher (a store.Researcher); SHARED in single-password mode."""
    value = st.session_state.get(SESSION_KEY)
    if not isinstance(value, store_researcher()):
        raise RuntimeError("who() called before require_researcher()")
    return value


def accounts_mode() -> bool:
    """True once any researcher account exists (then the shared password no longer logs in)."""
    from app_pages import get_engine
    from study import store

    try:
        return store.has_accounts(get_engine())
    except Exception as exc:  # a database behind on migrations: say so, keep the shared password
        print(f"kuleshov: could not read researcher accounts ({exc.__class__.__name__}); run `kuleshov db upgrade`")
        return False


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


def attempt_login(given: str, username: str | None = None) -> tuple[bool, str]:
    """Check one login attempt against the limits and the password; returns (ok, message).

    With `username` (accounts mode) the account's own password and lockout apply as well."""
    from study import store

    now = time.monotonic()
    address = _client_address()
    keys = {f"session:{_session_id()}": MAX_PER_SESSION, f"address:{address}": MAX_PER_ADDRESS, "global": MAX_GLOBAL}
    wait = LIMITER.locked_for(list(keys), now)
    if wait > 0:
        _audit("login_refused_locked", {"address": address})
        return False, f"Too many failed logins. Try again in {int(wait // 60) + 1} minute(s)."
    if username is not None:
        from app_pages import get_engine

        result = store.login(get_engine(), username, given, detail={"address": address})
        if result.ok:
            st.session_state[SESSION_KEY] = result.researcher
            return True, ""
        LIMITER.fail(keys, now)
        time.sleep(0.5)
        return False, result.message
    expected = researcher_password()
    if expected is None:
        return False, "No researcher password is configured on this server (KULESHOV_RESEARCHER_PASSWORD)."
    if password_ok(given, expected):
        st.session_state[SESSION_KEY] = store.SHARED
        _audit("login", {"address": address})
        return True, ""
    locked = LIMITER.fail(keys, now)
    _audit("login_failed", {"address": address, "locked": locked})
    # A short pause makes guessing slower without making a typo painful.
    time.sleep(0.5)
    return False, "Wrong password."


def login_form(message: str | None = None) -> None:
    st.title("Researcher login")
    st.caption("If you are taking part in a study, please use the link you were given.")
    if message:
        st.warning(message)
    accounts = accounts_mode()
    with st.form("researcher-login", clear_on_submit=True):
        username = st.text_input("Username", key="researcher-username") if accounts else None
        given = st.text_input("Password", type="password", key="researcher-password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        ok, message = attempt_login(given or "", (username or "") if accounts else None)
        if ok:
            st.rerun()
        st.error(message)


def require_researcher():
    """First line of every researcher page: show the login form and stop unless logged in as a
    researcher whose account still exists and is not locked. Returns the researcher."""
    from app_pages import get_engine
    from study import store

    if not is_researcher():
        login_form()
        st.stop()
    try:
        return store.current_researcher(get_engine(), who())
    except store.Forbidden as exc:
        st.session_state.pop(SESSION_KEY, None)
        login_form(f"You were logged out: {exc}.")
        st.stop()


def refuse(exc: Exception) -> None:
    """Show a refused or failed action as a sentence."""
    st.error(str(exc))


def logout() -> None:
    st.session_state.pop(SESSION_KEY, None)
    st.rerun()
