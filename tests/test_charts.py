"""Charts: each returns a Figure whose traces carry exactly the numbers they were given.

The inputs are small hand-made tables in the shapes of the trial table and of the analysis
outputs (stats.primary_test, attribution.*, power), so expected values are computed by hand
or with plain pandas here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from scipy import stats as sps

from analysis import charts


def _arr(v) -> np.ndarray:
    """Trace arrays as numpy (plotly may store them as tuples, lists or numpy arrays)."""
    return np.asarray(v, dtype=float)


def is_not_measured(fig: go.Figure) -> bool:
    return bool(fig.layout.meta and fig.layout.meta.get("not_measured")) and any(
        charts.NOT_MEASURED in (a.text or "") for a in fig.layout.annotations)


@pytest.fixture
def trials() -> pd.DataFrame:
    """4 participants x 6 clips (3 pairs), valence/arousal 1-9, two emotions, position."""
    rng = np.random.default_rng(3)
    rows = []
    clips = [("h1", "human", "pA"), ("a1", "ai", "pA"), ("h2", "human", "pB"), ("a2", "ai", "pB"),
             ("h3", "human", "pC"), ("a3", "ai", "pC")]
    for p in range(4):
        for pos, (cid, src, pair) in enumerate(clips, start=1):
            rows.append({"participant_id": f"p{p}", "stimulus_id": cid, "source": src, "pair_id": pair,
                         "label_condition": "none" if p < 2 else "swapped", "position": pos,
                         "valence": int(rng.integers(1, 10)), "arousal": int(rng.integers(1, 10)),
                         "emo_sadness": int(rng.integers(0, 9)), "emo_awe": int(rng.integers(0, 9))})
    return pd.DataFrame(rows)


def test_summarise_gives_each_group_what_mean_ci_gives_it():
    """summarise works in one grouped pass (thousands of clips); each row must be mean_ci of
    that group: missing values dropped, one value (no interval), a group with none left out."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"stimulus_id": rng.integers(0, 50, 500).astype(str),
                       "source": rng.choice(["human", "ai"], 500), "v": rng.normal(size=500)})
    df.loc[::7, "v"] = np.nan
    df.loc[df.stimulus_id == "3", "v"] = np.nan
    df = pd.concat([df, pd.DataFrame({"stimulus_id": ["solo"], "source": ["ai"], "v": [2.0]})])
    got = charts.summarise(df, "v", ["stimulus_id", "source"])
    rows = [(*key, *charts.mean_ci(g["v"]))
            for key, g in df.groupby(["stimulus_id", "source"], sort=True)]
    want = pd.DataFrame(rows, columns=["stimulus_id", "source", "n", "mean", "se", "ci_low", "ci_high"])
    want = want[want.n > 0].reset_index(drop=True)
    assert "3" not in set(got.stimulus_id) and got.set_index("stimulus_id").loc["solo", "n"] == 1
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_mean_ci_matches_scipy():
    x = [3.0, 5.0, 4.0, 8.0, 6.0]
    n, m, se, lo, hi = charts.mean_ci(x)
    ref = sps.t.interval(0.95, 4, loc=np.mean(x), scale=sps.sem(x))
    assert (n, m) == (5, 5.2)
    assert se == pytest.approx(sps.sem(x))
    assert (lo, hi) == pytest.approx(ref)
    assert np.isnan(charts.mean_ci([2.0])[3])


def test_distributions_one_point_per_clip(trials):
    fig = charts.distributions_by_source(trials, "valence")
    violins = [t for t in fig.data if t.type == "violin"]
    points = [t for t in fig.data if t.meta and t.meta.get("role") == "clip_means"]
    assert len(violins) == 2 and len(points) == 2
    assert sum(len(t.y) for t in violins) == len(trials)
    assert sum(len(t.y) for t in points) == trials["stimulus_id"].nunique()
    human = [t for t in points if t.meta["source"] == "human"][0]
    expected = trials[trials.source == "human"].groupby("stimulus_id")["valence"].mean()
    got = dict(zip(human.customdata[:, 0], human.y))
    assert got == pytest.approx(expected.to_dict())
    assert human.marker.color == charts.SOURCE_COLORS["human"]
    assert "scale points" in fig.layout.yaxis.title.text


def test_pair_slopes_from_pair_table():
    pairs = pd.DataFrame({
        "pair_id": ["pA", "pB", "pooled"], "human_mean": [6.0, 5.0, 5.5], "ai_mean": [4.0, 5.5, 4.75],
        "diff": [2.0, -0.5, 0.75], "ci_low": [1.0, -1.5, -0.2], "ci_high": [3.0, 0.5, 1.7],
    })
    fig = charts.pair_slopes(pairs, "valence")
    each, pooled = fig.data
    assert each.meta["n_pairs"] == 2
    assert [v for v in each.y if v is not None] == [6.0, 4.0, 5.0, 5.5]
    assert list(pooled.y) == [5.5, 4.75]
    assert "[-0.20, 1.70]" in pooled.text[0]


def test_pair_slopes_from_trials(trials):
    fig = charts.pair_slopes(trials, "valence")
    each, pooled = fig.data
    means = trials.groupby(["pair_id", "source"])["valence"].mean().unstack()
    assert [v for v in each.y if v is not None] == pytest.approx(
        [v for p in means.index for v in (means.loc[p, "human"], means.loc[p, "ai"])])
    assert list(pooled.y) == pytest.approx([means["human"].mean(), means["ai"].mean()])


def test_valence_arousal_plane_ci_bounds(trials):
    fig = charts.valence_arousal_plane(trials)
    assert sum(len(t.x) for t in fig.data) == trials["stimulus_id"].nunique()
    for tr in fig.data:
        sub = trials[trials["stimulus_id"].isin(tr.text)]
        for axis, col in (("x", "valence"), ("y", "arousal")):
            cm = charts.clip_means(sub, col).set_index("stimulus_id").loc[list(tr.text)]
            centre = _arr(getattr(tr, axis))
            err = getattr(tr, f"error_{axis}")
            assert centre == pytest.approx(cm["mean"].to_numpy())
            assert centre + _arr(err.array) == pytest.approx(cm["ci_high"].to_numpy())
            assert centre - _arr(err.arrayminus) == pytest.approx(cm["ci_low"].to_numpy())
    # one clip checked against scipy directly
    v = trials.loc[trials.stimulus_id == "h1", "valence"]
    ci = sps.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    h = [t for t in fig.data if t.meta["source"] == "human"][0]
    i = list(h.text).index("h1")
    assert h.x[i] + h.error_x.array[i] == pytest.approx(ci[1])


def test_emotion_profile_from_trials_and_summary(trials):
    fig = charts.emotion_profile(trials)
    assert [t.name for t in fig.data] == ["Human-made", "AI-generated"]
    assert list(fig.data[0].x) == ["Sadness", "Awe"]  # known emotions in their usual order
    # CI across clip means
    cm = trials[trials.source == "ai"].groupby("stimulus_id")["emo_awe"].mean()
    n, m, se, lo, hi = charts.mean_ci(cm)
    assert fig.data[1].y[1] == pytest.approx(m)
    assert fig.data[1].y[1] + fig.data[1].error_y.array[1] == pytest.approx(hi)
    summary = pd.DataFrame({"outcome": ["emo_fear", "emo_fear", "valence"], "source": ["human", "ai", "human"],
                            "mean": [2.0, 3.0, 5.0], "ci_low": [1.5, 2.0, 4.0], "ci_high": [2.5, 4.0, 6.0]})
    fig2 = charts.emotion_profile(summary)
    assert [list(t.y) for t in fig2.data] == [[2.0], [3.0]]
    assert fig2.data[1].y[0] - fig2.data[1].error_y.arrayminus[0] == pytest.approx(2.0)


def test_forest_plot_units_and_sesoi():
    primary = pd.DataFrame({
        "outcome": ["valence", "arousal"], "model_used": ["correlated_slope", "intercepts"],
        "estimate": [0.4, -0.1], "ci_low": [0.1, -0.5], "ci_high": [0.7, 0.3],
        "d": [0.25, -0.05], "d_ci_low": [0.05, -0.3], "d_ci_high": [0.45, 0.2],
        "p": [0.01, 0.6], "p_holm": [0.02, 0.6], "p_bh": [0.02, 0.6], "tost_p": [0.7, 0.04],
    })
    fig = charts.forest_plot(primary, units="d", sesoi=0.2)
    tr = fig.data[0]
    assert list(tr.y) == ["Arousal", "Valence"]  # first outcome on top
    assert _arr(tr.x) == pytest.approx([-0.05, 0.25])
    assert _arr(tr.x) + _arr(tr.error_x.array) == pytest.approx([0.2, 0.45])
    assert _arr(tr.x) - _arr(tr.error_x.arrayminus) == pytest.approx([-0.3, 0.05])
    band = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(band) == 1 and (band[0].x0, band[0].x1) == (-0.2, 0.2)
    raw = charts.forest_plot(primary, units="raw")
    assert _arr(raw.data[0].x) + _arr(raw.data[0].error_x.array) == pytest.approx([0.3, 0.7])
    assert not [s for s in raw.layout.shapes if s.type == "rect"]


def test_forest_hover_writes_p_as_the_tables_do():
    # p = 1e-10 showed as "p 0.0000" with a d3 format in the hover template.
    primary = pd.DataFrame({"outcome": ["valence", "arousal"], "model_used": ["correlated_slope", None],
                            "estimate": [0.4, -0.1], "ci_low": [0.1, -0.5], "ci_high": [0.7, 0.3],
                            "d": [0.25, -0.05], "d_ci_low": [0.05, -0.3], "d_ci_high": [0.45, 0.2],
                            "p": [1e-10, 0.6], "p_holm": [2e-10, 0.6], "tost_p": [0.046, np.nan]})
    tr = charts.forest_plot(primary, units="d", sesoi=0.2).data[0]
    valence, arousal = list(tr.customdata[1]), list(tr.customdata[0])  # first outcome on top
    assert valence == ["model correlated_slope", "p < .001", "p_holm < .001", "tost_p = .046"]
    assert arousal == ["", "p = .600", "p_holm = .600", "tost_p not computed"]
    assert ":.4f" not in tr.hovertemplate and "0.0000" not in tr.hovertemplate


def test_attribution_charts():
    sdt = pd.DataFrame({"participant_id": ["p1", "p2", "p3", "p4"], "dprime": [0.2, 0.8, -0.1, 0.5]})
    test = pd.DataFrame({"mean_dprime": [0.35], "ci_low": [-0.2], "ci_high": [0.9]})
    fig = charts.dprime_distribution(sdt, test)
    people = [t for t in fig.data if t.meta and t.meta.get("role") == "participants"][0]
    assert list(people.text) == ["p1", "p2", "p3", "p4"]
    mean = [t for t in fig.data if t.meta and t.meta.get("role") == "mean"][0]
    assert mean.x[0] + mean.error_x.array[0] == pytest.approx(0.9)
    acc = pd.DataFrame({"stimulus_id": ["h1", "a1", "h2"], "source": ["human", "ai", "human"], "n": [10, 10, 8],
                        "accuracy": [0.7, 0.4, 0.9], "ci_low": [0.4, 0.17, 0.55], "ci_high": [0.89, 0.69, 0.98],
                        "mean_confidence": [70, 65, 80]})
    fig = charts.accuracy_by_clip(acc)
    assert sum(len(t.x) for t in fig.data) == 3
    h = [t for t in fig.data if t.meta["source"] == "human"][0]
    assert list(h.y) == ["h1", "h2"]  # sorted by accuracy
    assert _arr(h.x) - _arr(h.error_x.arrayminus) == pytest.approx([0.4, 0.55])
    conf = pd.DataFrame({"confidence_bin": ["50-59", "60-69"], "n": [5, 7], "accuracy": [0.5, 0.7],
                         "mean_confidence": [55, 64]})
    assert list(charts.confidence_accuracy(conf).data[0].y) == [0.5, 0.7]


def test_ratings_by_position(trials):
    fig = charts.ratings_by_position(trials, "valence")
    assert len(fig.data) == 2
    ai = [t for t in fig.data if t.meta["source"] == "ai"][0]
    expected = trials[trials.source == "ai"].groupby("position")["valence"].mean()
    assert list(ai.x) == list(expected.index)
    assert _arr(ai.y) == pytest.approx(expected.to_numpy())
    label = charts.label_means(trials.assign(label_condition=np.resize(["swapped", "true", "none"], len(trials))),
                               "valence")
    assert list(label.data[0].x) == ["none", "true", "swapped"]  # design order, not alphabetical


def test_power_curve():
    power = pd.DataFrame({"n_participants": [40, 20, 80], "power": [0.6, 0.3, 0.9],
                          "ci_low": [0.5, 0.2, 0.85], "ci_high": [0.7, 0.4, 0.95]})
    fig = charts.power_curve(power)
    tr = fig.data[0]
    assert list(tr.x) == [20, 40, 80]
    assert _arr(tr.y) + _arr(tr.error_y.array) == pytest.approx([0.4, 0.7, 0.95])
    assert any(s.type == "line" and s.y0 == 0.8 for s in fig.layout.shapes)


@pytest.mark.parametrize("make", [
    lambda t: charts.distributions_by_source(t, "dominance"),
    lambda t: charts.pair_slopes(t.drop(columns="pair_id"), "valence"),
    lambda t: charts.valence_arousal_plane(t.drop(columns="arousal")),
    lambda t: charts.emotion_profile(t.drop(columns=["emo_sadness", "emo_awe"])),
    lambda t: charts.ratings_by_position(t.drop(columns="position"), "valence"),
    lambda t: charts.forest_plot(pd.DataFrame({"outcome": ["valence"]})),
    lambda t: charts.dprime_distribution(pd.DataFrame({"participant_id": []})),
    lambda t: charts.accuracy_by_clip(pd.DataFrame()),
    lambda t: charts.confidence_accuracy(t),
    lambda t: charts.power_curve(pd.DataFrame({"n_participants": [20]})),
    lambda t: charts.distributions_by_source(t.assign(valence=np.nan), "valence"),
])
def test_missing_columns_give_a_note_not_an_error(trials, make):
    fig = make(trials)
    assert isinstance(fig, go.Figure)
    assert is_not_measured(fig)
    assert len(fig.data) == 0


def test_figures_serialise_small(trials):
    # the report embeds many figures: the template must not repeat plotly's 10 kB default
    html = charts.valence_arousal_plane(trials).to_html(include_plotlyjs=False, full_html=False)
    assert len(html) < 8000
