"""Continuous traces (analysis/traces.py, analysis/agreement.py): resampling, curves, agreement,
summaries, the peak-end model and human vs AI, on synthetic traces with known answers
(analysis/trace_synthetic.py).

Reference numbers: tests/reference/traces/reference_traces.json, computed with R 4.2.2,
psych 2.2.9 (ICC), lme4 1.1-31 and lmerTest 3.1-3 (REML, Satterthwaite df) by
make_reference.R on the datasets make_data.py writes (seeded) in the same folder.
Krippendorff's alpha: a case computed by hand, and the `krippendorff` package (PyPI) on
random matrices with missing values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lme4_checks import assert_fixed_match

from analysis import agreement, trace_synthetic, traces
from study.errors import UserError

REF = Path(__file__).resolve().parent / "reference" / "traces"


@pytest.fixture(scope="module")
def reference():
    ref = json.loads((REF / "reference_traces.json").read_text())
    assert "psych 2.2.9" in ref["generated_with"] and "lme4 1.1.31" in ref["generated_with"]
    return ref


def one_trace(times, values, *, participant="P1", trial=1, clip="c1", source="human", duration=10.0,
              partial=False, dimension="rating") -> pd.DataFrame:
    return pd.DataFrame({"participant": participant, "trial": trial, "clip": clip, "source": source,
                         "dimension": dimension, "video_time": times, "value": values, "clip_duration": duration,
                         "partial": partial})


# ----------------------------------------------------------------------------- ICC against psych


@pytest.mark.parametrize("dataset", ["icc_shrout_fleiss.csv", "icc_trace.csv", "icc_trace_rough.csv"])
def test_icc_matches_psych(reference, dataset):
    case = next(c for c in reference["icc"] if c["dataset"] == dataset)
    x = pd.read_csv(REF / dataset)
    got = agreement.icc(x).set_index("type")
    assert list(got.index) == list(agreement.ICC_TYPES)
    assert got.attrs == {"n_targets": case["n_targets"], "n_raters": case["n_raters"]}
    for want in case["anova"]:  # psych::ICC(x, lmer = FALSE): the same formulas, so to rounding
        row = got.loc[want["type"]]
        for k in ("icc", "F", "lower", "upper"):
            assert row[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (want["type"], k)
        assert row["p"] == pytest.approx(want["p"], rel=1e-6, abs=1e-15), want["type"]
        assert (row["df1"], row["df2"]) == (want["df1"], want["df2"])
    for want in case["lmer"]:  # psych's default: lme4's variance components, equal up to its optimiser
        assert got.loc[want["type"], "icc"] == pytest.approx(want["icc"], abs=2e-3), want["type"]


def test_icc_shrout_fleiss_published_values():
    # Shrout & Fleiss (1979), Table 4, to the two decimals printed there
    got = agreement.icc(pd.read_csv(REF / "icc_shrout_fleiss.csv")).set_index("type")["icc"].round(2)
    assert got.to_dict() == {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}


def test_icc_drops_incomplete_rows_and_refuses_too_little():
    x = pd.read_csv(REF / "icc_shrout_fleiss.csv").astype(float)
    with_gap = pd.concat([x, pd.DataFrame([[1.0, np.nan, 3.0, 4.0]], columns=x.columns)], ignore_index=True)
    pd.testing.assert_frame_equal(agreement.icc(with_gap), agreement.icc(x))
    with pytest.raises(UserError, match="at least 2 targets rated by at least 2 raters"):
        agreement.icc(x[["j1"]])
    with pytest.raises(UserError, match="not defined"):
        agreement.icc(np.ones((5, 3)))
    with pytest.raises(UserError, match="targets .rows. by raters"):
        agreement.icc(np.ones(5))


# ----------------------------------------------------------------------------- Krippendorff's alpha


def test_alpha_hand_computed_case():
    # 3 targets x 2 raters: (1, 1), (2, 2), (3, 4). n = 6 pairable values.
    # D_o = (1/n) sum_u 1/(m_u - 1) sum_{i != j} (v_i - v_j)^2 = (0 + 0 + 2 * 1) / 6 = 1/3
    # D_e = sum over ordered pairs of all values / (n (n - 1)) = 2 * (6 * 35 - 13^2) / 30 = 82 / 30
    # alpha = 1 - D_o / D_e = 1 - 10 / 82 = 72 / 82
    assert agreement.krippendorff_alpha([[1, 1], [2, 2], [3, 4]]) == pytest.approx(72 / 82, rel=1e-12)
    # a target rated once is not pairable: adding one changes nothing
    assert agreement.krippendorff_alpha([[1, 1], [2, 2], [3, 4], [9, np.nan]]) == pytest.approx(72 / 82, rel=1e-12)


def test_alpha_matches_the_krippendorff_package():
    import krippendorff  # a dev dependency (pyproject.toml), the independent implementation
    rng = np.random.default_rng(4)
    for _ in range(20):
        m = np.round(rng.normal(size=(15, 6)) + 2 * rng.normal(size=(15, 1)), 2)
        m[rng.random(m.shape) < 0.25] = np.nan
        want = krippendorff.alpha(reliability_data=m.T, level_of_measurement="interval")
        assert agreement.krippendorff_alpha(m) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_alpha_refuses_what_it_cannot_compute():
    with pytest.raises(UserError, match="at least one target rated by two raters"):
        agreement.krippendorff_alpha([[1, np.nan], [np.nan, 2]])
    with pytest.raises(UserError, match="every rating is the same"):
        agreement.krippendorff_alpha([[3, 3], [3, 3]])


# ----------------------------------------------------------------------------- resampling


def test_irregular_sampling_recovers_a_linear_trace_exactly():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 10, 120))
    t[0], t[-1] = 0.0, 10.0
    d = one_trace(t, 2 * t + 1).sample(frac=1, random_state=1)  # rows in any order
    res = traces.resample(d, "seconds", step_s=0.5)
    assert res["t"].tolist() == pytest.approx(list(np.arange(0, 10.01, 0.5)))
    assert res["value"].to_numpy() == pytest.approx(2 * res["t"].to_numpy() + 1)
    norm = traces.resample(d, "normalised", points=11)
    assert norm["t"].tolist() == pytest.approx(list(np.linspace(0, 1, 11)))
    assert norm["time_s"].tolist() == pytest.approx(list(np.linspace(0, 10, 11)))
    assert norm["value"].to_numpy() == pytest.approx(2 * norm["time_s"].to_numpy() + 1)


def test_gaps_ends_ties_and_missing_values():
    t = np.r_[np.arange(0.2, 3.01, 0.1), np.arange(4.5, 8.11, 0.1)]  # a 1.5 s gap; nothing after 8.1 s
    d = one_trace(t, np.full(len(t), 5.0))
    # a pause at 2 s: three samples at the same video time, averaged; a missing value is skipped
    d = pd.concat([d, one_trace([2.0, 2.0, 6.0], [8.0, 2.0, np.nan])], ignore_index=True)
    res = traces.resample(d, "seconds", step_s=0.5, max_gap_s=1.0).set_index("t")["value"]
    assert res[0.0] == 5.0  # 0.2 s before the first sample: within half of max_gap_s
    assert np.isnan(res[3.5]) and np.isnan(res[4.0])  # inside the 1.5 s gap
    assert res[3.0] == 5.0 and res[4.5] == 5.0
    assert res[2.0] == pytest.approx((5 + 8 + 2) / 3)  # the sample at 2.0 and the two pause samples
    assert res[8.0] == 5.0 and res[8.5] == 5.0 and np.isnan(res[9.0]) and np.isnan(res[10.0])
    assert res[6.0] == 5.0
    wide = traces.resample(d, "seconds", step_s=0.5, max_gap_s=2.0).set_index("t")["value"]
    assert wide[3.5] == 5.0  # a gap shorter than max_gap_s is interpolated


def test_partial_and_short_traces_are_flagged_and_left_out():
    full = [one_trace(np.arange(0, 10.01, 0.1), np.full(101, v), participant=p)
            for p, v in (("P1", 4.0), ("P2", 6.0))]
    part = one_trace(np.arange(0, 10.01, 0.1), np.full(101, 9.0), participant="P3", partial=True)
    short = one_trace(np.arange(0, 5.01, 0.1), np.full(51, 1.0), participant="P4")
    d = pd.concat([*full, part, short], ignore_index=True)
    s = traces.trial_summaries(d).set_index("participant")
    assert s["used"].to_dict() == {"P1": True, "P2": True, "P3": False, "P4": False}
    assert s.loc["P3", "reason"] == "partial trace (trial restarted)"
    assert s.loc["P4", "reason"].startswith("covers 5") and np.isnan(s.loc["P4", "end"])
    curve = traces.mean_curves(d, by="clip")
    assert curve["mean"].to_numpy() == pytest.approx(5.0) and (curve["n"] == 2).all()
    with_partial = traces.mean_curves(d, by="clip", include_partial=True)
    assert with_partial["mean"].to_numpy() == pytest.approx(19 / 3) and (with_partial["n"] == 3).all()


def test_summary_definitions_on_a_known_trace():
    # rises from 2 to 8 over 0..4 s, falls to 5 at 6 s, stays at 5 to the end (10 s)
    t = np.arange(0, 10.001, 0.05)
    v = np.interp(t, [0, 4, 6, 10], [2, 8, 5, 5])
    s = traces.trial_summaries(one_trace(t, v), neutral=5.0, step_s=0.25).iloc[0]
    assert (s["peak"], s["peak_time"]) == (pytest.approx(8.0), pytest.approx(4.0))
    assert (s["trough"], s["trough_time"]) == (pytest.approx(2.0), pytest.approx(0.0))
    assert s["end"] == pytest.approx(5.0)
    grid = np.arange(0, 10.001, 0.25)
    gv = np.interp(grid, [0, 4, 6, 10], [2, 8, 5, 5])
    assert s["mean"] == pytest.approx(gv.mean())
    # area above neutral (5): -3*... the exact integral of the piecewise linear trace minus 5
    exact = 0.5 * 4 * (2 + 8) + 0.5 * 2 * (8 + 5) + 4 * 5 - 5 * 10
    assert s["area"] == pytest.approx(exact, abs=1e-9)
    assert s["slope"] == pytest.approx(np.polyfit(grid, gv, 1)[0])
    assert s["coverage"] == 1.0 and s["used"]


def test_bad_traces_give_clear_errors():
    good = one_trace([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(UserError, match="misses columns") as e:
        traces.resample(good.drop(columns=["clip_duration"]))
    assert "column clip_duration" in str(e.value.problems[0])
    bad = good.astype({"value": object})
    bad.loc[1, "value"] = "high"
    with pytest.raises(UserError, match="not numbers") as e:
        traces.trial_summaries(bad)
    assert "row 1 has 'high'" in str(e.value.problems[0])
    cases = [("video_time", -1.0, "cannot be negative"), ("video_time", 15.0, "past the end of clip c1"),
             ("clip_duration", 0.0, "lasts longer than 0 s"), ("value", np.inf, "row 1 is inf"),
             ("video_time", np.nan, "has no video time")]
    for col, val, msg in cases:
        b = good.copy()
        b.loc[1, col] = val
        with pytest.raises(UserError) as e:
            traces.resample(b)
        assert any(msg in str(p) for p in e.value.problems), (col, val, e.value.problems)
    with pytest.raises(UserError, match="grid must be"):
        traces.resample(good, "minutes")
    with pytest.raises(UserError, match="by 'source' or by 'clip'"):
        traces.mean_curves(good, by="participant")
    with pytest.raises(UserError, match="DataFrame"):
        traces.resample([1, 2, 3])
    with pytest.raises(UserError, match="trial table misses"):
        traces.join_ratings(traces.trial_summaries(good), pd.DataFrame({"pid": [1]}))


# ----------------------------------------------------------------------------- known peaks, ends, agreement


@pytest.fixture(scope="module")
def exact_study():
    """No gain or end variation: the expected ICCs are known (trace_synthetic._truth)."""
    return trace_synthetic.synthetic_traces(40, seed=3, gain_sd=0, end_sd=0)


def test_mean_curves_recover_planted_peaks_and_ends(exact_study):
    truth = exact_study.truth.set_index("clip")
    curves = traces.mean_curves(exact_study.traces, by="clip")
    for clip, g in curves.groupby("clip"):
        top = g.loc[g["mean"].idxmax()]
        assert top["t"] == truth.loc[clip, "peak_time"], clip
        assert top["mean"] == pytest.approx(truth.loc[clip, "peak_value"], abs=0.25), clip
        assert top["ci_low"] < top["mean"] < top["ci_high"] and top["n"] == 40
        end = g[g["t"] >= g["t"].max() - 1]["mean"].mean()
        assert end == pytest.approx(truth.loc[clip, "end_value"], abs=0.2), clip
    s = traces.trial_summaries(exact_study.traces)
    by_clip = s.groupby("clip").agg(peak_time=("peak_time", "median"), end=("end", "mean"))
    assert (by_clip["peak_time"] - truth["peak_time"]).abs().max() <= 0.5
    assert (by_clip["end"] - truth["end_value"]).abs().max() <= 0.2


def test_bootstrap_band_close_to_t_band(exact_study):
    d = exact_study.traces[exact_study.traces["clip"] == "human_01"]
    t_band = traces.mean_curves(d, by="clip")
    boot = traces.mean_curves(d, by="clip", method="bootstrap", n_boot=400, seed=2)
    assert boot["mean"].to_numpy() == pytest.approx(t_band["mean"].to_numpy())
    width_t = (t_band["ci_high"] - t_band["ci_low"]).mean()
    width_b = (boot["ci_high"] - boot["ci_low"]).mean()
    assert 0.8 < width_b / width_t < 1.1


def test_agreement_recovers_the_planted_icc(exact_study):
    truth = exact_study.truth.set_index("clip")
    ag = traces.agreement(exact_study.traces).set_index("clip")
    assert (ag["n_raters"] == 40).all() and (ag["n_points"] == 33).all()
    assert (ag["icc3"] - truth["expected_icc_c1"]).abs().max() < 0.03
    assert (ag["icc2"] - truth["expected_icc_a1"]).abs().max() < 0.06
    assert ((ag["icc3_lower"] < ag["icc3"]) & (ag["icc3"] < ag["icc3_upper"])).all()
    assert (ag["icc3k"] > ag["icc3"]).all() and ag["alpha_interval"].between(0.5, 0.9).all()
    noisy = trace_synthetic.synthetic_traces(40, seed=3, gain_sd=0, end_sd=0, noise_sd=1.2, rater_sd=1.0)
    ag_noisy = traces.agreement(noisy.traces).set_index("clip")
    t2 = noisy.truth.set_index("clip")
    assert (ag_noisy["icc3"] - t2["expected_icc_c1"]).abs().max() < 0.1  # fewer effective points: AR noise
    assert (ag_noisy["icc3"] < ag["icc3"] - 0.2).all()


def test_source_effect_on_summaries_is_recovered():
    st = trace_synthetic.synthetic_traces(20, seed=8, source_effect=2.0, gain_sd=0.1, end_sd=0.2)
    res = traces.source_tests(traces.trial_summaries(st.traces), measures=("mean", "end")).set_index("measure")
    for m in ("mean", "end"):
        assert res.loc[m, "ci_low"] < 2.0 < res.loc[m, "ci_high"], res.loc[m]
        assert res.loc[m, "p"] < 0.05 and res.loc[m, "p_holm"] >= res.loc[m, "p"]
        assert res.loc[m, "n_trials"] == 120 and isinstance(res.loc[m, "model_used"], str)
    null = trace_synthetic.synthetic_traces(20, seed=8, source_effect=0.0, gain_sd=0.1, end_sd=0.2)
    res0 = traces.source_tests(traces.trial_summaries(null.traces), measures=("mean",)).iloc[0]
    assert res0["ci_low"] < 0 < res0["ci_high"]


# ----------------------------------------------------------------------------- ratings and the peak-end model


def test_join_ratings_matches_participant_and_clip():
    st = trace_synthetic.synthetic_traces(5, seed=2)
    s = traces.trial_summaries(st.traces)
    j = traces.join_ratings(s, st.trials)
    assert len(j) == len(s) and j["valence"].notna().all()
    want = st.trials.set_index(["participant_id", "stimulus_id"])["valence"]
    got = j.set_index(["participant", "clip"])["valence"]
    assert got.sort_index().to_numpy() == pytest.approx(want.sort_index().to_numpy())
    # a clip shown twice to one participant: the trial's position tells them apart
    trials2 = pd.concat([st.trials, st.trials.iloc[[0]].assign(position=99, valence=-1.0)], ignore_index=True)
    j2 = traces.join_ratings(s, trials2, ["valence"])
    assert len(j2) == len(s) and (j2["valence"] != -1.0).all()


def test_peak_end_model_matches_lme4(reference):
    ref = reference["peak_end"]
    d = pd.read_csv(REF / "peak_end.csv").assign(used=True, dimension="rating")
    table, fit = traces.peak_end_model(d, "valence", "rating")
    assert_fixed_match(fit, ref)
    got = fit.random.set_index("group")["variance_or_cov"]
    for r in ref["random"]:
        assert got[r["group"]] == pytest.approx(r["variance_or_cov"], rel=1e-3), r["group"]
    assert list(table["term"]) == ["(Intercept)", "z_peak", "z_end", "z_mean"]
    assert (table["n_trials"] == ref["nobs"]).all() and (table["n_clips"] == 6).all()


def test_peak_end_model_finds_peak_and_end_beyond_the_mean():
    st = trace_synthetic.synthetic_traces(40, seed=13, w_peak=0.6, w_end=0.6, w_mean=0.0)
    j = traces.join_ratings(traces.trial_summaries(st.traces), st.trials, ["valence"])
    t = traces.peak_end_model(j, "valence", "rating")[0].set_index("term")
    assert t.loc["z_peak", "estimate"] > 0 and t.loc["z_peak", "p"] < 1e-3
    assert t.loc["z_end", "estimate"] > 0 and t.loc["z_end", "p"] < 1e-3
    with pytest.raises(UserError, match="no trial has both"):
        traces.peak_end_model(j.assign(valence=np.nan), "valence", "rating")
