"""Crossed linear mixed models (analysis/lmm.py) pinned to lme4 and lmerTest.

Reference numbers: tests/reference/reference_lme4.json, computed with R 4.2.2,
lme4 1.1-31 and lmerTest 3.1-3 (REML, Satterthwaite df) on the simulated datasets in the
same folder, with x = +0.5 for human and -0.5 for AI clips. Tolerances are those of
issue 4: fixed effects relative 1e-5, SEs relative 2e-4, df 0.05 absolute, p 2e-4
absolute, REML criterion no worse than lme4's + 1e-3; singular fits only fixed effects,
SEs and criterion (their variance split is not unique).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from lme4_checks import assert_fixed_match

from analysis.lmm import RandomTerm, fit_crossed, fit_lmm, source_code
from study.errors import UserError

DATASETS = ["crossed_small.csv", "crossed_subset.csv", "crossed_singular.csv"]
MODELS = ["intercepts", "uncorrelated_slope", "correlated_slope"]
PARTICIPANT_TERM = {
    "intercepts": RandomTerm("participant_id"),
    "uncorrelated_slope": RandomTerm("participant_id", ("x",), correlated=False),
    "correlated_slope": RandomTerm("participant_id", ("x",), correlated=True),
}


@pytest.fixture
def reference(reference_dir):
    with open(reference_dir / "reference_lme4.json") as fh:
        ref = json.load(fh)
    return {ds["dataset"]: ds for ds in ref["datasets"]}


_data_cache: dict = {}
_fit_cache: dict = {}


def load(reference_dir, name):
    if name not in _data_cache:
        d = pd.read_csv(reference_dir / name)
        d["x"] = source_code(d["source"])
        _data_cache[name] = d
    return _data_cache[name]


def fitted(reference_dir, dataset, model):
    if (dataset, model) not in _fit_cache:
        d = load(reference_dir, dataset)
        _fit_cache[(dataset, model)] = fit_lmm(
            d, "valence", ["x"], [PARTICIPANT_TERM[model], RandomTerm("stimulus_id")])
    return _fit_cache[(dataset, model)]


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_matches_lme4_and_lmertest(reference_dir, reference, dataset, model):
    ref = next(m for m in reference[dataset]["models"] if m["model"] == model)
    fit = fitted(reference_dir, dataset, model)
    assert_fixed_match(fit, ref)
    assert fit.converged, fit.messages


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_variance_components_match_lme4(reference_dir, reference, dataset, model):
    ref = next(m for m in reference[dataset]["models"] if m["model"] == model)
    fit = fitted(reference_dir, dataset, model)
    table = fit.random
    assert list(table.columns) == ["group", "var1", "var2", "variance_or_cov", "sd_or_cor"]
    assert len(table) == len(ref["random"])
    if ref["singular"]:
        # the variance split at the boundary is not unique; the residual is still pinned
        res = table[table.group == "Residual"].iloc[0]
        want = next(r for r in ref["random"] if r["group"] == "Residual")
        assert res.variance_or_cov == pytest.approx(want["variance_or_cov"], rel=2e-3)
        return
    for want in ref["random"]:
        sel = (table.group == want["group"]) & (
            table.var1.isna() if want["var1"] is None else table.var1 == want["var1"]) & (
            table.var2.isna() if want["var2"] is None else table.var2 == want["var2"])
        got = table[sel]
        assert len(got) == 1, want
        got = got.iloc[0]
        if want["var2"] is None:  # a variance and its sd: relative 1e-3
            assert got.variance_or_cov == pytest.approx(want["variance_or_cov"], rel=1e-3)
            assert got.sd_or_cor == pytest.approx(want["sd_or_cor"], rel=1e-3)
        else:  # a covariance and its correlation: absolute 1e-3
            assert got.variance_or_cov == pytest.approx(want["variance_or_cov"], abs=1e-3)
            assert got.sd_or_cor == pytest.approx(want["sd_or_cor"], abs=1e-3)


def test_statsmodels_crossed_form_agrees_on_small(reference_dir):
    """Independent cross-check with statsmodels 0.15 MixedLM in its crossed form (one group
    holding all rows, a variance component per factor), intercepts model, REML, fitted
    from statsmodels' own starting values. Tolerances: fixed effects relative 1e-6, SEs
    relative 2e-4, variances relative 2e-3, -2 x REML log-likelihood within 1e-3 of our
    criterion (statsmodels' REML likelihood has the same constant as lme4's)."""
    import statsmodels.formula.api as smf

    d = load(reference_dir, "crossed_small.csv").assign(one=1)
    model = smf.mixedlm("valence ~ x", d, groups="one", re_formula="0",
                        vc_formula={"participant": "0 + C(participant_id)",
                                    "stimulus": "0 + C(stimulus_id)"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm = model.fit(reml=True, method=["lbfgs"])
    assert sm.converged
    fit = fitted(reference_dir, "crossed_small.csv", "intercepts")
    ours = fit.fixed.set_index("term")
    assert ours.loc["(Intercept)", "estimate"] == pytest.approx(sm.fe_params["Intercept"], rel=1e-6)
    assert ours.loc["x", "estimate"] == pytest.approx(sm.fe_params["x"], rel=1e-6)
    assert ours.loc["(Intercept)", "se"] == pytest.approx(sm.bse_fe["Intercept"], rel=2e-4)
    assert ours.loc["x", "se"] == pytest.approx(sm.bse_fe["x"], rel=2e-4)
    var = fit.random.set_index("group")["variance_or_cov"]
    names = list(model.exog_vc.names)
    assert var["participant_id"] == pytest.approx(sm.vcomp[names.index("participant")], rel=2e-3)
    assert var["stimulus_id"] == pytest.approx(sm.vcomp[names.index("stimulus")], rel=2e-3)
    assert var["Residual"] == pytest.approx(sm.scale, rel=2e-3)
    assert fit.reml_criterion == pytest.approx(-2 * sm.llf, abs=1e-3)


def test_single_grouping_factor_matches_statsmodels(reference_dir):
    """One grouping factor (no crossed part) with a correlated slope: statsmodels' ordinary
    MixedLM fits exactly this model; same tolerances as above."""
    import statsmodels.formula.api as smf

    d = load(reference_dir, "crossed_small.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm = smf.mixedlm("valence ~ x", d, groups="participant_id", re_formula="~x").fit(
            reml=True, method=["lbfgs"])
    fit = fit_lmm(d, "valence", ["x"], [RandomTerm("participant_id", ("x",))])
    ours = fit.fixed.set_index("term")
    assert ours.loc["x", "estimate"] == pytest.approx(sm.fe_params["x"], rel=1e-6)
    assert ours.loc["x", "se"] == pytest.approx(sm.bse_fe["x"], rel=2e-4)
    cov = sm.cov_re.to_numpy()
    rand = fit.random
    assert rand.iloc[0].variance_or_cov == pytest.approx(cov[0, 0], rel=2e-3)
    assert rand.iloc[1].variance_or_cov == pytest.approx(cov[1, 1], rel=2e-3)
    assert rand.iloc[2].variance_or_cov == pytest.approx(cov[0, 1], abs=2e-3)
    assert fit.reml_criterion == pytest.approx(-2 * sm.llf, abs=1e-3)
    assert fit.ngroups == {"participant_id": 60}


def test_three_grouping_factors_nest_the_two_factor_model(reference_dir):
    """Adding a pair effect can only lower the REML criterion (the two-factor model is the
    pair variance = 0 case); this exercises the dense part with two stacked factors."""
    d = load(reference_dir, "crossed_small.csv")
    two = fitted(reference_dir, "crossed_small.csv", "intercepts")
    three = fit_lmm(d, "valence", ["x"], [RandomTerm("participant_id"),
                                         RandomTerm("stimulus_id"), RandomTerm("pair_id")])
    assert three.reml_criterion <= two.reml_criterion + 1e-6
    assert three.ngroups["pair_id"] == 12
    assert set(three.random.group) == {"participant_id", "stimulus_id", "pair_id", "Residual"}


def test_singular_rule_on_crossed_singular(reference_dir, reference):
    d = pd.read_csv(reference_dir / "crossed_singular.csv")
    fit = fit_crossed(d, "valence")
    # lme4: the correlated fit has cor = +1 and the uncorrelated one a zero slope variance,
    # so the rule ends at the intercepts model
    assert fit.model_used == "intercepts"
    assert fit.formula == "valence ~ x + (1 | participant_id) + (1 | stimulus_id)"
    assert not fit.singular
    text = " ".join(fit.messages)
    assert "correlated_slope" in text and "uncorrelated_slope" in text and "singular" in text
    ref = next(m for m in reference["crossed_singular.csv"]["models"]
               if m["model"] == "intercepts")
    x = fit.fixed.set_index("term").loc["x"]
    want = next(r for r in ref["fixed"] if r["term"] == "x")
    assert x.estimate == pytest.approx(want["estimate"], rel=1e-5)
    assert x.df == pytest.approx(want["df"], abs=0.05)
    assert x.p == pytest.approx(want["p"], abs=2e-4)


def test_singular_rule_keeps_the_full_model_when_it_is_fine(reference_dir, reference):
    d = pd.read_csv(reference_dir / "crossed_small.csv")
    fit = fit_crossed(d, "valence")
    assert fit.model_used == "correlated_slope"
    ref = next(m for m in reference["crossed_small.csv"]["models"]
               if m["model"] == "correlated_slope")
    want = next(r for r in ref["fixed"] if r["term"] == "x")
    x = fit.fixed.set_index("term").loc["x"]
    assert x.se == pytest.approx(want["se"], rel=2e-4)
    assert x.df == pytest.approx(want["df"], abs=0.05)


def test_contrast(reference_dir):
    fit = fitted(reference_dir, "crossed_subset.csv", "correlated_slope")
    row = fit.fixed.set_index("term").loc["x"]
    c = fit.contrast([0, 1], name="human - ai")
    assert c["term"] == "human - ai"
    for key in ("estimate", "se", "df", "t", "p", "ci_low", "ci_high"):
        assert c[key] == pytest.approx(row[key], rel=1e-12)
    # mean of human clips: b0 + b1/2; scaling a contrast changes neither its t nor its df
    human = fit.contrast([1, 0.5])
    b = fit.fixed["estimate"].to_numpy()
    assert human["estimate"] == pytest.approx(b[0] + 0.5 * b[1], rel=1e-12)
    assert human["se"] == pytest.approx(np.sqrt(np.array([1, 0.5]) @ fit.vcov @ [1, 0.5]))
    doubled = fit.contrast([2, 1])
    assert doubled["t"] == pytest.approx(human["t"], rel=1e-9)
    assert doubled["df"] == pytest.approx(human["df"], rel=1e-9)
    # a mean over clips and participants: df between the clip-level and participant-level
    # extremes of this design (40 clips, 150 participants)
    assert 30 < human["df"] < 160
    from scipy import stats

    assert human["p"] == pytest.approx(2 * stats.t.sf(abs(human["t"]), human["df"]))
    with pytest.raises(UserError, match="one weight per fixed term"):
        fit.contrast([1, 0, 0])


def test_source_code():
    got = source_code(pd.Series(["human", "ai", " Human ", "AI"]))
    assert got.tolist() == [0.5, -0.5, 0.5, -0.5]
    with pytest.raises(UserError, match="'human' or 'ai'") as err:
        source_code(["human", "robot", None])
    where = " ".join(p.where + " " + p.message for p in err.value.problems)
    assert "row 1" in where and "robot" in where and "row 2" in where


def test_bad_input_is_a_user_error(reference_dir):
    d = pd.read_csv(reference_dir / "crossed_small.csv")
    bad = d.copy()
    bad.loc[5, "source"] = "stock footage"
    with pytest.raises(UserError, match="'human' or 'ai'"):
        fit_crossed(bad, "valence")
    with pytest.raises(UserError, match="columns missing") as err:
        fit_crossed(d, "arousal")
    assert "arousal" in str(err.value)
    with pytest.raises(UserError, match="columns missing"):
        fit_lmm(d, "valence", ["x"], [RandomTerm("participant_id")])
    words = d.assign(valence=d["valence"].astype(str).where(d.index != 3, "very sad"))
    with pytest.raises(UserError, match="numeric") as err:
        fit_crossed(words, "valence")
    assert "very sad" in str(err.value)
    with pytest.raises(UserError, match="at least 2 levels"):
        fit_lmm(d.assign(x=source_code(d.source), g=1), "valence", ["x"], [RandomTerm("g")])
    with pytest.raises(UserError, match="only one source"):
        fit_crossed(d[d.source == "human"], "valence")


def test_missing_values_are_dropped_and_reported(reference_dir):
    d = pd.read_csv(reference_dir / "crossed_small.csv")
    d.loc[[0, 10, 20], "valence"] = np.nan
    fit = fit_crossed(d, "valence")
    assert fit.nobs == len(d) - 3
    assert any("3 of 1440 rows dropped" in m for m in fit.messages)


def test_constant_outcome_is_a_clear_error(reference_dir):
    data = pd.read_csv(reference_dir / "crossed_small.csv").assign(valence=5)
    with pytest.raises(UserError, match="no variation"):
        fit_crossed(data, "valence")
