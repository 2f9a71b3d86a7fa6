"""Researcher page: the studies in the database, their status, and their participant links."""

from app_pages.auth import require_researcher

require_researcher()

from pathlib import Path  # noqa: E402

import streamlit as st  # noqa: E402

from app_pages import get_engine  # noqa: E402
from study import store  # noqa: E402
from study.access import pilot_key  # noqa: E402
from study.errors import UserError  # noqa: E402

engine = get_engine()
st.title("Studies")

rows = store.list_studies(engine)
if not rows:
    st.info("No study registered yet. Register a study file below (or run `kuleshov study register STUDY.yaml`).")

base = st.context.url.split("?")[0].rstrip("/") if getattr(st.context, "url", None) else ""
base = base.rsplit("/", 1)[0] if base.endswith("/studies") else base

for row in rows:
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(row["by_status"].items())) or "no participants yet"
    with st.container(border=True):
        st.subheader(f"{row['title']}")
        st.caption(f"id `{row['id']}` · version {row['version']} · status **{row['status']}** · {counts}")
        cols = st.columns(3)
        for col, (label, status) in zip(cols, (("Open", "open"), ("Pause", "paused"), ("Close", "closed"))):
            if col.button(label, key=f"{row['id']}-{status}", disabled=row["status"] == status,
                          help={"open": "take new participants",
                                "paused": "only pilot links may enrol; participants already in can finish",
                                "closed": "nobody enrols or submits; participants see a polite message"}[status]):
                store.set_study_status(engine, row["id"], status, actor="researcher")
                st.rerun()
        link = f"{base}/?study={row['id']}"
        st.markdown("Participant link (Prolific appends PROLIFIC_PID, STUDY_ID and SESSION_ID):")
        st.code(link + "&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}",
                language=None)
        key = pilot_key(row["id"])
        if key:
            st.markdown("Pilot link (data flagged as pilot and left out of the analysis by default):")
            st.code(f"{link}&pilot={key}", language=None)

st.divider()
st.subheader("Register a study file")
path = st.text_input("Path of the study file on the server", placeholder="stimuli/demo/study.yaml")
if st.button("Register", disabled=not path):
    try:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file on the server")
        study_id = store.register_study(engine, path, actor="researcher")
        st.success(f"Registered {study_id}.")
        st.rerun()
    except UserError as exc:
        st.error(str(exc))
