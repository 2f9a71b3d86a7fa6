"""More designs pinned to lme4 / lmerTest, the sparse clip block, identifiability checks and
convergence diagnostics (analysis/lmm.py, analysis/lmm_sparse.py).

Reference numbers: tests/reference/lme4_cases/reference_lme4_cases.json, computed with
R 4.2.2, lme4 1.1-31 and lmerTest 3.1-3 (REML, Satterthwaite df) by make_reference.R on the
datasets that make_data.py writes (seeded) in the same folder (lists.csv and its four models
were added later by the same scripts, the entries already there kept as they were);
x = +0.5 human, -0.5 AI.
Tolerances as tests/test_lmm.py: fixed effects relative 1e-5, SEs and t relative 2e-4, df
0.05 absolute, p 2e-4 absolute, REML criterion no worse than lme4's + 1e-3, variances
relative 1e-3 and covariances/correlations 1e-3 absolute; singular fits only fixed
effects, SEs and criterion.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lme4_checks import assert_fixed_match

from analysis import lmm
from analysis.lmm import RandomTerm, clip_counts, fit_crossed, fit_lmm, source_code
from study.errors import UserError

CASES = Path(__file__).resolve().parent / "reference" / "lme4_cases"


@pytest.fixture(scope="module")
def reference():
    ref = json.loads((CASES / "reference_lme4_cases.json").read_text())
    assert "lme4 1.1.31" in ref["generated_with"] and "lmerTest 3.1.3" in ref["generated_with"]
    return {ds["dataset"]: {m["model"]: m for m in ds["models"]} for ds in ref["datasets"]}


_data: dict = {}
_fits: dict = {}


def load(name):
    if name not in _data:
        d = pd.read_csv(CASES / name)
        d["x"] = source_code(d["source"])
        _data[name] = d
    return _data[name]


def terms_of(formula: str) -> list[RandomTerm]:
    """lme4's (1 + x | g) / (1 + x || g) / (1 | g) terms of a formula, as RandomTerms."""
    out = []
    for body in re.findall(r"\(([^)]*)\)", formula):
        lhs, group = re.split(r"\|\|?", body)
        slopes = tuple(s.strip() for s in lhs.split("+")[1:])
        out.append(RandomTerm(group.strip(), slopes, "||" not in body))
    return out


def fitted(dataset, ref, solver="auto"):
    key = (dataset, ref["model"], solver)
    if key not in _fits:
        _fits[key] = fit_lmm(load(dataset), "valence", ["x"], terms_of(ref["formula"]),
                             solver=solver)
    return _fits[key]


def assert_matches(fit, ref):
    assert_fixed_match(fit, ref)
    if ref["singular"]:
        return
    table = fit.random
    assert len(table) == len(ref["random"])
    for want in ref["random"]:
        sel = (table.group == want["group"]) & (
            table.var1.isna() if want["var1"] is None else table.var1 == want["var1"]) & (
            table.var2.isna() if want["var2"] is None else table.var2 == want["var2"])
        got = table[sel]
        assert len(got) == 1, want
        got = got.iloc[0]
        if want["var2"] is None:
            assert got.variance_or_cov == pytest.approx(want["variance_or_cov"], rel=1e-3)
        else:
            assert got.variance_or_cov == pytest.approx(want["variance_or_cov"], abs=1e-3)
            assert got.sd_or_cor == pytest.approx(want["sd_or_cor"], abs=1e-3)
    assert fit.converged, fit.messages
    assert fit.max_grad < lmm.GRAD_TOL
    assert fit.hessian_min_eigenvalue > 0 and np.isfinite(fit.hessian_condition)


PINNED = [
    ("many_clips.csv", "intercepts"), ("many_clips.csv", "correlated_slope"),
    ("partly_crossed.csv", "intercepts"), ("partly_crossed.csv", "uncorrelated_slope"),
    ("partly_crossed.csv", "correlated_slope"),
    ("within_clip.csv", "intercepts"), ("within_clip.csv", "clip_slope_intercepts"),
    ("within_clip.csv", "uncorrelated_slope"), ("within_clip.csv", "correlated_slope"),
    ("within_clip.csv", "participant_slope_only"),
    ("between_participants.csv", "intercepts"),
]


@pytest.mark.parametrize("dataset,model", PINNED)
def test_matches_lme4_and_lmertest(reference, dataset, model):
    ref = reference[dataset][model]
    assert ref["warnings"] == [] and ref["messages"] == []  # lme4 had no complaint
    assert_matches(fitted(dataset, ref), ref)


LISTS_MODELS = ["intercepts", "uncorrelated_slope", "correlated_slope", "clip_slope"]


@pytest.mark.parametrize("model", LISTS_MODELS)
def test_blocks_path_matches_lme4_on_lists(reference, model):
    """Clips assigned in 8 lists of 8 to 15 clips: the auto choice factors the clip block
    component by component (padded to several sizes; with a by-clip source slope Lambda2
    is not diagonal), and every number matches lme4, as the dense solver's do."""
    ref = reference["lists.csv"][model]
    assert ref["warnings"] == [] and ref["messages"] == []
    fit = fitted("lists.csv", ref)
    assert fit.solver == "blocks"
    assert fit._design[-1].block.components == 8
    assert len(fit._design[-1].block._groups) > 1  # components padded to several sizes
    assert_matches(fit, ref)
    dense = fitted("lists.csv", ref, solver="dense")
    assert dense.solver == "dense"
    assert_matches(dense, ref)


@pytest.mark.parametrize("dataset,model,solver", [
    ("within_clip.csv", "correlated_slope", "dense"), ("lists.csv", "clip_slope", "dense"),
    ("many_clips.csv", "correlated_slope", "sparse"),
])
def test_the_large_block_settings_still_match_lme4(reference, monkeypatch, dataset, model, solver):
    """A fit whose clip block has 1,000 columns or more takes two Richardson steps instead
    of four, evaluates the Hessian's points in threads and lets BLAS use the cores in the
    optimiser; forced here on the reference cases, the numbers still match lme4's."""
    monkeypatch.setattr(lmm, "_large", lambda cp: True)
    monkeypatch.delenv("KULESHOV_FIT_THREADS", raising=False)
    monkeypatch.setattr(lmm.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    calls, starts = [], []
    richardson, optimise = lmm._richardson, lmm._optimise
    monkeypatch.setattr(lmm, "_richardson", lambda *a, **k: calls.append((k["r"], k["workers"]))
                        or richardson(*a, **k))
    monkeypatch.setattr(lmm, "_optimise", lambda cp, start, *a, **k: starts.append(start.copy())
                        or optimise(cp, start, *a, **k))
    ref = reference[dataset][model]
    fit = fit_lmm(load(dataset), "valence", ["x"], terms_of(ref["formula"]), solver=solver)
    assert calls == [(2, 2)]
    # the intercepts-only model first (one factor per term), then the model from its estimates
    assert [len(s) for s in starts] == [len(terms_of(ref["formula"])), len(fit.theta)]
    assert starts[1][0] != 1.0 and 0.2 in starts[1]
    assert_matches(fit, ref)


def test_the_gil_free_cholesky_is_lapacks():
    from analysis import lmm_sparse

    rng = np.random.default_rng(2)
    G = rng.standard_normal((300, 310))
    A = G @ G.T + np.eye(300)
    assert lmm_sparse._DPOTRF is not None  # found in scipy's LAPACK on this platform
    U, info = lmm_sparse.cholesky_upper(A.copy())
    want, info2 = lmm_sparse.dpotrf(A.copy().T, lower=0, clean=1)
    assert info == info2 == 0
    assert np.array_equal(np.triu(U), want)
    bad = A.copy()
    bad[5, 5] = -1.0
    assert lmm_sparse.cholesky_upper(bad)[1] == 6  # LAPACK's info: the failing pivot


@pytest.mark.parametrize("model", ["intercepts", "correlated_slope"])
def test_sparse_path_matches_lme4_on_many_clips(reference, model):
    ref = reference["many_clips.csv"][model]
    fit = fitted("many_clips.csv", ref, solver="sparse")
    assert fit.solver == "sparse"
    assert_matches(fit, ref)
    dense = fitted("many_clips.csv", ref, solver="dense")
    assert dense.solver == "dense"
    for col in ("estimate", "se", "df"):
        assert np.allclose(fit.fixed[col], dense.fixed[col], rtol=1e-5, atol=1e-3)


def _crossprods(data, random, fixed=("x",), solvers=("dense", "sparse"), collapse=True):
    """The criterion's pieces for the same model under each solver."""
    n = len(data)
    X = np.column_stack([np.ones(n)] + [data[c].to_numpy(float) for c in fixed])
    out = {}
    for solver in solvers:
        terms, pos = [], 0
        for spec in random:
            codes, levels = pd.factorize(data[spec.group], sort=True)
            W = np.column_stack([np.ones(n)] + [data[s].to_numpy(float) for s in spec.slopes])
            t = lmm._Term(spec, codes.astype(np.int64), len(levels), W,
                          [lmm.INTERCEPT, *spec.slopes])
            t.theta_slice = slice(pos, pos + t.n_theta())
            pos += t.n_theta()
            terms.append(t)
        out[solver] = lmm._Crossprod(X, data["valence"].to_numpy(float), terms, solver,
                                     collapse=collapse)
    return out, pos


@pytest.mark.parametrize("dataset,random", [
    ("many_clips.csv", [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id")]),
    ("within_clip.csv", [RandomTerm("participant_id", ("x",)),
                         RandomTerm("stimulus_id", ("x",))]),  # Lambda2 not diagonal
    ("partly_crossed.csv", [RandomTerm("participant_id", ("x",), False),
                            RandomTerm("stimulus_id")]),
    ("lists.csv", [RandomTerm("participant_id", ("x",)),
                   RandomTerm("stimulus_id", ("x",))]),  # Lambda2 not diagonal
])
def test_sparse_and_dense_give_the_same_criterion(dataset, random):
    cps, k = _crossprods(load(dataset), random, solvers=("dense", "sparse", "blocks"))
    assert cps["sparse"].block.solver == "sparse" and cps["dense"].block.solver == "dense"
    assert cps["blocks"].block.solver == "blocks"  # one block when the design is connected
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = rng.uniform(0.1, 1.2, k)
        a = cps["dense"].solve(theta)
        for other in ("sparse", "blocks"):
            for u, v in zip(a, cps[other].solve(theta)):
                assert np.allclose(u, v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dataset,expected", [
    ("within_clip.csv", (60, 50)),  # 30 clips, 20 shown under both sources
    ("lists.csv", None),
])
def test_clips_under_one_source_collapse_to_one_column_with_the_same_criterion(dataset, expected):
    """With a by-clip source slope, a clip shown under one source only keeps one column,
    scaled by |T'w|, instead of two: the criterion, beta and vcov are unchanged on every
    solver (and lme4's numbers on within_clip.csv are pinned by the tests above)."""
    d = load(dataset)
    random = [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id", ("x",))]
    solvers = ("dense", "sparse", "blocks")
    whole, k = _crossprods(d, random, solvers=solvers, collapse=False)
    small, _ = _crossprods(d, random, solvers=solvers)
    q_whole, q_small = whole["dense"].q2, small["dense"].q2
    clips = d["stimulus_id"].nunique()
    both = int((d.groupby("stimulus_id")["x"].nunique() > 1).sum())
    assert (q_whole, q_small) == (2 * clips, clips + both)
    if expected:
        assert (q_whole, q_small) == expected
    assert 0 < both < clips
    rng = np.random.default_rng(3)
    for _ in range(3):
        theta = rng.uniform(-0.5, 1.2, k)
        theta[[0, 2, 3, 5]] = np.abs(theta[[0, 2, 3, 5]])
        ref = whole["dense"].solve(theta)
        for solver in solvers:
            for u, v in zip(ref, small[solver].solve(theta)):
                assert np.allclose(u, v, rtol=1e-9, atol=1e-12)


def test_threads_do_not_change_the_satterthwaite_numbers(reference, monkeypatch):
    d = load("within_clip.csv")
    random = [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id", ("x",))]
    fits = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("KULESHOV_FIT_THREADS", threads)
        fits[threads] = fit_lmm(d, "valence", ["x"], random)
    pd.testing.assert_frame_equal(fits["1"].fixed, fits["2"].fixed, check_exact=True)
    assert fits["1"].max_grad == fits["2"].max_grad


@pytest.mark.parametrize("dataset,solver", [("within_clip.csv", "dense"), ("lists.csv", "blocks")])
def test_the_criterion_is_right_when_threads_evaluate_it_at_once(dataset, solver):
    """The Satterthwaite Hessian's points are evaluated by threads sharing one _Crossprod
    (its participant part cached by T1, the clip block's scratch space): points that share
    T1 and points that do not, evaluated at once, must each get their own numbers. (A
    scratch buffer shared by the calls, as the blocks solver once had, fails this.)"""
    from concurrent.futures import ThreadPoolExecutor

    d = load(dataset)
    random = [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id", ("x",))]
    cps, k = _crossprods(d, random, solvers=(solver,))
    cp = cps[solver]
    assert cp.block.solver == solver
    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 1.0, k)
    points = []
    for i in range(300):  # alternately a new participant factor and the same one
        theta = base.copy()
        theta[i % k] += 0.01 * (i + 1)
        points.append(theta)
    want = [cp.solve(t) for t in points]
    cp._part_cache = None
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that a race shows
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(cp.solve, points))
    finally:
        sys.setswitchinterval(interval)
    for w, g in zip(want, got):
        for u, v in zip(w, g):
            assert np.array_equal(u, v)


def test_a_singular_fit_can_stop_before_the_satterthwaite_df(reference_dir):
    """fit_crossed drops a singular model, so it asks fit_lmm to stop there: no df, no
    p-values, but the same estimates, singular flag and message as the full fit."""
    d = pd.read_csv(reference_dir / "crossed_singular.csv")
    d["x"] = source_code(d["source"])
    random = [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id")]
    full = fit_lmm(d, "valence", ["x"], random)
    short = fit_lmm(d, "valence", ["x"], random, stop_if_singular=True)
    assert full.singular and short.singular
    assert short.fixed["df"].isna().all() and short.fixed["p"].isna().all()
    assert np.allclose(short.fixed["estimate"], full.fixed["estimate"], rtol=1e-12)
    assert np.allclose(short.fixed["se"], full.fixed["se"], rtol=1e-12)
    assert [m for m in short.messages if m.startswith("singular")] == \
        [m for m in full.messages if m.startswith("singular")]
    # a fit that is not singular is returned whole
    ok = pd.read_csv(reference_dir / "crossed_subset.csv")
    ok["x"] = source_code(ok["source"])
    a = fit_lmm(ok, "valence", ["x"], random)
    b = fit_lmm(ok, "valence", ["x"], random, stop_if_singular=True)
    assert not a.singular
    pd.testing.assert_frame_equal(a.fixed, b.fixed)


def test_clip_block_modes_agree_on_the_reference_designs(reference_dir, monkeypatch):
    """The balanced reference set goes through precomputed patterns, a design with missing
    cells (and a budget too small for its many patterns) through dense products, and both
    through the cliques with the sparse solver."""
    from analysis import lmm_sparse

    d = pd.read_csv(reference_dir / "crossed_subset.csv")
    d["x"] = source_code(d["source"])
    random = [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id")]
    cps, k = _crossprods(d, random)
    assert cps["dense"].block.mode == "patterns"
    holes = d.drop(d.sample(frac=0.3, random_state=3).index).reset_index(drop=True)
    monkeypatch.setattr(lmm_sparse, "PATTERN_BUDGET", 20_000)
    cps2, _ = _crossprods(holes, random)
    assert cps2["dense"].block.mode == "products"
    theta = np.array([0.7, 0.1, 0.3, 0.4])
    for group in (cps, cps2):
        a, b = group["dense"].solve(theta), group["sparse"].solve(theta)
        for u, v in zip(a, b):
            assert np.allclose(u, v, rtol=1e-9, atol=1e-12)


def _many_clips(n_part, n_clips, per, list_size=None, seed=11, overlap=0):
    """Each participant rates `per` clips: drawn from all clips, or from one list of
    `list_size` clips (clips assigned in lists, as many studies do); with `overlap`, each
    list also holds the next list's first `overlap` clips, which chains the lists into one
    connected design."""
    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(n_part), per)
    if list_size is None:
        c = np.concatenate([rng.choice(n_clips, per, replace=False) for _ in range(n_part)])
    else:
        lists = rng.integers(0, n_clips // list_size, n_part)
        c = np.concatenate([(lst * list_size + rng.choice(list_size + overlap, per, replace=False))
                            % n_clips for lst in lists])
    x = np.where(c % 2 == 0, 0.5, -0.5)
    return pd.DataFrame({"participant_id": p, "stimulus_id": c, "x": x,
                         "valence": rng.normal(0, 1, len(p)) + x * 0.3})


def test_auto_chooses_sparse_when_the_clip_block_stays_sparse():
    """2,000 clips in lists of 25 that each share 5 clips with the next list, 4,000
    participants each rating 4 clips of one list: the clips form one connected design, the
    clip block is 2,000 x 2,000 and its factor stays sparse (banded), so the auto choice is
    sparse (30x faster per evaluation here); both solvers give the same criterion."""
    d = _many_clips(4000, 2000, 4, list_size=25, overlap=5)
    random = [RandomTerm("participant_id"), RandomTerm("stimulus_id")]
    cps, k = _crossprods(d, random, solvers=("auto", "dense"))
    assert cps["auto"].block.q2 == d.stimulus_id.nunique() > 1990
    assert cps["auto"].block.solver == "sparse"
    assert cps["auto"].block.density < lmm_sparse_max_density()
    theta = np.array([0.5, 0.4])
    for u, v in zip(cps["auto"].solve(theta), cps["dense"].solve(theta)):
        assert np.allclose(u, v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("random", [
    [RandomTerm("participant_id"), RandomTerm("stimulus_id")],
    [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id")],
])
def test_auto_factors_the_lists_block_by_block(random):
    """The same lists without the overlap: each list's participants see only its clips, so
    the clip block falls into 80 components of 25 clips, factored one by one ("blocks",
    about 4x faster per evaluation than the sparse factor here); the criterion's pieces
    agree with the dense and the sparse solver."""
    d = _many_clips(4000, 2000, 4, list_size=25)
    cps, k = _crossprods(d, random, solvers=("auto", "dense", "sparse"))
    block = cps["auto"].block
    assert block.solver == "blocks" and block.components == 80
    assert block.largest_component == 25
    theta = np.array([0.5, 0.1, 0.2, 0.4])[-k:] if k == 4 else np.array([0.5, 0.4])
    got = cps["auto"].solve(theta)
    for other in ("dense", "sparse"):
        for u, v in zip(got, cps[other].solve(theta)):
            assert np.allclose(u, v, rtol=1e-9, atol=1e-12)


def test_auto_stays_dense_when_random_clips_would_fill_the_factor():
    """The same numbers, but each participant's 4 clips drawn from all 2,000: about 1% of the
    clip block is nonzero, yet its Cholesky factor fills in (the clip graph is an expander),
    so LAPACK on the dense matrix is chosen."""
    d = _many_clips(4000, 2000, 4)
    cps, _ = _crossprods(d, [RandomTerm("participant_id"), RandomTerm("stimulus_id")],
                         solvers=("auto",))
    block = cps["auto"].block
    assert block.q2 == 2000 and block.density < 0.02
    assert block.solver == "dense"
    assert block.envelope > 0.25 * 2000 * 2001 / 2


def lmm_sparse_max_density():
    from analysis.lmm_sparse import SPARSE_MAX_DENSITY
    return SPARSE_MAX_DENSITY


def test_fit_crossed_on_partly_crossed_uses_the_full_model(reference):
    fit = fit_crossed(load("partly_crossed.csv"), "valence")
    assert fit.model_used == "correlated_slope"
    assert fit.clip_counts == {"clips": 42, "human": 21, "ai": 21, "both": 0}
    assert_matches(fit, reference["partly_crossed.csv"]["correlated_slope"])


# --------------------------------------------------------------------------------------
# source varying within clips


def test_source_within_clips_is_detected_counted_and_fitted_as_lme4_would(reference):
    d = load("within_clip.csv")
    assert clip_counts(d) == {"clips": 30, "human": 25, "ai": 25, "both": 20}
    fit = fit_crossed(d, "valence")
    assert fit.clip_counts == {"clips": 30, "human": 25, "ai": 25, "both": 20}
    assert fit.formula == ("valence ~ x + (1 + x | participant_id) + (1 + x | stimulus_id)")
    assert fit.model_used == "correlated_slope"
    text = " ".join(fit.messages)
    assert "20 of 30 clips were shown under both sources" in text
    assert "25 clips shown as human-made, 25 as AI-generated" in text
    assert_matches(fit, reference["within_clip.csv"]["correlated_slope"])
    # the by-clip slope matters here: without it the SE of x is a third smaller (lme4 too)
    ref_without = reference["within_clip.csv"]["participant_slope_only"]
    without = next(r for r in ref_without["fixed"] if r["term"] == "x")
    assert fit.fixed.set_index("term").loc["x", "se"] > 1.4 * without["se"]


def test_clip_counts_without_within_clip_variation(reference_dir):
    d = pd.read_csv(reference_dir / "crossed_subset.csv")
    assert clip_counts(d) == {"clips": 40, "human": 20, "ai": 20, "both": 0}
    assert fit_crossed(d, "valence").clip_counts["both"] == 0


# --------------------------------------------------------------------------------------
# what cannot be estimated


def test_one_clip_per_source_is_refused(reference):
    # lme4 fits it but warns that the Hessian is degenerate (and the intercepts-model SE
    # of x it reports means nothing): a plain message here, no number
    ref = reference["one_clip_per_source.csv"]["intercepts"]
    assert any("degenerate" in w and "Hessian" in w for w in ref["warnings"])
    with pytest.raises(UserError, match="has one clip per source") as err:
        fit_crossed(load("one_clip_per_source.csv"), "valence")
    assert "'c000'" in str(err.value) and "'c001'" in str(err.value)
    assert "at least two clips of each source" in str(err.value)


def test_clip_column_holding_the_source_is_refused(reference):
    ref = reference["clip_is_source.csv"]
    assert any("degenerate" in w for w in ref["intercepts"]["warnings"])
    assert ref["correlated_slope"]["singular"]
    with pytest.raises(UserError, match="holds the source itself"):
        fit_crossed(load("clip_is_source.csv"), "valence")
    # fit_lmm refuses the same model by the general rule (group means fitted exactly)
    with pytest.raises(UserError, match="variance of stimulus_id cannot be estimated"):
        fit_lmm(load("clip_is_source.csv"), "valence", ["x"],
                [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id")])


def test_a_source_with_a_single_clip_is_refused():
    d = load("partly_crossed.csv")
    human = sorted(d.loc[d.source == "human", "stimulus_id"].unique())
    one = d[(d.source == "ai") | (d.stimulus_id == human[0])]
    with pytest.raises(UserError, match="at least two clips of each source") as err:
        fit_crossed(one, "valence")
    assert "1 human-made and 21 AI-generated" in str(err.value)
    assert human[0] in " ".join(p.message for p in err.value.problems)


def test_between_participant_source_falls_back_to_intercepts(reference):
    # lme4 fits the slope model to a boundary (singular) with a convergence warning
    ref = reference["between_participants.csv"]
    assert ref["correlated_slope"]["singular"] and ref["correlated_slope"]["warnings"]
    d = load("between_participants.csv")
    fit = fit_crossed(d, "valence")
    assert fit.model_used == "intercepts"
    assert "no participant rated both sources" in fit.messages[0]
    assert not any("singular" in m for m in fit.messages)  # no slope model was tried
    assert_matches(fit, ref["intercepts"])
    with pytest.raises(UserError, match="random slope of x by participant_id cannot be "
                                        "estimated"):
        fit_lmm(d, "valence", ["x"], [RandomTerm("participant_id", ("x",)),
                                       RandomTerm("stimulus_id")])


# --------------------------------------------------------------------------------------
# convergence diagnostics


def _H(eigs):
    """A (theta, sigma) Hessian whose profiled theta block has the given eigenvalues."""
    k = len(eigs)
    H = np.zeros((k + 1, k + 1))
    H[:k, :k] = np.diag(eigs)
    H[k, k] = 1.0
    return H


def test_diagnostics_follow_lme4s_checks():
    theta = np.array([0.5, 0.5])
    lower = np.zeros(2)
    ok = lmm._diagnostics(_H([4.0, 2.0]), np.array([1e-5, -1e-5]), theta, lower, False)
    assert not ok["failed"] and ok["messages"] == []
    assert ok["hessian_min_eigenvalue"] == pytest.approx(2.0)
    assert ok["hessian_condition"] == pytest.approx(2.0)
    assert ok["max_grad"] == pytest.approx(1e-5 / np.sqrt(2))
    neg = lmm._diagnostics(_H([4.0, -0.5]), np.zeros(2), theta, lower, False)
    assert neg["failed"] and "degenerate Hessian with 1 negative eigenvalue" in neg["messages"][0]
    flat = lmm._diagnostics(_H([4.0, 1e-9]), np.zeros(2), theta, lower, False)
    assert flat["failed"] and "numerically singular" in flat["messages"][0]
    grad = lmm._diagnostics(_H([1.0, 1.0]), np.array([0.01, 0.0]), theta, lower, False)
    assert grad["failed"] and "max|grad| = 0.01" in grad["messages"][0]
    big = lmm._diagnostics(_H([1e7, 1.0]), np.zeros(2), theta, lower, False)
    assert not big["failed"] and any("very large" in m for m in big["messages"])
    assert any("eigenvalue ratio" in m for m in big["messages"])
    # a singular fit: the Hessian at the boundary is not checked (as lme4)
    sing = lmm._diagnostics(_H([4.0, -0.5]), np.zeros(2), np.array([0.5, 0.0]), lower, True)
    assert not sing["failed"] and sing["messages"] == []


def test_a_fit_reports_its_diagnostics(reference):
    fit = fitted("partly_crossed.csv", reference["partly_crossed.csv"]["correlated_slope"])
    assert 0 <= fit.max_grad < lmm.GRAD_TOL
    assert fit.hessian_min_eigenvalue > lmm.HESS_TOL
    assert 1 <= fit.hessian_condition < 1 / lmm.HESS_TOL


def test_fit_crossed_fixed_drops_a_slope_that_never_varies_within_a_participant(reference):
    from analysis.stats import fit_crossed_fixed

    fit = fit_crossed_fixed(load("between_participants.csv"), "valence", ["x"])
    assert fit.model_used == "intercepts"
    assert "no participant has more than one value of x" in fit.messages[0]
    assert_matches(fit, reference["between_participants.csv"]["intercepts"])


def test_kept_participant_part_does_not_outlive_the_outcome():
    """solve keeps the part of an evaluation that depends on the participant factor only;
    with_y (Refitter: bootstrap, power) must not reuse the products with the old outcome."""
    d = load("lists.csv")
    random = [RandomTerm("participant_id", ("x",)), RandomTerm("stimulus_id")]
    cps, _ = _crossprods(d, random, solvers=("auto",))
    cp = cps["auto"]
    theta = np.array([0.6, 0.1, 0.2, 0.4])
    first = cp.solve(theta)
    y2 = d["valence"].to_numpy(float) + np.random.default_rng(3).normal(0, 1, len(d))
    other = cp.with_y(y2).solve(theta)
    d2 = d.assign(valence=y2)
    fresh = _crossprods(d2, random, solvers=("auto",))[0]["auto"].solve(theta)
    for u, v in zip(other, fresh):
        assert np.allclose(u, v, rtol=1e-12, atol=1e-12)
    # a step in the clip parameter only reuses the kept part and gives what a fresh one does
    step = theta + np.array([0, 0, 0, 0.05])
    kept = cp.solve(step)
    for u, v in zip(kept, _crossprods(d, random, solvers=("auto",))[0]["auto"].solve(step)):
        assert np.allclose(u, v, rtol=1e-12, atol=1e-12)
    assert not np.allclose(first[3], other[3])
