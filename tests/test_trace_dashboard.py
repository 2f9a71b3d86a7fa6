"""The dashboard's "Feeling over time and moments marked" expander (app_pages/dashboard.py), run
in-process with Streamlit's AppTest on a simulated demo study, so the loader can be given traces
and marks (synthetic here until capture stores them)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis import load, trace_synthetic

ROOT = Path(__file__).resolve().parent.parent
SESSION_KEY = "_kuleshov_researcher"  # app_pages.auth.SESSION_KEY: logged in (single-password mode)


def _dashboard(sqlite_url, monkeypatch, with_traces: bool) -> AppTest:
    from study import simulate, store

    monkeypatch.setenv("KULESHOV_DATABASE_URL", sqlite_url)
    engine = store.make_engine(sqlite_url)
    try:
        store.upgrade(engine)
        simulate.simulate(engine, str(ROOT / "stimuli" / "demo" / "study.yaml"), 4, seed=1)
        people = sorted(load.load_trials(engine, "kuleshov-demo").trials["participant_id"].unique())
    finally:
        engine.dispose()
    if with_traces:
        syn = trace_synthetic.synthetic_traces(len(people), seed=1)
        rename = dict(zip(sorted(syn.traces["participant"].unique()), people))
        monkeypatch.setattr(load, "load_traces", lambda e, s: syn.traces.assign(
            participant=syn.traces["participant"].map(rename)), raising=False)
        monkeypatch.setattr(load, "load_marks", lambda e, s: syn.marks.assign(
            participant=syn.marks["participant"].map(rename)), raising=False)
    else:
        monkeypatch.delattr(load, "load_traces", raising=False)
        monkeypatch.delattr(load, "load_marks", raising=False)
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app_pages" / "dashboard.py"), default_timeout=120)
    at.session_state[SESSION_KEY] = store.SHARED  # the one-person lab's shared-password login
    at.run()
    assert not at.exception
    return at


def test_dashboard_shows_curves_and_mark_densities(sqlite_url, monkeypatch):
    at = _dashboard(sqlite_url, monkeypatch, with_traces=True)
    before = len(at.get("plotly_chart"))  # the drop-out funnel
    next(b for b in at.button if b.label == "Show curves and marks").click().run()
    assert not at.exception
    # one mean-curve chart (1-D rating) and one mark density per demo clip
    assert len(at.get("plotly_chart")) == before + 1 + len(trace_synthetic.DEMO_CLIPS)


def test_dashboard_without_traces_says_so(sqlite_url, monkeypatch):
    at = _dashboard(sqlite_url, monkeypatch, with_traces=False)
    next(b for b in at.button if b.label == "Show curves and marks").click().run()
    assert not at.exception
    assert any("no continuous ratings or marks yet" in m.value for m in at.markdown)
