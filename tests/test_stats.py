"""analysis.stats: the primary-test wrapper, naive tests, pairs, label contrasts, descriptives.

Reference numbers come from tests/reference/reference_lme4.json (R 4.2.2, lme4 1.1-31,
lmerTest 3.1-3; t.test() for the naive tests). Hand-computed values are worked out in the
comments next to them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis import stats as S
from analysis.lmm import fit_crossed
from study.errors import UserError
from conftest import REFERENCE


DATASETS = ["crossed_small.csv", "crossed_subset.csv", "crossed_singular.csv"]


@pytest.fixture(scope="module")
def ref():
    data = json.loads((REFERENCE / "reference_lme4.json").read_text())
    return {d["dataset"]: d for d in data["datasets"]}


@pytest.fixture(scope="module")
def frames():
    return {name: pd.read_csv(REFERENCE / name) for name in DATASETS}


@pytest.fixture(scope="module")
def primary_small(frames):
    return S.primary_test(frames["crossed_small.csv"], ["valence"])


# --------------------------------------------------------------------------------------
# naive tests: pinned to R's t.test on participant means (paired) and clip means (Welch)


@pytest.mark.parametrize("name", DATASETS)
def test_naive_tests_match_reference(frames, ref, name):
    out = S.naive_tests(frames[name], "valence").set_index("test")
    paired = ref[name]["paired_t_on_participant_means"]
    welch = ref[name]["welch_t_on_stimulus_means"]
    p = out.loc["paired_t_participant_means"]
    assert p["statistic"] == pytest.approx(paired["t"], rel=1e-6)
    assert p["df"] == pytest.approx(paired["df"], rel=1e-6)
    assert p["p"] == pytest.approx(paired["p"], rel=1e-6)
    assert p["estimate"] == pytest.approx(paired["mean_diff"], rel=1e-6)
    w = out.loc["welch_t_stimulus_means"]
    assert w["statistic"] == pytest.approx(welch["t"], rel=1e-6)
    assert w["df"] == pytest.approx(welch["df"], rel=1e-6)
    assert w["p"] == pytest.approx(welch["p"], rel=1e-6)


# --------------------------------------------------------------------------------------
# primary test


def test_primary_estimate_is_the_lmm_source_term(frames, primary_small):
    fit = fit_crossed(frames["crossed_small.csv"], "valence")
    x = fit.fixed.set_index("term").loc["x"]
    row = primary_small.iloc[0]
    assert row["model_used"] == fit.model_used == "correlated_slope"
    assert row["estimate"] == x["estimate"]
    assert row["se"] == x["se"] and row["df"] == x["df"] and row["t"] == x["t"]
    assert row["p"] == pytest.approx(x["p"], rel=1e-12)
    assert (row["n_participants"], row["n_stimuli"], row["nobs"]) == (60, 24, 1440)
    assert row["p_sided"] == "two-sided"


def test_primary_matches_lme4_and_westfall_d(ref, primary_small):
    m = {mod["model"]: mod for mod in ref["crossed_small.csv"]["models"]}["correlated_slope"]
    x = {f["term"]: f for f in m["fixed"]}["x"]
    row = primary_small.iloc[0]
    assert row["estimate"] == pytest.approx(x["estimate"], rel=1e-5)
    assert row["se"] == pytest.approx(x["se"], rel=2e-4)
    assert row["ci_low"] == pytest.approx(x["estimate"] - 2.0585 * x["se"], abs=0.01)  # t(.975, 25.2)
    # Westfall et al. (2014) d from lme4's variance components: every variance, no covariance,
    # the participant slope's weighted by 0.5^2 (codes +-0.5)
    variances = [r for r in m["random"] if r["var2"] is None]
    assert len(variances) == 4
    total = sum(r["variance_or_cov"] * (0.25 if r["var1"] == "x" else 1.0) for r in variances)
    assert row["d"] == pytest.approx(x["estimate"] / np.sqrt(total), rel=1e-3)
    assert row["d_ci_method"] == "fixed_denominator" and pd.isna(row["n_boot"])
    assert row["d_ci_low"] == pytest.approx(row["ci_low"] / np.sqrt(total), rel=1e-3)
    assert row["d_ci_high"] == pytest.approx(row["ci_high"] / np.sqrt(total), rel=1e-3)
    assert row["sesoi_raw"] == pytest.approx(0.2 * np.sqrt(total), rel=1e-3)
    assert not row["equivalent"]  # d = 0.52, CI well above 0.2


def test_westfall_denominator_by_hand():
    # A table like LmmFit.random: participant intercept 0.8, slope 0.4 (covariance 0.1, left
    # out), clip 0.3, residual 1.5. With codes +-0.5 the slope enters as 0.5^2 * 0.4 = 0.1:
    # sqrt(0.8 + 0.1 + 0.3 + 1.5) = sqrt(2.7).
    random = pd.DataFrame({
        "group": ["participant_id", "participant_id", "participant_id", "stimulus_id", "Residual"],
        "var1": ["(Intercept)", "x", "(Intercept)", "(Intercept)", None],
        "var2": [None, None, "x", None, None],
        "variance_or_cov": [0.8, 0.4, 0.1, 0.3, 1.5], "sd_or_cor": [np.nan] * 5})
    assert S.denominator_from_components(random) == pytest.approx(np.sqrt(2.7), rel=1e-12)
    # uncorrelated slopes are group "participant_id.1"; a by-clip slope is weighted the same
    unc = random.drop(index=2).assign(group=["participant_id", "participant_id.1", "stimulus_id", "Residual"])
    clip_slope = pd.concat([unc, pd.DataFrame({"group": ["stimulus_id.1"], "var1": ["x"], "var2": [None],
                                               "variance_or_cov": [0.2], "sd_or_cor": [np.nan]})])
    assert S.denominator_from_components(unc) == pytest.approx(np.sqrt(2.7), rel=1e-12)
    assert S.denominator_from_components(clip_slope) == pytest.approx(np.sqrt(2.75), rel=1e-12)
    # with +-1 codes the same data have a slope variance a quarter as large, entering unweighted
    plus_minus_one = random.assign(variance_or_cov=[0.8, 0.1, 0.05, 0.3, 1.5])
    assert S.denominator_from_components(plus_minus_one, code=1.0) == pytest.approx(np.sqrt(2.7), rel=1e-12)


@pytest.fixture(scope="module")
def boot_small(frames):
    return S.primary_test(frames["crossed_small.csv"], ["valence"], bootstrap=30, seed=7).iloc[0]


def test_bootstrap_ci_of_d_is_seeded_and_holds_the_estimate(frames, boot_small, primary_small):
    row = boot_small
    assert row["d_ci_method"] == "parametric_bootstrap" and row["n_boot"] == 30
    assert row["d"] == primary_small.iloc[0]["d"]  # the point estimate does not change
    assert row["d_ci_low"] < row["d"] < row["d_ci_high"]
    # not the fixed-denominator interval
    assert row["d_ci_low"] != pytest.approx(primary_small.iloc[0]["d_ci_low"], rel=1e-3)
    assert 0.2 < row["d_ci_low"] < 0.5 and 0.55 < row["d_ci_high"] < 0.9  # d = 0.52, n = 60 x 24
    again = S.primary_test(frames["crossed_small.csv"], ["valence"], bootstrap=30, seed=7).iloc[0]
    assert (again["d_ci_low"], again["d_ci_high"]) == (row["d_ci_low"], row["d_ci_high"])
    other = S.primary_test(frames["crossed_small.csv"], ["valence"], bootstrap=30, seed=8).iloc[0]
    assert other["d_ci_low"] != row["d_ci_low"]


def test_bootstrap_values_are_d_of_refits_of_simulated_data(frames):
    from analysis.bootstrap import parametric_bootstrap
    from analysis.lmm import Refitter

    fit = fit_crossed(frames["crossed_small.csv"], "valence")
    res = parametric_bootstrap(fit, S.d_statistic, 3, seed=11)
    assert res.estimate == pytest.approx(S.westfall_denominator(fit) ** -1 * fit.fixed.at[1, "estimate"])
    # by hand: the same draws, fitted from scratch by fit_crossed's model, give the same d
    r, rng = Refitter(fit), np.random.default_rng(11)
    d = frames["crossed_small.csv"]
    for value in res.values:
        y = r.simulate(rng)
        refit = fit_crossed(d.assign(valence=y), "valence")
        assert refit.model_used == "correlated_slope"
        assert value == pytest.approx(refit.fixed.at[1, "estimate"] / S.westfall_denominator(refit), rel=1e-4)


def test_bootstrap_progress_and_bad_counts(frames):
    seen = []
    S.primary_test(frames["crossed_small.csv"], ["valence"], bootstrap=2, seed=1,
                   progress=lambda done, total, outcome: seen.append((done, total, outcome)))
    assert seen == [(1, 2, "valence"), (2, 2, "valence")]
    with pytest.raises(UserError, match="bootstrap samples must be a whole number of at least 2"):
        S.primary_test(frames["crossed_small.csv"], ["valence"], bootstrap=1)


def test_primary_singular_falls_back_to_intercepts(frames, ref):
    out = S.primary_test(frames["crossed_singular.csv"], ["valence"]).iloc[0]
    m = {mod["model"]: mod for mod in ref["crossed_singular.csv"]["models"]}["intercepts"]
    x = {f["term"]: f for f in m["fixed"]}["x"]
    assert out["model_used"] == "intercepts"
    assert "correlated_slope" in out["messages"]
    assert out["estimate"] == pytest.approx(x["estimate"], rel=1e-5)
    assert out["se"] == pytest.approx(x["se"], rel=2e-4)
    assert out["p"] == pytest.approx(x["p"], abs=2e-4)


def test_one_sided_p(frames, primary_small):
    d = frames["crossed_small.csv"]
    hg = S.primary_test(d, ["valence"], hypothesis="human_greater").iloc[0]
    ag = S.primary_test(d, ["valence"], hypothesis="ai_greater").iloc[0]
    p2 = primary_small.iloc[0]["p"]
    assert hg["p"] == pytest.approx(p2 / 2, rel=1e-9)  # t > 0: half the two-sided p
    assert ag["p"] == pytest.approx(1 - p2 / 2, rel=1e-9)
    assert hg["p_sided"] == "one-sided (human > AI)"
    with pytest.raises(UserError, match="hypothesis"):
        S.primary_test(d, ["valence"], hypothesis="greater")


def test_holm_and_bh_against_statsmodels_and_by_hand():
    p = pd.Series([0.01, 0.04, 0.03])
    # Holm: sorted 0.01*3 = .03, 0.03*2 = .06, 0.04*1 -> max(.06, .04) = .06
    assert S._adjust(p, "holm").tolist() == pytest.approx([0.03, 0.06, 0.06])
    # BH: 0.01*3/1 = .03, 0.03*3/2 = .045, 0.04*3/3 = .04; step-up minimum -> .04, .04
    assert S._adjust(p, "fdr_bh").tolist() == pytest.approx([0.03, 0.04, 0.04])
    p2 = pd.Series([0.2, np.nan, 0.001, 0.049])
    got = S._adjust(p2, "holm")
    assert np.isnan(got[1])
    assert got[[0, 2, 3]].tolist() == pytest.approx(multipletests([0.2, 0.001, 0.049], method="holm")[1].tolist())


def test_several_outcomes_are_corrected_together(frames):
    d = frames["crossed_small.csv"].copy()
    rng = np.random.default_rng(7)
    d["noise"] = rng.normal(5, 1.5, len(d))
    d["valence_plus"] = d["valence"] + rng.normal(0, 1, len(d))
    out = S.primary_test(d, ["valence", "noise", "valence_plus"])
    assert list(out["outcome"]) == ["valence", "noise", "valence_plus"]
    assert out["p_holm"].tolist() == pytest.approx(multipletests(out["p"], method="holm")[1].tolist())
    assert out["p_bh"].tolist() == pytest.approx(multipletests(out["p"], method="fdr_bh")[1].tolist())
    assert list(out.columns[:6]) == ["outcome", "model_used", "formula", "n_participants", "n_stimuli", "nobs"]


def test_tost_logic():
    # estimate 0, se 0.05, bound 0.2: both one-sided t = 4 on 1000 df
    from scipy import stats
    assert S.tost(0.0, 0.05, 1000, 0.2) == pytest.approx(stats.t.sf(4.0, 1000))
    # an estimate beyond the bound can never be equivalent
    assert S.tost(0.25, 0.05, 1000, 0.2) > 0.5
    # equivalence at alpha <=> the 1 - 2 alpha CI lies inside +-bound
    for est in np.linspace(-0.3, 0.3, 13):
        q = stats.t.ppf(0.95, 40)
        inside = (est - q * 0.06 > -0.15) and (est + q * 0.06 < 0.15)
        assert (S.tost(est, 0.06, 40, 0.15) < 0.05) == inside


def _simulated(effect: float, seed: int, n_p=60, n_c=20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(n_p), n_c)
    c = np.tile(np.arange(n_c), n_p)
    x = np.where(c % 2 == 0, 0.5, -0.5)
    y = (effect * x + rng.normal(0, 0.5, n_p)[p] + rng.normal(0, 0.1, n_c)[c]
         + rng.normal(0, 1.0, n_p * n_c))
    return pd.DataFrame({"participant_id": [f"p{i}" for i in p], "stimulus_id": [f"c{i}" for i in c],
                         "source": np.where(x > 0, "human", "ai"), "y": y})


def test_equivalence_on_constructed_data():
    null = S.primary_test(_simulated(0.0, 3), ["y"], sesoi=0.3).iloc[0]
    assert abs(null["d"]) < 0.1
    assert null["equivalent"] and null["tost_p"] < 0.05
    big = S.primary_test(_simulated(1.2, 4), ["y"], sesoi=0.3).iloc[0]
    assert not big["equivalent"] and big["p"] < 1e-6 and big["d"] > 0.5


def test_primary_test_bad_input(frames):
    with pytest.raises(UserError, match="columns missing"):
        S.primary_test(frames["crossed_small.csv"], ["arousal"])
    d = frames["crossed_small.csv"].copy()
    d["const"] = 3.0
    out = S.primary_test(d, ["valence", "const"])  # one outcome failing does not stop the others
    assert out.loc[0, "p"] < 0.001
    assert np.isnan(out.loc[1, "p"]) and isinstance(out.loc[1, "messages"], str)


# --------------------------------------------------------------------------------------
# matched pairs


def test_pair_differences_by_hand():
    rows = [
        # pair A: p1 and p2 saw both clips -> diffs 2 and 4 (mean 3, sd sqrt(2), se 1)
        ("p1", "h1", "human", "A", 7), ("p1", "a1", "ai", "A", 5),
        ("p2", "h1", "human", "A", 8), ("p2", "a1", "ai", "A", 4),
        ("p3", "h1", "human", "A", 1),  # saw only the human clip: not in the within estimate
        # pair B: nobody saw both -> clip means 6 (5, 7) and 3 (2, 4)
        ("p1", "h2", "human", "B", 5), ("p2", "h2", "human", "B", 7),
        ("p3", "a2", "ai", "B", 2), ("p4", "a2", "ai", "B", 4),
    ]
    d = pd.DataFrame(rows, columns=["participant_id", "stimulus_id", "source", "pair_id", "v"])
    out = S.pair_differences(d, "v").set_index("pair_id")
    a = out.loc["A"]
    assert (a["human_id"], a["ai_id"], a["n"], a["basis"]) == ("h1", "a1", 2, "within_participant")
    assert (a["human_mean"], a["ai_mean"], a["diff"], a["se"]) == pytest.approx((7.5, 4.5, 3.0, 1.0))
    assert a["ci_high"] == pytest.approx(3 + 12.706204736 * 1.0)  # t(.975, 1)
    b = out.loc["B"]
    assert (b["n"], b["basis"], b["diff"]) == (4, "between_participant", 3.0)
    assert b["se"] == pytest.approx(np.sqrt(2 / 2 + 2 / 2))  # var 2 in each clip, n = 2
    pooled = out.loc["pooled"]
    assert (pooled["n"], pooled["diff"], pooled["se"]) == (2, 3.0, 0.0)
    assert list(out.reset_index().columns) == S.PAIR_COLUMNS


def test_pair_differences_reference(frames):
    d = frames["crossed_small.csv"]
    out = S.pair_differences(d, "valence")
    pairs = out[out["pair_id"] != "pooled"]
    assert len(pairs) == 12 and (pairs["n"] == 60).all()
    # everyone saw every clip, so the pooled difference is the overall human-minus-AI mean
    assert out.iloc[-1]["diff"] == pytest.approx(0.834722222222222, rel=1e-9)


# --------------------------------------------------------------------------------------
# label effect


@pytest.fixture(scope="module")
def label_subset(frames):
    return S.label_effect(frames["crossed_subset.csv"], "valence")


def test_label_contrasts_are_the_model_coefficients(label_subset):
    out = label_subset.set_index("contrast")
    b = label_subset.attrs["fixed"].set_index("term")["estimate"]
    assert list(out.index) == ["source_in_none", "source_in_true", "source_in_swapped", "label_true_vs_none",
                               "label_swapped_vs_none", "believed_human_vs_ai", "source_net_of_label"]
    e = out["estimate"]
    assert e["source_in_none"] == pytest.approx(b["x"])
    assert e["source_in_true"] == pytest.approx(b["x"] + b["x_lab_true"])
    assert e["source_in_swapped"] == pytest.approx(b["x"] + b["x_lab_swapped"])
    assert e["label_true_vs_none"] == pytest.approx(b["lab_true"])
    assert e["believed_human_vs_ai"] == pytest.approx((b["x_lab_true"] - b["x_lab_swapped"]) / 2)
    assert e["source_net_of_label"] == pytest.approx(b["x"] + (b["x_lab_true"] + b["x_lab_swapped"]) / 2)
    assert (out["ci_low"] < out["estimate"]).all() and (out["estimate"] < out["ci_high"]).all()
    assert (out["se"] > 0).all() and out["description"].str.len().gt(20).all()


def test_label_contrasts_agree_with_cell_means(frames, label_subset):
    # Every participant rates 8 clips per source and clips are balanced across conditions,
    # so the model's condition x source cells are close to the raw cell means.
    d = frames["crossed_subset.csv"]
    cell = d.groupby(["label_condition", "source"])["valence"].mean().unstack()
    diff = cell["human"] - cell["ai"]
    out = label_subset.set_index("contrast")
    for c in ("none", "true", "swapped"):
        assert out.loc[f"source_in_{c}", "estimate"] == pytest.approx(diff[c], abs=0.5 * out.loc[f"source_in_{c}", "se"])
    assert out.loc["believed_human_vs_ai", "estimate"] == pytest.approx(
        (diff["true"] - diff["swapped"]) / 2, abs=0.5 * out.loc["believed_human_vs_ai", "se"])


def test_label_effect_needs_two_conditions(frames):
    d = frames["crossed_small.csv"]  # all 'none'
    out = S.label_effect(d, "valence")
    assert out.empty and list(out.columns) == S.CONTRAST_COLUMNS
    assert "only one label condition" in out.attrs["message"]
    bad = d.assign(label_condition="maybe")
    with pytest.raises(UserError, match="label_condition"):
        S.label_effect(bad, "valence")


# --------------------------------------------------------------------------------------
# descriptives


def test_describe_by_source(frames):
    d = frames["crossed_small.csv"]
    out = S.describe_by_source(d, ["valence"]).set_index("source")
    h = d.loc[d["source"] == "human", "valence"]
    assert out.loc["human", "n"] == len(h) == 720
    assert out.loc["human", "mean"] == pytest.approx(h.mean())
    assert out.loc["human", "sd"] == pytest.approx(h.std())
    assert out.loc["human", "mean"] - out.loc["ai", "mean"] == pytest.approx(0.834722222222222)
    assert out.loc["ai", "ci_low"] < out.loc["ai", "mean"] < out.loc["ai", "ci_high"]
