"""The follow-up analysis (analysis/followup.py) on synthetic data with known answers
(analysis/followup_synthetic.py), its messages for data it cannot analyse, and its report
section. The logistic model itself is pinned to glmer in tests/test_glmm.py, the linear one to
lmer in tests/test_lmm*.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import followup, report
from analysis.followup_synthetic import make_followup, session1_trials
from analysis.load import FOLLOWUP_COLUMNS, load_followup
from study.errors import UserError

PLANTED = dict(recall_log_or=1.0, arousal_linger=0.8)


@pytest.fixture(scope="module")
def planted():
    fu, long = make_followup(n_participants=100, n_human=12, n_ai=12, seen_per_source=6, seed=3, **PLANTED)
    return fu, long, followup.analyse(fu, long)


@pytest.fixture(scope="module")
def null():
    fu, long = make_followup(n_participants=100, n_human=12, n_ai=12, seen_per_source=6, seed=4)
    return fu, long, followup.analyse(fu, long)


def test_planted_effects_recovered_with_ci_covering_truth(planted):
    (r,) = planted[2]
    m = r.recall_model.iloc[0]
    assert m["p"] < 0.05
    assert m["or_ci_low"] < np.exp(PLANTED["recall_log_or"]) < m["or_ci_high"]
    assert m["or_ci_low"] > 1
    a = r.feeling_models.set_index("outcome").loc["arousal"]
    assert a["p"] < 0.05 and a["ci_low"] > 0
    assert a["ci_low"] < PLANTED["arousal_linger"] < a["ci_high"]
    # the planted fade is -1 for both sources, the human clips fade 0.8 less
    assert a["change_human"] - a["change_ai"] == pytest.approx(a["interaction"])
    v = r.feeling_models.set_index("outcome").loc["valence"]
    assert v["ci_low"] < 0 < v["ci_high"]  # nothing planted on valence


def test_null_not_significant(null):
    (r,) = null[2]
    assert r.recall_model.iloc[0]["p"] > 0.05
    assert r.recall_model.iloc[0]["or_ci_low"] < 1 < r.recall_model.iloc[0]["or_ci_high"]
    for m in r.feeling_models.itertuples():
        assert m.p > 0.05 and m.ci_low < 0 < m.ci_high


def test_recall_proportions_and_recognition_by_hand(planted):
    fu, _, (r,) = planted
    rec = fu[(fu.measure == "recalled") & fu.seen]
    want = rec.groupby("source")["value"].mean()
    got = r.recall_proportions.set_index("source")["proportion"]
    assert got["human"] == pytest.approx(want["human"]) and got["ai"] == pytest.approx(want["ai"])
    # one participant's d' for human clips, by hand (log-linear correction)
    pid = r.recognition_sdt["participant_id"].iloc[0]
    g = fu[(fu.participant_id == pid) & (fu.measure == "recognised") & (fu.source == "human")]
    h = (g.loc[g.seen, "value"].sum() + 0.5) / (g.seen.sum() + 1)
    f = (g.loc[~g.seen, "value"].sum() + 0.5) / ((~g.seen).sum() + 1)
    from scipy.stats import norm
    row = r.recognition_sdt[(r.recognition_sdt.participant_id == pid) & (r.recognition_sdt.source == "human")].iloc[0]
    assert row["dprime"] == pytest.approx(norm.ppf(h) - norm.ppf(f))
    paired = r.recognition_summary.set_index("comparison").loc["human - ai"]
    assert 0 <= paired["p"] <= 1 and paired["n"] > 50


def test_linger_table(planted):
    fu, long, (r,) = planted
    t = r.linger.set_index("stimulus_id")
    clip = "human_01"
    seen = fu[(fu.stimulus_id == clip) & fu.seen]
    assert t.loc[clip, "n"] == seen.participant_id.nunique()
    assert t.loc[clip, "recall_rate"] == pytest.approx(seen[seen.measure == "recalled"]["value"].mean())
    assert t.loc[clip, "intrusions"] == pytest.approx(seen[seen.measure == "intrusions"]["value"].mean())
    now = seen[seen.measure == "arousal_now"].set_index("participant_id")["value"]
    s1 = long[(long.stimulus_id == clip) & (long.item_id == "arousal")].set_index("participant_id")["value"]
    assert t.loc[clip, "arousal_change"] == pytest.approx((now - s1.reindex(now.index)).mean())
    assert set(t["source"]) == {"human", "ai"}


def test_several_followups_each_reported():
    fu, long = make_followup(n_participants=30, seed=5, followups=(("day1", 24.0), ("week1", 168.0)))
    res = followup.analyse(fu, long)
    assert [r.followup for r in res] == ["day1", "week1"]
    assert [r.session_number for r in res] == [2, 3]
    assert res[1].delay_hours.iloc[0]["median_delay_h"] > 160
    html = followup.section_html(fu, long, table_html=report.table_html, chart_html=report.chart_html)
    assert 'id="followup-day1"' in html and 'id="followup-week1"' in html
    assert "chart-followup-recall-week1" in html


def test_tiny_data_messages_not_tracebacks():
    fu, long = make_followup(n_participants=2, seed=6, n_human=2, n_ai=2, seen_per_source=1, foils_per_source=1,
                             dropout=0.0)
    (r,) = followup.analyse(fu, long)
    text = " ".join(r.messages)
    assert "recall model not estimated" in text
    assert "session x source model not estimated" in text
    assert r.linger is not None and len(r.linger) == 4
    html = followup.section_html(fu, long, table_html=report.table_html, chart_html=report.chart_html)
    assert "not estimated" in html


def test_missing_measures_are_named():
    fu, long = make_followup(n_participants=20, seed=7)
    only = fu[fu.measure.isin(["recognised", "recognition_confidence"])]
    (r,) = followup.analyse(only, long)
    text = " ".join(r.messages)
    assert "recall: not asked" in text
    assert "valence: no clip rated both" in text and "arousal: no clip rated both" in text
    assert r.recall_model is None and r.feeling_models is None and r.recognition_sdt is not None
    # no session-1 data at all
    (r,) = followup.analyse(fu, None)
    assert r.feeling_models is None and "arousal: no clip rated both" in " ".join(r.messages)


def test_bad_frame_is_named():
    with pytest.raises(UserError, match="lacks the columns measure"):
        followup.check_frame(pd.DataFrame({c: [] for c in FOLLOWUP_COLUMNS if c != "measure"}))
    bad = pd.DataFrame({"participant_id": ["a"]})
    html = followup.section_html(bad, None, table_html=report.table_html, chart_html=report.chart_html)
    assert "could not be analysed" in html and "lacks the columns" in html


def test_report_section_only_with_followup_data(planted):
    fu, long, _ = planted
    trials = session1_trials(long)
    page = report.build_report(trials, outcomes=["arousal"], followup=fu)
    assert '<section id="followup" data-status="shown">' in page
    assert page.index('id="followup"') < page.index('id="software"')
    assert "Does it linger?" in page and "chart-followup-feeling-day1" in page
    assert followup.RECALL_WALD_NOTE in page
    empty = pd.DataFrame(columns=FOLLOWUP_COLUMNS)
    assert list(empty.columns) == FOLLOWUP_COLUMNS and empty.empty
    for none in (None, empty):
        page = report.build_report(trials, outcomes=["arousal"], followup=none)
        assert 'id="followup"' not in page and "Does it linger" not in page


def test_report_leaves_out_excluded_participants(planted):
    fu, long, _ = planted
    trials = session1_trials(long)
    kept = trials[trials.participant_id != "P001"]
    html = followup.section_html(fu, None, table_html=report.table_html, chart_html=report.chart_html, trials=kept)
    assert "1 follow-up participant(s) not in the session-1 data" in html


def test_unknown_source_value_is_named_not_raised():
    fu, long = make_followup(n_participants=20, seed=8)
    fu.loc[fu.index[:5], "source"] = "robot"
    (r,) = followup.analyse(fu, long)
    text = " ".join(r.messages)
    assert "source must be 'human' or 'ai'" in text
    assert r.linger is not None


def test_charts(planted):
    from analysis import followup_charts as fc

    (r,) = planted[2]
    fig = fc.recall_chart(r.recall_proportions, r.recall_model, "day1")
    bars = {t.meta["source"]: t.y[0] for t in fig.data}
    assert bars == pytest.approx(r.recall_proportions.set_index("source")["proportion"].to_dict())
    fig = fc.feeling_chart(r.feeling_means, r.feeling_models, "day1")
    assert {(t.meta["source"], t.meta["outcome"]) for t in fig.data} == {
        (s, o) for s in ("human", "ai") for o in ("valence", "arousal")}
    assert len(fc.recognition_chart(r.recognition_sdt, r.recognition_summary, "day1").data) == 4
    assert len(fc.linger_chart(r.linger, "day1").data) == 2
    for fig in (fc.recall_chart(None, None, "x"), fc.recognition_chart(None, None, "x"),
                fc.feeling_chart(None, None, "x"), fc.linger_chart(r.linger.drop(columns="recall_rate"), "x")):
        assert fig.layout.meta["not_measured"]


def test_recall_wald_note_matches_the_benchmark_results():
    """The report's and README's warning about the recall test quotes benchmarks/results/followup_fpr.json."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    res = json.loads((root / "benchmarks" / "results" / "followup_fpr.json").read_text())
    fpr, cover, z = res["null"]["recall"], res["null"]["coverage"]["recall"], res["null"]["recall_wald_z"]
    quoted = (f"{100 * fpr['rate']:.1f}%", f"[{100 * fpr['ci_low']:.1f}%, {100 * fpr['ci_high']:.1f}%]",
              f"{100 * cover['rate']:.0f}%", f"{100 * z['rate']:.1f}%",
              f"[{100 * z['ci_low']:.1f}%, {100 * z['ci_high']:.1f}%]")
    # the test the report uses keeps its false-positive rate near 5%
    assert fpr["ci_low"] <= 0.05 <= fpr["ci_high"] and fpr["rate"] < 0.075
    readme = (root / "README.md").read_text(encoding="utf-8")
    for text in quoted:
        assert text in followup.RECALL_WALD_NOTE, text
    assert f"{fpr['rate']:.3f} [{fpr['ci_low']:.3f}, {fpr['ci_high']:.3f}]" in readme
    assert f"{fpr['n'] + fpr['not_estimated']} null datasets" in readme
