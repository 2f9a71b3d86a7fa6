"""The report's sections on feeling over time and moments marked (analysis/trace_report.py):
shown only when there are traces or marks, with mean curves by source, the peak-end model and
mark densities with still frames of the clips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from test_report import SECTION_IDS, check_charts, check_self_contained

import cli
from analysis import load, report, trace_report, trace_synthetic

DEMO = Path(__file__).resolve().parent.parent / "stimuli" / "demo"
CLIP_FILES = {c: DEMO / f"{c}.mp4" for c in trace_synthetic.DEMO_CLIPS}
WITH_TRACES = SECTION_IDS[:SECTION_IDS.index("emotions") + 1] + ["traces", "marks"] + \
    SECTION_IDS[SECTION_IDS.index("emotions") + 1:]


def layout_of(page: str, div_id: str) -> dict:
    m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert m, div_id
    dec = json.JSONDecoder()
    _, end = dec.raw_decode(page, m.end())
    layout, _ = dec.raw_decode(page, page.index("{", end))
    return layout


def section(page: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}"[^>]*>.*?</section>', page, re.S).group(0)


def check_trace_sections(page: str, clips, peaks_expected: int | None = None) -> None:
    doc = check_self_contained(page)
    assert list(doc.sections) == WITH_TRACES
    assert doc.sections["traces"] == "shown" and doc.sections["marks"] == "shown"
    charts = ["chart-traces-source-rating"] + [f"chart-traces-clip-{c}-rating" for c in clips] + \
        [f"chart-marks-{c}-moved" for c in clips]
    check_charts(page, doc, charts)
    # mean curves by source: a line per source (and its band)
    names = {t.get("name") for t in json.JSONDecoder().raw_decode(
        page, re.search(r'Plotly\.newPlot\(\s*"chart-traces-source-rating",\s*', page).end())[0]}
    assert {"Human-made", "AI-generated"} <= names
    # the clip's timeline as thumbnails under the axis: 8 stills as data URIs
    for div in (f"chart-traces-clip-{clips[0]}-rating", f"chart-marks-{clips[0]}-moved"):
        images = layout_of(page, div)["images"]
        assert len(images) == trace_report.N_THUMBS
        assert all(i["source"].startswith("data:image/jpeg;base64,") for i in images)
    traces = section(page, "traces")
    pe = re.search(r'<table class="results" id="peak-end-table">.*?</table>', traces, re.S).group(0)
    for term in ("(Intercept)", "z_peak", "z_end", "z_mean"):
        assert f"<td>{term}</td>" in pe
    assert 'id="trace-agreement"' in traces and 'id="trace-source-table"' in traces
    marks = section(page, "marks")
    table = re.search(r'<table class="results" id="mark-peaks-table">.*?</table>', marks, re.S).group(0)
    stills = re.findall(r'<img class="still" alt="([^"]+)" src="data:image/jpeg;base64,', table)
    assert len(stills) == table.count("<tr>") - 1 > 0
    if peaks_expected is not None:
        assert len(stills) == peaks_expected


def test_report_with_traces_and_marks():
    st = trace_synthetic.synthetic_traces(16, seed=6, source_effect=1.0, mark_times=[2.0, 6.0], mark_prob=0.9)
    page = report.build_report(st.trials, traces=st.traces, marks=st.marks, clip_files=CLIP_FILES,
                               plan={"primary_outcome": "valence"})
    check_trace_sections(page, list(trace_synthetic.DEMO_CLIPS), peaks_expected=12)
    marks = section(page, "marks")
    # the two planted moments of every clip, each with the frame shown then
    times = sorted({float(m) for m in re.findall(r"at (\d+\.\d+) s\"", marks)})
    assert all(min(abs(t - 2.0), abs(t - 6.0)) <= 0.2 for t in times), times
    pe = section(page, "traces")
    assert "valence ~ z_peak + z_end + z_mean + (1 | participant) + (1 | clip)" in pe


def test_report_without_traces_has_no_trace_sections():
    st = trace_synthetic.synthetic_traces(8, seed=6)
    page = report.build_report(st.trials, traces=st.traces.iloc[0:0], marks=None)
    assert list(check_self_contained(page).sections) == SECTION_IDS


def test_no_loader_no_traces(monkeypatch):
    monkeypatch.delattr(load, "load_traces", raising=False)
    monkeypatch.delattr(load, "load_marks", raising=False)
    assert trace_report.load_time_courses(None, "any") == (None, None)


def test_kuleshov_report_on_a_simulated_study(sqlite_url, tmp_path, monkeypatch):
    """Bots through the real flow into SQLite, traces and marks for those participants from the
    loader (synthetic here until capture stores them), then `kuleshov report` on the study file:
    the stills come from the registered demo clips."""
    from study import simulate, store

    demo = DEMO / "study.yaml"
    engine = store.make_engine(sqlite_url)
    try:
        store.upgrade(engine)
        simulate.simulate(engine, str(demo), 10, effect=0.5, seed=3)
        trials = load.load_trials(engine, "kuleshov-demo").trials
    finally:
        engine.dispose()
    people = sorted(trials["participant_id"].unique())
    st = trace_synthetic.synthetic_traces(len(people), seed=9, mark_times=[3.0])
    rename = dict(zip(sorted(st.traces["participant"].unique()), people))
    calls = []

    def fake(frame):
        def loader(eng, study_id):
            calls.append(study_id)
            return frame.assign(participant=frame["participant"].map(rename))
        return loader

    monkeypatch.setattr(load, "load_traces", fake(st.traces), raising=False)
    monkeypatch.setattr(load, "load_marks", fake(st.marks), raising=False)
    out = tmp_path / "demo.html"
    assert cli.main(["report", str(demo), "--out", str(out), "--url", sqlite_url]) == 0
    assert calls == ["kuleshov-demo", "kuleshov-demo"]
    page = out.read_text(encoding="utf-8")
    check_trace_sections(page, list(trace_synthetic.DEMO_CLIPS))
    # the trace summaries met the participants' own post-clip ratings
    pe = re.search(r'id="peak-end-table">.*?</table>', section(page, "traces"), re.S).group(0)
    n_trials = {int(v) for v in re.findall(r"<td class=num>(\d+)</td>", pe)}
    assert len(trials) in n_trials  # every kept trial had a trace and a valence rating
    # and `kuleshov analyze` writes the same results as tables
    tables = tmp_path / "tables"
    assert cli.main(["analyze", str(demo), "--out", str(tables), "--url", sqlite_url]) == 0
    for name in ("trace_summaries", "trace_curves", "trace_agreement", "peak_end", "trace_source_tests",
                 "mark_peaks"):
        assert (tables / f"{name}.csv").is_file(), name
    summaries = pd.read_csv(tables / "trace_summaries.csv")
    assert len(summaries) == len(trials) and summaries["valence"].notna().all()
    peak_end = pd.read_csv(tables / "peak_end.csv")
    assert list(peak_end["term"]) == ["(Intercept)", "z_peak", "z_end", "z_mean"]
    assert (peak_end["n_trials"] == len(trials)).all()


def test_dashboard_figures():
    st = trace_synthetic.synthetic_traces(8, seed=2, clips=["human_01", "ai_01"], dimensions=("valence", "arousal"))
    figs = trace_report.dashboard_figures(st.traces, st.marks, st.trials, {"human_01": CLIP_FILES["human_01"]})
    titles = [f.layout.title.text for f in figs]
    assert titles[:2] == ["Arousal over the clip, by source", "Valence over the clip, by source"]
    n = st.marks.groupby("clip").size()
    assert titles[2:] == [f'ai_01: moments marked "moved"<br><sub>8 viewers, {n["ai_01"]} marks</sub>',
                          f'human_01: moments marked "moved"<br><sub>8 viewers, {n["human_01"]} marks</sub>']
    assert len(figs[3].layout.images) == trace_report.N_THUMBS and not figs[2].layout.images  # no file for ai_01
    assert trace_report.dashboard_figures(None, None) == []


def test_traces_of_excluded_trials_are_left_out():
    st = trace_synthetic.synthetic_traces(10, seed=6)
    kept = st.trials[st.trials["participant_id"] != "P001"]  # P001 excluded (e.g. failed an attention check)
    left = trace_report.kept_only(st.traces, kept)
    assert set(left["participant"]) == set(st.traces["participant"]) - {"P001"}
    body = trace_report.sections(kept, st.traces, st.marks, table_html=report.table_html,
                                 chart_html=report.chart_html)
    assert "6 traces left out with the excluded participants" in body["traces"]
    n_marked = st.marks.loc[st.marks["participant"] == "P001", "clip"].nunique()
    assert f"{n_marked} trials' marks left out" in body["marks"]
    assert "9 participants" in body["traces"]
    none = trace_report.sections(st.trials.assign(participant_id="X"), st.traces, None,
                                 table_html=report.table_html, chart_html=report.chart_html)
    assert "None of the recorded traces belong to a trial kept" in none["traces"]


def test_sources_without_traces(monkeypatch, tmp_path):
    monkeypatch.setattr(load, "load_traces", lambda e, s: pytest.fail("a folder or CSV has no traces"), raising=False)
    csv = tmp_path / "t.csv"
    csv.write_text("participant_id,stimulus_id,source,valence\n")
    assert trace_report.time_courses_for_source(csv) == (None, None, {})
    assert trace_report.time_courses_for_source(tmp_path) == (None, None, {})
    monkeypatch.delattr(load, "load_traces")
    monkeypatch.delattr(load, "load_marks", raising=False)
    # no loader: not even the database is opened
    assert trace_report.time_courses_for_source("kuleshov-demo", url="sqlite:////nonexistent/x.db") == (None, None, {})


def test_report_on_a_simulated_continuous_study_with_stored_traces(sqlite_url, tmp_path):
    """The whole path with nothing faked: bots rate continuously and mark moments through the
    real flow and store (study/simulate.py), the loaders read the stored batches back, and
    `kuleshov report` shows mean curves by source, the peak-end model and mark densities with
    still frames taken from the demo clips."""
    from study import simulate, store

    study = DEMO / "study_continuous.yaml"
    engine = store.make_engine(sqlite_url)
    try:
        store.upgrade(engine)
        simulate.simulate(engine, str(study), 16, effect=1.0, seed=5)
        traces = load.load_traces(engine, "kuleshov-demo-continuous")
        clips = sorted(traces["clip"].unique())
    finally:
        engine.dispose()
    assert len(clips) == 6 and traces["participant"].nunique() >= 12  # some bots decline or drop out
    out = tmp_path / "continuous.html"
    assert cli.main(["report", str(study), "--out", str(out), "--url", sqlite_url]) == 0
    page = out.read_text(encoding="utf-8")
    doc = check_self_contained(page)
    assert doc.sections["traces"] == "shown" and doc.sections["marks"] == "shown"
    names = {t.get("name") for t in json.JSONDecoder().raw_decode(
        page, re.search(r'Plotly\.newPlot\(\s*"chart-traces-source-rating",\s*', page).end())[0]}
    assert {"Human-made", "AI-generated"} <= names
    pe = re.search(r'<table class="results" id="peak-end-table">.*?</table>', section(page, "traces"), re.S).group(0)
    for term in ("z_peak", "z_end", "z_mean"):
        assert f"<td>{term}</td>" in pe
    marks = section(page, "marks")
    table = re.search(r'<table class="results" id="mark-peaks-table">.*?</table>', marks, re.S).group(0)
    stills = re.findall(r'<img class="still" alt="([^"]+)" src="data:image/jpeg;base64,', table)
    assert len(stills) == table.count("<tr>") - 1 > 0
