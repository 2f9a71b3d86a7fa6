"""analysis.attribution: signal detection on AI-attribution judgments.

Pinned to the "attribution" section of tests/reference/reference_lme4.json (R 4.2.2:
qnorm on log-linear corrected rates, t.test(dprime, mu = 0)) for attribution.csv.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import attribution as A
from study.errors import UserError
from conftest import REFERENCE



@pytest.fixture(scope="module")
def ref():
    return json.loads((REFERENCE / "reference_lme4.json").read_text())["attribution"]


@pytest.fixture(scope="module")
def trials():
    return pd.read_csv(REFERENCE / "attribution.csv")


@pytest.fixture(scope="module")
def sdt(trials):
    return A.sdt_per_participant(trials)


def test_sdt_matches_reference_for_every_participant(sdt, ref):
    want = pd.DataFrame(ref["per_participant"]).set_index("participant_id")
    got = sdt.set_index("participant_id")
    assert len(want) == 40 and sorted(got.index) == sorted(want.index)
    got = got.loc[want.index]
    for col in ("hits", "false_alarms", "n_ai", "n_human"):
        assert got[col].tolist() == want[col].tolist(), col
    np.testing.assert_allclose(got["dprime"], want["dprime"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["criterion"], want["criterion"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["hit_rate"], (want["hits"] + 0.5) / (want["n_ai"] + 1), rtol=1e-12)
    assert list(sdt.columns) == A.SDT_COLUMNS


def test_group_level_matches_reference(sdt, ref):
    out = A.dprime_test(sdt).iloc[0]
    assert out["mean_dprime"] == pytest.approx(ref["mean_dprime"], rel=1e-9)
    assert out["mean_criterion"] == pytest.approx(ref["mean_criterion"], rel=1e-9)
    t = ref["t_dprime_vs_0"]
    assert out["t"] == pytest.approx(t["t"], rel=1e-9)
    assert out["df"] == t["df"] and out["n"] == 40
    assert out["p"] == pytest.approx(t["p"], rel=1e-6)
    q = stats.t.ppf(0.975, 39)
    assert out["ci_low"] == pytest.approx(out["mean_dprime"] - q * out["se"])


def test_perfect_scores_stay_finite():
    rows = [("p1", f"c{i}", "ai" if i % 2 else "human", "ai" if i % 2 else "human") for i in range(10)]
    d = pd.DataFrame(rows, columns=["participant_id", "stimulus_id", "source", "judged_source"])
    out = A.sdt_per_participant(d).iloc[0]
    # H = 5.5/6, F = 0.5/6: d' = 2 * z(11/12)
    assert out["dprime"] == pytest.approx(2 * stats.norm.ppf(11 / 12))
    assert out["criterion"] == pytest.approx(0.0, abs=1e-12)


def test_accuracy_by_clip(trials):
    out = A.accuracy_by_clip(trials).set_index("stimulus_id")
    c = trials[trials["stimulus_id"] == "clip000"]
    k = int((c["source"] == c["judged_source"]).sum())
    assert out.loc["clip000", "n"] == len(c) == 40
    assert out.loc["clip000", "accuracy"] == pytest.approx(k / 40)
    # Wilson interval by hand: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, n, p = stats.norm.ppf(0.975), 40, k / 40
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    assert out.loc["clip000", "ci_low"] == pytest.approx(centre - half)
    assert out.loc["clip000", "ci_high"] == pytest.approx(centre + half)
    assert out.loc["clip000", "mean_confidence"] == pytest.approx(c["confidence"].mean())
    assert len(out) == 20


def test_confidence_accuracy_bins(trials):
    out = A.confidence_accuracy(trials)
    assert out["confidence_bin"].tolist() == ["50-59", "60-69", "70-79", "80-89", "90-100"]
    assert out["n"].sum() == len(trials)
    top = trials[trials["confidence"] >= 90]
    assert out.iloc[-1]["n"] == len(top)
    assert out.iloc[-1]["accuracy"] == pytest.approx((top["source"] == top["judged_source"]).mean())


def test_confidence_accuracy_test(trials):
    import statsmodels.formula.api as smf

    out = A.confidence_accuracy_test(trials).set_index("term")
    slope = out.loc["confidence_per_10"]
    # the point estimate is plain logistic regression; only the SE is clustered
    d = trials.assign(correct=(trials["source"] == trials["judged_source"]).astype(int),
                      c10=(trials["confidence"] - 75) / 10)
    plain = smf.logit("correct ~ c10", d).fit(disp=0)
    assert slope["estimate"] == pytest.approx(plain.params["c10"], rel=1e-6)
    assert slope["estimate"] > 0 and slope["p"] < 0.01  # accuracy rises from 60% to 88% over the bins
    assert slope["odds_ratio"] == pytest.approx(np.exp(slope["estimate"]))


def test_judged_ai_effect_recovers_planted_effects(trials):
    rng = np.random.default_rng(11)
    p = pd.factorize(trials["participant_id"])[0]
    d = trials.assign(valence=5 + 0.4 * (trials["source"] == "human") + 0.9 * (trials["judged_source"] == "human")
                      + rng.normal(0, 0.5, 40)[p] + rng.normal(0, 1, len(trials)))
    out = A.judged_ai_effect(d, "valence").set_index("term")
    assert list(out.index) == ["x_true", "x_judged"]
    for term, truth in (("x_true", 0.4), ("x_judged", 0.9)):
        assert abs(out.loc[term, "estimate"] - truth) < 3 * out.loc[term, "se"]  # 0.074 here
        assert out.loc[term, "ci_low"] < out.loc[term, "estimate"] < out.loc[term, "ci_high"]
    assert out.loc["x_judged", "p"] < 1e-6


def test_bad_input(trials):
    with pytest.raises(UserError, match="judged_source"):
        A.sdt_per_participant(trials.drop(columns="judged_source"))
    with pytest.raises(UserError, match="must be 'human' or 'ai'"):
        A.sdt_per_participant(trials.assign(judged_source="robot"))
    with pytest.raises(UserError, match="at least 2"):
        A.dprime_test(A.sdt_per_participant(trials[trials["participant_id"] == "p0000"]))
