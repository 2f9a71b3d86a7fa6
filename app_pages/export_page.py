"""Researcher page: download the dataset, and delete a participant's data on request."""

from app_pages.auth import require_researcher

me = require_researcher()

import streamlit as st  # noqa: E402

from app_pages import actions, get_engine, pick_study  # noqa: E402
from study.errors import UserError  # noqa: E402

engine = get_engine()
st.title("Export")
study_id = pick_study(engine, key="export-study")

st.subheader("Dataset")
st.write("One zip with the data (CSV and Parquet), codebook, datapackage.json, dataset_description.json, the exact "
         "study file and its hash. Participants appear under pseudonyms; Prolific ids are only in "
         "PAYMENTS_contains_identifiers.csv, which you should not share.")
include_pilot = st.checkbox("Include pilot participants", value=False)
if st.button("Prepare the dataset", type="primary"):
    with st.spinner("Writing the dataset ..."):
        try:
            st.session_state["export_zip"] = (study_id, actions.export(engine, me, study_id, include_pilot=include_pilot))
        except UserError as exc:
            st.error(str(exc))
ready = st.session_state.get("export_zip")
if ready and ready[0] == study_id:
    st.download_button(f"Download {study_id}.zip ({len(ready[1]) / 1e6:.1f} MB)", ready[1],
                       file_name=f"{study_id}.zip", mime="application/zip", key="download-zip")

if actions.may(engine, me, "change", study_id):
    st.divider()
    st.subheader("Delete a participant's data")
    st.write("For a deletion request: every row of the participant is removed; the audit log keeps only that a "
             "deletion happened (with a hash of the pseudonym). This cannot be undone.")
    ref = st.text_input("Pseudonym (e.g. P0007) or Prolific ID", key="delete-ref").strip()
    confirm = st.text_input("Type DELETE to confirm", key="delete-confirm")
    if st.button("Delete this participant", disabled=not ref or confirm != "DELETE"):
        try:
            n = actions.delete_participant(engine, me, study_id, ref)
            st.success(f"Deleted {ref}: {n} rows removed. An audit entry records the deletion.")
        except UserError as exc:
            st.error(str(exc))
