"""Researcher page: the studies this researcher may see, their status, and what to paste into Prolific.

Buttons a role may not use are not shown; the actions themselves (app_pages.actions) check the
role and study access on the server again.
"""

from app_pages.auth import require_researcher

me = require_researcher()

import streamlit as st  # noqa: E402

from app_pages import actions, get_engine, preview  # noqa: E402
from study import store  # noqa: E402
from study.access import pilot_key  # noqa: E402
from study.errors import UserError  # noqa: E402
from study.recruitment import eligible_csv, followup_recruitment, recruitment  # noqa: E402

engine = get_engine()
st.title("Studies")
if me.account:
    st.caption(f"Logged in as **{me.username}** ({me.role})")

rows = actions.studies(engine, me)
may_register = actions.may(engine, me, "register")
if not rows:
    st.info("No study registered yet. Register a study file below (or run `kuleshov study register STUDY.yaml`)."
            if may_register else "No study you have access to yet (an owner can grant it: "
            f"`kuleshov researcher grant {me.username} STUDY`).")

base = st.context.url.split("?")[0].rstrip("/") if getattr(st.context, "url", None) else ""
base = base.rsplit("/", 1)[0] if base.endswith(("/studies", "/researcher-studies")) else base


def _recruitment_help(study_id: str) -> None:
    try:
        info = store.get_study(engine, study_id)
    except UserError as exc:
        st.error(str(exc))
        return
    r = recruitment(base, study_id, info.study.completion)
    with st.expander("Recruitment: links and completion for Prolific", expanded=False):
        st.markdown("**Study URL for Prolific** (Prolific fills in PROLIFIC_PID, STUDY_ID and SESSION_ID):")
        st.code(r.prolific_link, language=None)
        st.markdown("**Completion code** (Prolific: *How to confirm participants have completed your study* "
                    "-> completion code):")
        st.code(r.completion_code or "(none set in the study file's completion.code)", language=None)
        if r.completion_url:
            st.markdown("**Completion URL** participants are sent to at the end (angle brackets: filled in per "
                        "participant):")
            st.code(r.completion_url, language=None)
        st.markdown("**Anonymous link** (no panel ids; for a mailing list or a lab session):")
        st.code(r.anonymous_link, language=None)
        if r.anonymous_completion_url:
            st.markdown("Anonymous participants are sent to:")
            st.code(r.anonymous_completion_url, language=None)
        for note in r.notes:
            st.caption(note)
    for fu in getattr(info.study, "follow_ups", None) or []:
        _followup_help(study_id, fu)


def _followup_help(study_id: str, fu) -> None:
    """Per follow-up: its Prolific link and completion, and the Prolific IDs now eligible."""
    r = followup_recruitment(base, study_id, fu)
    with st.expander(f"Follow-up `{fu.name}`: who to invite, link and completion", expanded=False):
        try:
            rows = actions.followup_invitations(engine, me, study_id, fu.name)
        except UserError as exc:
            st.error(str(exc))
            return
        due = [row for row in rows if row["open_now"] and row["followup_status"] != "completed"]
        waiting = sum(not row["open_now"] for row in rows)
        done = sum(row["followup_status"] == "completed" for row in rows)
        st.markdown(f"**Eligible now**: {len(due)} (of whom late: {sum(row['late'] for row in due)}) · "
                    f"not yet open: {waiting} · completed: {done}")
        pids = [row["prolific_pid"] for row in due if row["prolific_pid"]]
        st.markdown("**Prolific IDs eligible now** (paste into the follow-up study's allowlist):")
        st.code(", ".join(pids) if pids else "(none yet)", language=None, wrap_lines=True)
        st.download_button("Download the list (CSV)", eligible_csv(rows), file_name=f"{study_id}-{fu.name}-eligible.csv",
                           mime="text/csv", key=f"fu-csv-{study_id}-{fu.name}")
        st.markdown("**Study URL for the Prolific follow-up study** (finds each participant's session by PROLIFIC_PID):")
        st.code(r.prolific_link, language=None)
        st.markdown("**Completion code of the follow-up:**")
        st.code(r.completion_code or "(none set in this follow-up's completion.code)", language=None)
        if r.completion_url:
            st.markdown("Follow-up participants are sent to:")
            st.code(r.completion_url, language=None)
        st.markdown("Anonymous participants get their own link at the end of session 1, of this form:")
        st.code(r.personal_link, language=None)
        for note in r.notes:
            st.caption(note)


for row in rows:
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(row["by_status"].items())) or "no participants yet"
    with st.container(border=True):
        st.subheader(f"{row['title']}")
        st.caption(f"id `{row['id']}` · version {row['version']} · status **{row['status']}** · {counts}")
        if actions.may(engine, me, "change", row["id"]):
            cols = st.columns(3)
            for col, (label, status) in zip(cols, (("Open", "open"), ("Pause", "paused"), ("Close", "closed"))):
                if col.button(label, key=f"{row['id']}-{status}", disabled=row["status"] == status,
                              help={"open": "take new participants",
                                    "paused": "only pilot links may enrol; participants already in can finish",
                                    "closed": "nobody enrols or submits; participants see a polite message"}[status]):
                    try:
                        actions.set_status(engine, me, row["id"], status)
                        st.rerun()
                    except UserError as exc:
                        st.error(str(exc))
        preview.link(row["id"])  # every step as a participant sees it, recording nothing
        _recruitment_help(row["id"])
        key = pilot_key(row["id"])
        if key and actions.may(engine, me, "change", row["id"]):
            st.markdown("Pilot link (data flagged as pilot and left out of the analysis by default):")
            st.code(f"{base}/?study={row['id']}&pilot={key}", language=None)

if may_register:
    st.divider()
    st.subheader("Register a study file")
    path = st.text_input("Path of the study file on the server", placeholder="stimuli/demo/study.yaml")
    if st.button("Register", disabled=not path):
        try:
            study_id = actions.register(engine, me, path)
            st.success(f"Registered {study_id}.")
            st.rerun()
        except UserError as exc:
            st.error(str(exc))
