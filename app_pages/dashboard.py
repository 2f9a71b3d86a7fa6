"""Researcher page: live monitoring of a running study, and interim results on demand.

The monitoring part is a fragment that reruns on its own every few seconds (no page reload)
and only runs cheap aggregate queries (analysis.load.monitoring). Interim results run the full
analysis only when the button is pressed, cached by a fingerprint of the data, so a rerun of
the page never refits the models.
"""

from app_pages.auth import require_researcher

me = require_researcher()

import streamlit as st  # noqa: E402

from app_pages import actions, get_engine, pick_study  # noqa: E402
from study import store  # noqa: E402
from study.errors import UserError  # noqa: E402

REFRESH_S = 3
STATUS_ORDER = ["started", "in_progress", "completed", "withdrawn", "declined", "timed_out", "ineligible_device",
                "excluded"]

engine = get_engine()
st.title("Dashboard")
study_id = pick_study(engine, key="dashboard-study")
actions.view(engine, me, study_id)  # the selector offers only these; checked on the server all the same


@st.fragment(run_every=REFRESH_S)
def live(study_id: str) -> None:
    import pandas as pd

    from analysis import load

    # Read only: timeouts are marked by the server's own job (server.TimeoutJob), not here.
    m = load.monitoring(engine, study_id)
    people = m.participants
    counts = people["status"].value_counts().to_dict()
    # Failing the device check is counted under its own status, not again as an exclusion.
    counts["excluded"] = int((people["excluded_reason"].notna() & (people["status"] != "ineligible_device")).sum())
    st.caption(f"Updates every {REFRESH_S} s · {len(people)} participants enrolled")
    cols = st.columns(len(STATUS_ORDER))
    for col, status in zip(cols, STATUS_ORDER):
        col.metric(status.replace("_", " ").capitalize(), int(counts.get(status, 0)))
    st.markdown(f'<span data-testid="live-total" style="display:none">{len(people)}</span>'
                f'<span data-testid="live-completed" style="display:none">{int(counts.get("completed", 0))}</span>',
                unsafe_allow_html=True)

    left, right = st.columns(2)
    with left:
        st.subheader("Completion time")
        done = people["duration_s"].dropna() / 60
        if len(done):
            st.write(f"Median {done.median():.1f} min (IQR {done.quantile(.25):.1f} to {done.quantile(.75):.1f}); "
                     f"{len(done)} completed.")
            st.bar_chart(pd.cut(done, bins=min(20, max(3, len(done) // 3)), precision=1).value_counts(sort=False)
                         .rename(index=str).rename_axis("minutes"), height=180)
        else:
            st.write("Nobody has completed yet.")
    with right:
        st.subheader("Drop-out by step")
        import plotly.graph_objects as go

        # Steps in the order participants meet them (st.bar_chart would sort them by name).
        funnel = go.Figure(go.Bar(x=m.funnel["reached"], y=m.funnel["step"], orientation="h"))
        funnel.update_layout(height=max(220, 22 * len(m.funnel)), margin=dict(l=0, r=0, t=10, b=0),
                             yaxis=dict(autorange="reversed"), xaxis_title="participants who reached the step")
        st.plotly_chart(funnel, key="funnel")
        stopped = m.funnel[m.funnel["stopped_here"] > 0]
        if len(stopped):
            st.dataframe(stopped, hide_index=True)

    st.subheader("Clips: ratings and playback")
    st.caption("Mean rating of the primary outcome" + (f" ({m.outcome})" if m.outcome else "")
               + ", share watched, mean share played muted, mean seconds the page was hidden or out of focus, "
                 "mean load time (ms), and player problems (error = failed load, stalled/waiting = buffering, "
                 "play_rejected = autoplay blocked).")
    st.dataframe(m.clips, hide_index=True)

    st.subheader("Balance of lists and label conditions")
    active = people[people["status"] != "declined"]
    if len(active):
        table = pd.crosstab(active["list_index"].astype(str), active["label_condition"], margins=True,
                            margins_name="total")
        st.dataframe(table.rename_axis(index="list", columns="label condition"))

    failed = people[people["failed_attention"] > 0]
    st.subheader(f"Attention-check failures ({len(failed)})")
    if len(failed):
        st.dataframe(failed[["participant_id", "status", "failed_attention", "excluded_reason"]], hide_index=True)


live(study_id)

with st.expander("Payments: completion codes and Prolific ids"):
    st.caption("Contains identifiers. Use it to approve submissions on Prolific; do not share it.")
    if st.button("Show payment table"):
        from analysis.export import payments_csv, payments_table
        from analysis.formatting import csv_safe

        info = store.get_study(engine, study_id)
        pay = payments_table(engine, study_id, info.study.completion.code, include_pilot=True)
        # Prolific ids arrive in the link: neutralised here too, as the grid offers its own CSV download.
        st.dataframe(csv_safe(pay), hide_index=True)
        st.download_button("Download as CSV", payments_csv(pay), file_name=f"{study_id}-payments.csv",
                           mime="text/csv")


@st.cache_data(show_spinner=False, max_entries=8)
def interim_report(study_id: str, fingerprint: str) -> str:
    """The interim HTML report for one state of the data (the fingerprint is the cache key)."""
    from analysis import load, marks, report, trace_report

    data = load.load_trials(engine, study_id)
    traces, moments = trace_report.load_time_courses(engine, study_id)
    files = marks.clip_files(engine, study_id) if traces is not None or moments is not None else {}
    return report.build_report(data.trials, study=data.study, participants=data.participants,
                               excluded=data.excluded, interim=True, include_pilot=False,
                               data_source=f"database, study {study_id}", traces=traces, marks=moments,
                               clip_files=files)


@st.cache_data(show_spinner=False, max_entries=8)
def time_course_figures(study_id: str, fingerprint: str) -> list:
    """Mean curves by source and mark densities for one state of the data (None: nothing recorded)."""
    from analysis import load, marks, trace_report

    traces, moments = trace_report.load_time_courses(engine, study_id)
    if traces is None and moments is None:
        return []
    trials = load.load_trials(engine, study_id).trials
    return trace_report.dashboard_figures(traces, moments, trials, marks.clip_files(engine, study_id))


with st.expander("Feeling over time and moments marked"):
    st.caption("Mean continuous ratings by source (95% bands across participants) and the density of marked "
               "moments per clip, with the clip's frames under the time axis. Empty when the study records neither.")
    if st.button("Show curves and marks"):
        from analysis import load

        figs = time_course_figures(study_id, load.monitoring(engine, study_id).fingerprint)
        if not figs:
            st.write("This study has no continuous ratings or marks yet.")
        for i, fig in enumerate(figs):
            st.plotly_chart(fig, key=f"time-course-{i}")

st.divider()
st.subheader("Interim results")
st.warning("INTERIM: data collection is still running. Exclusions are applied; results are provisional "
           "and must not be used to decide when to stop.")
if st.button("Compute interim results", type="primary"):
    from analysis import load

    fingerprint = load.monitoring(engine, study_id).fingerprint
    with st.spinner("Fitting the models on the current data ..."):
        try:
            st.session_state["interim"] = (study_id, interim_report(study_id, fingerprint))
        except UserError as exc:
            st.session_state.pop("interim", None)
            st.error(f"No interim results: {exc}")
shown = st.session_state.get("interim")
if shown and shown[0] == study_id:
    st.iframe(shown[1], height=900)
    st.download_button("Download the interim report (HTML)", shown[1], file_name=f"{study_id}-interim.html",
                       mime="text/html")
