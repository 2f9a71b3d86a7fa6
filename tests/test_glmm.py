"""analysis/glmm.py pinned to lme4's glmer (tests/reference/glmer_cases, made by its
make_reference.R with R 4.2.2 and lme4 1.1-31), and its refusals of designs it cannot fit.

Tolerances (measured differences in brackets):
* against glmer with tightened convergence (*_tight) and nAGQ = 0: fixed effects and Wald SEs
  within 2e-4 relative (or 2e-5 absolute near zero) [at most 3e-5], variances 1e-3 relative
  or 1e-4 absolute [2e-4]; -2 log-likelihood of the tightened fits 1e-4 absolute [< 1e-6]
  (glmer's nAGQ = 0 deviance carries the default tolPwrss error below);
* against glmer's defaults (nAGQ = 1): glmer stops PIRLS at 1e-7 relative (tolPwrss), so
  its deviance is up to ~1e-3 high and its estimates off by up to ~7e-3 relative: fixed
  effects and SEs within 1.5e-2 relative, and our deviance no higher than glmer's (+1e-6)
  and within 5e-3 of it.
Singular fits: the zero variance must come out below lme4's 1e-4 threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.glmm import fit_crossed_logistic, fit_glmer
from analysis.lmm import source_code
from study.errors import UserError

CASES = Path(__file__).resolve().parent / "reference" / "glmer_cases"
GROUPS = ["participant_id", "stimulus_id"]


def _reference():
    ref = json.loads((CASES / "reference_glmer.json").read_text())
    assert "lme4 1.1.31" in ref["generated_with"]
    return [(ds["dataset"], m) for ds in ref["datasets"] for m in ds["models"]]


_data: dict = {}


def load(name):
    if name not in _data:
        d = pd.read_csv(CASES / name)
        d["x"] = source_code(d["source"])
        _data[name] = d
    return _data[name]


def close(got, want, rel, abs_):
    return abs(got - want) <= max(rel * abs(want), abs_)


@pytest.mark.parametrize("dataset,ref", _reference(), ids=lambda v: v if isinstance(v, str) else v["model"])
def test_matches_glmer(dataset, ref):
    fixed = ["x", "delay_days"] if "delay" in ref["model"] else ["x"]
    fit = fit_glmer(load(dataset), "recalled", fixed, GROUPS, nAGQ=ref["nAGQ"])
    precise = ref["model"].endswith("_tight") or ref["nAGQ"] == 0
    rel, abs_ = (2e-4, 2e-5) if precise else (1.5e-2, 1e-3)
    assert list(fit.fixed["term"]) == [f["term"] for f in ref["fixed"]]
    for (_, row), want in zip(fit.fixed.iterrows(), ref["fixed"]):
        assert close(row["estimate"], want["estimate"], rel, abs_), (row["term"], row["estimate"], want)
        assert close(row["se"], want["se"], rel, abs_), (row["term"], row["se"], want)
        assert close(row["z"], want["z"], 2 * rel, 2 * abs_), (row["term"], row["z"], want)
    if ref["model"].endswith("_tight"):
        assert abs(fit.deviance - ref["deviance_m2ll"]) < 1e-4
        assert abs(fit.loglik - ref["loglik"]) < 5e-5
    else:
        assert fit.deviance <= ref["deviance_m2ll"] + 1e-6
        assert ref["deviance_m2ll"] - fit.deviance < 5e-3
    assert fit.singular == ref["singular"]
    got = fit.random.set_index("group")
    for want in ref["random"]:
        v = got.loc[want["group"], "variance"]
        if want["variance"] < 1e-8:
            assert got.loc[want["group"], "sd"] < 1e-4
        else:
            assert close(v, want["variance"], 1e-3 if precise else 2e-2, 1e-4), (want, v)
    assert fit.converged
    assert fit.nobs == len(load(dataset))


def test_crossed_logistic_and_odds_ratio():
    d = load("balanced.csv")
    fit = fit_crossed_logistic(d, "recalled")
    orr = fit.odds_ratio("x")
    est = fit.fixed.set_index("term").loc["x"]
    assert orr["odds_ratio"] == pytest.approx(np.exp(est["estimate"]))
    assert orr["ci_low"] == pytest.approx(np.exp(est["estimate"] - 1.959964 * est["se"]), rel=1e-6)
    assert orr["ci_low"] < orr["odds_ratio"] < orr["ci_high"]
    assert fit.formula == "recalled ~ x + (1 | participant_id) + (1 | stimulus_id)"


def _toy(n_p=10, clips=("h1", "h2", "a1", "a2"), seed=0):
    rng = np.random.default_rng(seed)
    rows = [(f"p{i}", c, "human" if c.startswith("h") else "ai", int(rng.random() < 0.5))
            for i in range(n_p) for c in clips]
    return pd.DataFrame(rows, columns=["participant_id", "stimulus_id", "source", "recalled"])


def test_refuses_non_binary_outcome():
    d = _toy()
    d.loc[3, "recalled"] = 2
    with pytest.raises(UserError, match="must be 0 or 1"):
        fit_crossed_logistic(d, "recalled")


def test_refuses_constant_outcome():
    d = _toy().assign(recalled=1)
    with pytest.raises(UserError, match="is 1 in every one of the 40 rows"):
        fit_crossed_logistic(d, "recalled")


def test_refuses_separation():
    d = _toy()
    d.loc[d.source == "human", "recalled"] = 1
    with pytest.raises(UserError, match="complete separation"):
        fit_crossed_logistic(d, "recalled")


def test_refuses_one_clip_per_source():
    d = _toy(clips=("h1", "a1"))
    with pytest.raises(UserError, match="at least two clips of each source"):
        fit_crossed_logistic(d, "recalled")


def test_refuses_group_fitted_exactly():
    # the clip column holds the source: two levels, fitted exactly by intercept + x (lmm's check)
    d = _toy().assign(clip=lambda t: t["source"])
    d["x"] = source_code(d["source"])
    with pytest.raises(UserError, match="cannot be estimated"):
        fit_glmer(d, "recalled", ["x"], ["participant_id", "clip"])


def test_one_source_and_missing_columns():
    d = _toy()
    with pytest.raises(UserError, match="only one source"):
        fit_crossed_logistic(d[d.source == "human"], "recalled")
    with pytest.raises(UserError, match="columns missing"):
        fit_crossed_logistic(d.drop(columns="source"), "recalled")
