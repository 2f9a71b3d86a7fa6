"""Researcher page (owners only): the team's accounts, their roles and study access.

Every button goes through app_pages.actions, which checks on the server that the researcher is
an owner (the sidebar shows this page to owners only, which is a courtesy, not the check).
"""

from app_pages.auth import require_researcher

me = require_researcher()

import streamlit as st  # noqa: E402

from app_pages import actions, get_engine  # noqa: E402
from study import store  # noqa: E402
from study.errors import UserError  # noqa: E402

engine = get_engine()
st.title("Accounts")
try:
    rows = actions.accounts(engine, me)
except UserError as exc:
    st.error(str(exc))
    st.stop()

st.dataframe([{"username": r["username"], "role": r["role"], "status": "LOCKED" if r["locked"] else "active",
               "failed logins": r["failed_logins"], "last login": r["last_login_at"],
               "studies": "all" if r["role"] == "owner" else ", ".join(r["studies"])} for r in rows],
             hide_index=True)


def run(action, done: str) -> None:
    try:
        action()
        st.session_state["accounts-done"] = done
        st.rerun()
    except UserError as exc:
        st.error(str(exc))


if st.session_state.get("accounts-done"):
    st.success(st.session_state.pop("accounts-done"))

st.subheader("Add a researcher")
with st.form("add-researcher", clear_on_submit=True):
    name = st.text_input("Username", key="new-username")
    role = st.selectbox("Role", store.RESEARCHER_ROLES, index=1, key="new-role",
                        help="owner: everything; editor: register and run the studies granted; viewer: dashboard "
                             "and export of the studies granted")
    pw1 = st.text_input("Password", type="password", key="new-password")
    pw2 = st.text_input("Password again", type="password", key="new-password-2")
    if st.form_submit_button("Add"):
        if pw1 != pw2:
            st.error("The two passwords differ.")
        else:
            run(lambda: actions.add_account(engine, me, name, pw1, role), f"Added {role} {name}.")

others = [r["username"] for r in rows if r["username"] != me.username]
if others:
    st.subheader("Change an account")
    who = st.selectbox("Researcher", others, key="change-who")
    cols = st.columns(3)
    locked = next(r["locked"] for r in rows if r["username"] == who)
    if cols[0].button("Unlock" if locked else "Lock", key="lock"):
        run(lambda: actions.lock_account(engine, me, who, not locked), f"{who} {'unlocked' if locked else 'locked'}.")
    if cols[1].button("Delete", key="delete"):
        run(lambda: actions.delete_account(engine, me, who), f"Deleted {who}.")
    study_ids = [s["id"] for s in store.list_studies(engine)]
    if study_ids:
        study = st.selectbox("Study", study_ids, key="grant-study")
        g1, g2 = st.columns(2)
        if g1.button("Grant access", key="grant"):
            run(lambda: actions.grant_access(engine, me, who, study), f"{who} may now see {study}.")
        if g2.button("Revoke access", key="revoke"):
            run(lambda: actions.grant_access(engine, me, who, study, revoke=True), f"{who} no longer sees {study}.")
