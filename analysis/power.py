"""Simulation-based power of the planned analyses: the source effect, the label-condition term
and the matched-pair test.

The design is the study's own: clips, pairs, counterbalancing lists, clips per participant and
label conditions come from the study file and its manifest (`design_from_study`), and the
participants are spread over the (list x label condition) cells by the study's assignment rule
(study.design.choose_assignment), as the app would assign them. Without a study file the
design is a balanced set of unpaired clips (`design_from_counts`).

Each simulated dataset follows the model the analyses fit, plus the label and the pairing:

    y = b x + g L + u0_p + u1_p x + w_c + v_pair(c) + e,    x = +0.5 human / -0.5 AI,

L the label a participant saw with the clip: +0.5 labelled human-made, -0.5 labelled
AI-generated, 0 without a label (condition 'true': L = x; 'swapped': L = -x; 'none': L = 0).
u0 ~ N(0, var_participant), u1 ~ N(0, var_slope) (independent), e ~ N(0, var_residual); a clip's
effect w_c + v_pair(c) has variance var_clip, of which the share pair_share is shared by the two
clips of a matched pair (v, the matching); unpaired clips get all of var_clip in w. Effects are
given as Westfall's d (analysis.stats.westfall_denominator): b = d_source * D and
g = d_label * D with D = sqrt(var_participant + 0.25 var_slope + var_clip + var_residual).

Every dataset is analysed as the real analysis does (two-sided tests at alpha):

* source: the primary model (lmm.fit_crossed, with its singular-fit rule), p of x;
* label (two or more label conditions): the source x label model of stats.label_effect (same
  rule), p of the contrast that measures g: believed_human_vs_ai when 'true' and 'swapped'
  are both in the design, else the source-by-label interaction of the labelled condition;
* pairs (matched pairs in the design): stats.pair_differences' pooled test, a t-test of the
  pairs' human-minus-AI differences on (pairs - 1) df.

Speed: the design's rows are the same in every dataset of one size, so each model's
cross-products and clip-block structure are built once (lmm.Refitter) and every further
dataset costs one optimisation (started from the true values) plus the Satterthwaite df
(its Hessian with 2 Richardson steps instead of 4: RICHARDSON); a singular fit is simplified
before its df are computed; datasets are shared among worker processes.
Power is the share of p < alpha; a dataset whose model cannot be fitted counts as not
significant (n_failed), so power is never overstated. The simulation error is given as a
Wilson interval; with n simulations its standard error is at most 0.5 / sqrt(n).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from analysis.lmm import RandomTerm, Refitter, fit_lmm
from analysis.progress import ProgressBar
from study.config import check_writable
from study.design import Clip, DesignSpec, build_lists, choose_assignment, describe_design
from study.errors import Problem, UserError

__all__ = ["PowerDesign", "design_from_study", "design_from_counts", "simulate_power", "simulate_dataset",
           "variance_from_pilot", "cli_power", "POWER_COLUMNS", "TERMS"]

POWER_COLUMNS = ["term", "n_participants", "power", "ci_low", "ci_high", "n_sims", "effect_d", "effect_raw",
                 "n_failed"]
TERMS = {
    "source": "human minus AI (primary model, coefficient of source)",
    "label": "label effect: the same clips labelled human-made minus labelled AI-generated",
    "pairs": "matched pairs: pooled human-minus-AI difference within pairs (t-test over pairs)",
}
SLOPE_WEIGHT = 0.25  # (source code)^2: see analysis.stats.westfall_denominator
# Richardson steps of the Hessian behind each simulated dataset's Satterthwaite df: 2 instead
# of the analysis' 4 halves that cost; df moved by about 1e-5 relative, p by less
# (tests/test_power.py checks the p-values against the analysis' own).
RICHARDSON = 2


# --------------------------------------------------------------------------------------
# the design


@dataclass
class PowerDesign:
    """Clips, counterbalancing lists and label conditions of a planned study."""

    clips: list[Clip]
    spec: DesignSpec
    origin: str
    lists: list[tuple[str, ...]] = field(init=False)
    _rows: dict = field(init=False, default_factory=dict, repr=False)
    plan: dict = field(init=False, default_factory=dict)  # the study's alpha and primary outcome

    def __post_init__(self):
        self.lists = build_lists(self.spec, self.clips)
        self.index = {c.id: i for i, c in enumerate(self.clips)}
        self.x_clip = np.array([0.5 if c.source == "human" else -0.5 for c in self.clips])
        pairs = sorted({c.pair_id for c in self.clips if c.pair_id})
        self.pair_of = np.array([pairs.index(c.pair_id) if c.pair_id else -1 for c in self.clips])
        self.n_pairs = len(pairs)

    @property
    def label_conditions(self) -> tuple[str, ...]:
        return tuple(self.spec.label_conditions)

    def terms(self) -> list[str]:
        """The tests this design allows, of TERMS."""
        out = ["source"]
        if len(self.label_conditions) > 1:
            out.append("label")
        if self.spec.pairs != "ignore" and self.n_pairs >= 2:
            out.append("pairs")
        return out

    def describe(self) -> str:
        info = describe_design(self.spec, self.clips)
        n_h = int((self.x_clip > 0).sum())
        text = (f"{len(self.clips)} clips ({n_h} human-made, {len(self.clips) - n_h} AI-generated), "
                f"{info['lists']} list{'s' if info['lists'] != 1 else ''} of {info['clips_per_list']} clips per "
                f"participant, label conditions {', '.join(self.label_conditions)}")
        if self.n_pairs:
            text += f", {self.n_pairs} matched pairs (pairs: {self.spec.pairs})"
        return text + f"; participants spread over list x condition cells as the app assigns them ({self.origin})"

    def rows(self, n: int) -> dict:
        """The rows of a study with n participants: participant, clip and label-condition
        indices, x and the label code L (cached per n)."""
        if n in self._rows:
            return self._rows[n]
        counts: dict = {}
        part, clip, cond = [], [], []
        for i in range(n):
            cell = choose_assignment(counts, len(self.lists), self.spec)
            counts[cell] = counts.get(cell, 0) + 1
            ids = self.lists[cell[0]]
            part.extend([i] * len(ids))
            clip.extend(self.index[c] for c in ids)
            cond.extend([cell[1]] * len(ids))
        part, clip, cond = np.array(part), np.array(clip), np.array(cond)
        x = self.x_clip[clip]
        label = np.where(cond == "true", x, np.where(cond == "swapped", -x, 0.0))
        out = {"participant": part, "clip": clip, "condition": cond, "x": x, "label": label, "n": n}
        self._rows[n] = out
        return out


def _clips_from_manifest(stimuli, practice: str | None) -> list[Clip]:
    return [Clip(id=s.id, source=s.source, pair_id=getattr(s, "pair_id", None) or None)
            for s in stimuli if s.id != practice]


def design_from_study(path: str | Path) -> PowerDesign:
    """The design of a study file: its manifest's clips (not the practice clip), pairs, lists
    (design.clips_per_participant, design.pairs) and label conditions."""
    from study.protocol import load_study
    from study.stimuli import load_manifest

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--study: {path} is not a file; give the study file (YAML) of the pilot",
                        [Problem("--study", f"no such file: {path}")])
    study = load_study(path)
    stimuli, problems = load_manifest(study.manifest_path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise UserError(f"the manifest of {path} has problems", errors)
    d = study.design
    spec = DesignSpec(clips_per_participant=d.clips_per_participant, ordering=d.ordering, seed=d.seed,
                      pairs=d.pairs, label_conditions=tuple(d.label_conditions))
    design = PowerDesign(_clips_from_manifest(stimuli, study.stimuli.practice), spec, f"study file {path}")
    plan = study.analysis
    design.plan = {"alpha": getattr(plan, "alpha", None), "primary_outcome": getattr(plan, "primary_outcome", None)}
    return design


def design_from_counts(clips_per_source: int, clips_per_participant: int | None = None,
                       label_conditions=("none",), seed: int = 1) -> PowerDesign:
    """A design of unpaired clips: clips_per_source of each source, each participant rating
    clips_per_participant of them (all when None), half of each source."""
    problems = []
    if isinstance(clips_per_source, bool) or int(clips_per_source) != clips_per_source or clips_per_source < 2:
        problems.append(Problem("clips_per_source", "must be a whole number of at least 2"))
    elif clips_per_participant is not None:
        if clips_per_participant < 2 or clips_per_participant % 2:
            problems.append(Problem("clips_per_participant", "must be an even number of at least 2 "
                                    "(half human, half AI)"))
        elif clips_per_participant > 2 * clips_per_source:
            problems.append(Problem("clips_per_participant", f"{clips_per_participant} is more than the "
                                    f"{2 * int(clips_per_source)} clips of the design (clips per source x 2)"))
    if problems:
        raise UserError("the planned design is not possible", problems)
    k = int(clips_per_source)
    clips = [Clip(f"h{i:03d}", "human") for i in range(k)] + [Clip(f"a{i:03d}", "ai") for i in range(k)]
    per = None if clips_per_participant is None or clips_per_participant >= 2 * k else int(clips_per_participant)
    spec = DesignSpec(clips_per_participant=per, ordering="random", seed=seed, pairs="ignore",
                      label_conditions=tuple(label_conditions))
    return PowerDesign(clips, spec, "given on the command line")


# --------------------------------------------------------------------------------------
# simulation


def _denominator(v: dict) -> float:
    return float(np.sqrt(v["var_participant"] + SLOPE_WEIGHT * v["var_slope"] + v["var_clip"]
                         + v["var_residual"]))


def simulate_dataset(rng: np.random.Generator, rows: dict, design: PowerDesign, effect_raw: float,
                     label_raw: float, var_participant: float, var_slope: float, var_clip: float,
                     var_residual: float, pair_share: float = 0.0) -> np.ndarray:
    """One simulated outcome vector on `rows` (PowerDesign.rows), following the module's model."""
    n, p, c = rows["n"], rows["participant"], rows["clip"]
    u0 = rng.normal(0, np.sqrt(var_participant), n)
    u1 = rng.normal(0, np.sqrt(var_slope), n)
    paired = design.pair_of >= 0
    w = rng.normal(0, 1, len(design.clips)) * np.sqrt(np.where(paired, var_clip * (1 - pair_share), var_clip))
    v = rng.normal(0, np.sqrt(var_clip * pair_share), max(design.n_pairs, 1))
    clip_effect = w + np.where(paired, v[np.maximum(design.pair_of, 0)], 0.0)
    x = rows["x"]
    return (effect_raw * x + label_raw * rows["label"] + u0[p] + u1[p] * x + clip_effect[c]
            + rng.normal(0, np.sqrt(var_residual), len(p)))


class _Cascade:
    """The singular-fit rule of lmm.fit_crossed (and stats.fit_crossed_fixed) on one fixed set
    of rows: try the models in order, keep the first that converges and is not singular, the
    intercepts model in any case. Each model's set-up is built on first use and reused."""

    def __init__(self, frame: pd.DataFrame, fixed: list[str], specs: list[tuple[str, list[RandomTerm]]],
                 starts: dict):
        self.frame, self.fixed, self.specs, self.starts = frame, fixed, specs, starts
        self.refit: dict[str, Refitter] = {}

    def fit(self, y: np.ndarray):
        for name, terms in self.specs:
            last = name == "intercepts"
            r = self.refit.get(name)
            if r is None:
                fit = fit_lmm(self.frame.assign(_y=y), "_y", self.fixed, terms)
                self.refit[name] = Refitter(fit)
            else:
                # a singular fit is simplified at once, without its df (never used)
                fit = r.fit(y, start=self.starts.get(name), simplify_if_singular=not last,
                            richardson=RICHARDSON)
            if last or (fit is not None and fit.converged and not fit.singular):
                break
        return fit


def _specs(slope: bool) -> list[tuple[str, list[RandomTerm]]]:
    out = [("correlated_slope", [RandomTerm("participant_id", ("x",), True), RandomTerm("stimulus_id")]),
           ("uncorrelated_slope", [RandomTerm("participant_id", ("x",), False), RandomTerm("stimulus_id")]),
           ("intercepts", [RandomTerm("participant_id"), RandomTerm("stimulus_id")])]
    return out if slope else out[2:]


def _starts(v: dict) -> dict:
    """theta of the generating model for each of the three models (optimiser start values)."""
    s = np.sqrt(v["var_residual"])
    a = max(np.sqrt(v["var_participant"]) / s, 0.05)
    b = max(np.sqrt(v["var_slope"]) / s, 0.05)
    c = max(np.sqrt(v["var_clip"]) / s, 0.05)
    return {"correlated_slope": np.array([a, 0.0, b, c]), "uncorrelated_slope": np.array([a, b, c]),
            "intercepts": np.array([a, c])}


class _Analyses:
    """The analyses of one design size, set up once and run on each simulated outcome."""

    def __init__(self, design: PowerDesign, rows: dict, terms: list[str], variances: dict):
        self.design, self.rows, self.terms = design, rows, terms
        frame = pd.DataFrame({"participant_id": rows["participant"], "stimulus_id": rows["clip"], "x": rows["x"]})
        within = bool((frame.groupby("participant_id")["x"].nunique() > 1).any())
        starts = _starts(variances)
        self.primary = _Cascade(frame, ["x"], _specs(within), starts)
        if "label" in terms:
            present = [c for c in ("none", "true", "swapped") if c in set(rows["condition"])]
            ref, others = present[0], present[1:]
            fixed = ["x"]
            for c in others:
                frame[f"lab_{c}"] = (rows["condition"] == c).astype(float)
                fixed.append(f"lab_{c}")
            for c in others:
                frame[f"x_lab_{c}"] = frame["x"] * frame[f"lab_{c}"]
                fixed.append(f"x_lab_{c}")
            names = ["(Intercept)", *fixed]

            def src(c):
                v = np.zeros(len(names))
                v[names.index("x")] = 1.0
                if c != ref:
                    v[names.index(f"x_lab_{c}")] = 1.0
                return v

            if "true" in present and "swapped" in present:
                self.label_L = (src("true") - src("swapped")) / 2  # stats.label_effect's believed_human_vs_ai
            else:  # one labelled condition against 'none': its source-by-label interaction (+-g)
                lab = others[0]
                self.label_L = src(lab) - src(ref)
            self.label = _Cascade(frame, fixed, _specs(within), {k: v for k, v in starts.items()})
        if "pairs" in terms:
            self._pairs_setup()

    def _pairs_setup(self):
        r, d = self.rows, self.design
        pair = d.pair_of[r["clip"]]
        keep = pair >= 0
        self.pp, self.pc, self.ppart, self.px = pair[keep], r["clip"][keep], r["participant"][keep], r["x"][keep]
        self.pkeep = keep
        n_pairs, n = d.n_pairs, r["n"]
        # per (participant, pair): does the participant have a rating of each source?
        key = self.ppart * n_pairs + self.pp
        self.key = key
        self.size = n * n_pairs
        h = np.bincount(key, self.px > 0, self.size)
        a = np.bincount(key, self.px < 0, self.size)
        both = (h > 0) & (a > 0)
        self.both = both
        self.within_pairs = np.bincount(np.arange(self.size) % n_pairs, both, n_pairs) >= 2

    def _pairs_p(self, y: np.ndarray) -> float:
        """stats.pair_differences' pooled test on y, vectorised (checked against it in the tests)."""
        yk = y[self.pkeep]
        n_pairs = self.design.n_pairs
        hs = np.bincount(self.key, np.where(self.px > 0, yk, 0.0), self.size)
        hn = np.bincount(self.key, self.px > 0, self.size)
        as_ = np.bincount(self.key, np.where(self.px < 0, yk, 0.0), self.size)
        an = np.bincount(self.key, self.px < 0, self.size)
        pair_of_key = np.arange(self.size) % n_pairs
        diff_pp = np.where(self.both, hs / np.maximum(hn, 1) - as_ / np.maximum(an, 1), 0.0)
        within = np.bincount(pair_of_key, diff_pp, n_pairs) / np.maximum(np.bincount(pair_of_key, self.both, n_pairs), 1)
        # between-participant basis: the two clip means over every rating of the pair
        hsum = np.bincount(self.pp, np.where(self.px > 0, yk, 0.0), n_pairs)
        hcnt = np.bincount(self.pp, self.px > 0, n_pairs)
        asum = np.bincount(self.pp, np.where(self.px < 0, yk, 0.0), n_pairs)
        acnt = np.bincount(self.pp, self.px < 0, n_pairs)
        between = hsum / np.maximum(hcnt, 1) - asum / np.maximum(acnt, 1)
        ok = (hcnt > 0) & (acnt > 0)
        diffs = np.where(self.within_pairs, within, between)[ok]
        if len(diffs) < 2:
            return float("nan")
        sd = diffs.std(ddof=1)
        if sd == 0:
            return float("nan")
        t = diffs.mean() / (sd / np.sqrt(len(diffs)))
        return float(2 * sps.t.sf(abs(t), len(diffs) - 1))

    def p_values(self, y: np.ndarray) -> dict[str, float]:
        out = {}
        for term in self.terms:
            try:
                if term == "source":
                    out[term] = float(self.primary.fit(y).fixed.set_index("term").at["x", "p"])
                elif term == "label":
                    out[term] = float(self.label.fit(y).contrast(self.label_L, "label")["p"])
                else:
                    out[term] = self._pairs_p(y)
            except (UserError, np.linalg.LinAlgError, ValueError, FloatingPointError):
                out[term] = float("nan")
        return out


# The largest source or label effect (Westfall's d) a simulation takes: power is 1 long before,
# and a d like 1e308 times the denominator overflows into infinite ratings.
MAX_D = 10


def _check(n_participants, variances, n_sims, alpha, pair_share, effects=None):
    problems = []
    for name, d in (effects or {}).items():
        try:
            ok = not isinstance(d, bool) and bool(abs(float(d)) <= MAX_D)  # False for nan
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(Problem(name, f"must be a number between -{MAX_D} and {MAX_D} (Westfall's d); got {d!r}"))
    if not n_participants or any(int(n) != n or n < 2 for n in n_participants):
        problems.append(Problem("participants", "give whole numbers of at least 2, e.g. 20,40,80"))
    for name, v in variances.items():
        if not np.isfinite(v) or v < 0:
            problems.append(Problem(name, f"a variance must be zero or positive; got {v!r}"))
    if variances.get("var_residual", 1) <= 0:
        problems.append(Problem("var_residual", "must be positive"))
    if isinstance(n_sims, bool) or int(n_sims) != n_sims or n_sims < 1:
        problems.append(Problem("simulations", "must be a whole number of at least 1"))
    if not 0 < alpha < 1:
        problems.append(Problem("alpha", "must lie between 0 and 1"))
    if not 0 <= pair_share < 1:
        problems.append(Problem("pair_share", f"must lie in [0, 1); got {pair_share!r}"))
    if problems:
        raise UserError("the power simulation cannot run with these settings", problems)


def _run_chunk(*, design, n, sims, terms, variances, effect_raw, label_raw, pair_share, alpha, seed, tick=None):
    """Hits and failures per term over the datasets `sims` of size n (a worker's share)."""
    rows = design.rows(n)
    hits, failed = dict.fromkeys(terms, 0), dict.fromkeys(terms, 0)
    analyses = None
    for s in sims:
        rng = np.random.default_rng([seed, n, s])
        y = simulate_dataset(rng, rows, design, effect_raw, label_raw, pair_share=pair_share, **variances)
        if analyses is None:
            try:
                analyses = _Analyses(design, rows, terms, variances)
            except UserError as exc:
                raise UserError(f"the analyses cannot be run on this design with {n} participants: {exc}") from None
        for t, p in analyses.p_values(y).items():
            if np.isfinite(p):
                hits[t] += bool(p < alpha)
            else:
                failed[t] += 1
        if tick is not None:
            tick()
    return hits, failed


def simulate_power(design: PowerDesign, n_participants: list[int], effect_d: float, *, var_participant: float,
                   var_slope: float, var_clip: float, var_residual: float, label_d: float = 0.0,
                   pair_share: float = 0.0, n_sims: int = 100, alpha: float = 0.05, seed: int = 1,
                   terms: list[str] | None = None, jobs: int = 1,
                   progress: Callable[[int, int, int], None] | None = None) -> pd.DataFrame:
    """Power of each test of `terms` (default: every test the design allows, PowerDesign.terms)
    against the number of participants; one row per (term, N), columns POWER_COLUMNS.

    effect_d: the source effect, label_d: the label effect, both as Westfall's d.
    progress(done, total, n_participants) is called after each simulated dataset.
    Seeded: dataset s of size N is drawn from default_rng([seed, N, s]), so the same
    arguments give the same table, whatever `jobs` (worker processes) is.
    """
    variances = dict(var_participant=var_participant, var_slope=var_slope, var_clip=var_clip,
                     var_residual=var_residual)
    n_participants = [int(n) for n in n_participants]
    _check(n_participants, variances, n_sims, alpha, pair_share, {"effect": effect_d, "label_effect": label_d})
    allowed = design.terms()
    terms = allowed if terms is None else list(terms)
    bad = [t for t in terms if t not in allowed]
    if bad:
        raise UserError("the design does not allow these tests",
                        [Problem(f"term {t}", "needs two or more label conditions" if t == "label"
                                 else "needs matched pairs (pair_id) shown to participants" if t == "pairs"
                                 else f"unknown; the tests are {', '.join(TERMS)}") for t in bad])
    den = _denominator(variances)
    effect_raw, label_raw = float(effect_d) * den, float(label_d) * den
    total, done = len(n_participants) * n_sims, 0
    hits = {(t, n): 0 for t in terms for n in n_participants}
    failed = dict.fromkeys(hits, 0)
    common = dict(design=design, terms=terms, variances=variances, effect_raw=effect_raw, label_raw=label_raw,
                  pair_share=pair_share, alpha=alpha, seed=int(seed))
    # chunks of datasets, each its own set-up (one fit per model) and seeds; the same table
    # whatever the number of jobs
    size = max(1, min(25, -(-n_sims // max(1, 2 * jobs))))
    chunks = [(n, range(a, min(a + size, n_sims))) for n in n_participants for a in range(0, n_sims, size)]

    def add(n, result):
        nonlocal done
        h, f = result
        for t in terms:
            hits[(t, n)] += h[t]
            failed[(t, n)] += f[t]

    if jobs <= 1 or len(chunks) == 1:
        for n, sims in chunks:
            def tick(n=n):
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, total, n)
            add(n, _run_chunk(n=n, sims=sims, tick=tick, **common))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(chunks)), mp_context=ctx) as pool:
            futures = {pool.submit(_run_chunk, n=n, sims=sims, **common): (n, len(sims)) for n, sims in chunks}
            for fut in cf.as_completed(futures):
                n, k = futures[fut]
                add(n, fut.result())
                done += k
                if progress is not None:
                    progress(done, total, n)
    out = []
    for t in terms:
        for n in n_participants:
            h = hits[(t, n)]
            lo, hi = proportion_confint(h, n_sims, alpha=0.05, method="wilson")
            out.append({"term": t, "n_participants": n, "power": h / n_sims, "ci_low": float(lo),
                        "ci_high": float(hi), "n_sims": n_sims,
                        "effect_d": float(label_d if t == "label" else effect_d),
                        "effect_raw": label_raw if t == "label" else effect_raw, "n_failed": failed[(t, n)]})
    return pd.DataFrame(out, columns=POWER_COLUMNS)


# --------------------------------------------------------------------------------------
# the pilot


def variance_from_pilot(trials: pd.DataFrame, dv: str) -> dict:
    """Variance components of the primary model fitted to pilot data (lmm.fit_crossed).

    Returns var_participant, var_slope (0 when the singular-fit rule dropped the slope),
    var_clip, var_residual, model_used, n_participants, n_stimuli, pair_share (the share of
    the clip variance shared within matched pairs, from dv ~ x + (1 | participant) +
    (1 | pair) + (1 | clip); 0 without pairs or when that model cannot be fitted) and
    d_observed (the pilot's own Westfall d, for information only: pilot effect sizes are too
    noisy to plan on).
    """
    from analysis.lmm import fit_crossed
    from analysis.stats import westfall_denominator

    fit = fit_crossed(trials, dv)
    r = fit.random
    base = r["group"].astype(str).str.split(".").str[0]
    var_rows = r["var2"].isna()

    def pick(table, mask) -> float:
        v = table.loc[mask & table["var2"].isna(), "variance_or_cov"]
        return float(v.sum()) if len(v) else 0.0

    intercept = r["var1"] == "(Intercept)"
    out = {
        "var_participant": pick(r, (base == "participant_id") & intercept & var_rows),
        "var_slope": pick(r, (base == "participant_id") & ~intercept & r["var1"].notna()),
        "var_clip": pick(r, (base == "stimulus_id") & intercept),
        "var_residual": pick(r, r["group"] == "Residual"),
        "model_used": fit.model_used,
        "n_participants": fit.ngroups.get("participant_id"),
        "n_stimuli": fit.ngroups.get("stimulus_id"),
        "pair_share": 0.0,
    }
    den = westfall_denominator(fit)
    est = float(fit.fixed.set_index("term").at["x", "estimate"])
    out["d_observed"] = est / den if den > 0 else float("nan")
    if "pair_id" in trials.columns and trials["pair_id"].nunique() >= 2:
        d = trials.dropna(subset=[dv, "source", "pair_id"]).copy()
        d["x"] = np.where(d["source"].astype(str).str.strip().str.lower() == "human", 0.5, -0.5)
        try:
            pf = fit_lmm(d, dv, ["x"], [RandomTerm("participant_id"), RandomTerm("pair_id"),
                                        RandomTerm("stimulus_id")])
            vp = pick(pf.random, pf.random["group"] == "pair_id")
            vc = pick(pf.random, pf.random["group"] == "stimulus_id")
            out["pair_share"] = vp / (vp + vc) if vp + vc > 0 else 0.0
        except (UserError, np.linalg.LinAlgError, ValueError):
            pass
    return out


# --------------------------------------------------------------------------------------
# the CLI


class _Bar(ProgressBar):
    """progress(done, total, n) of simulate_power on stderr."""

    def __init__(self, stream=None, width: int = 30):
        super().__init__("power", "datasets", stream, width)

    def __call__(self, done: int, total: int, n: int) -> None:
        super().__call__(done, total, f"N = {n}")


def _parse_participants(text) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"--participants must be comma-separated whole numbers, e.g. 20,40,80; got {text!r}") from None
    if not values:
        raise UserError("--participants is empty; give e.g. 20,40,80")
    return values


def cli_power(args) -> int:
    """`kuleshov power`: power curves for the planned design, printed and optionally saved."""
    variances = {k: float(getattr(args, k)) for k in ("var_participant", "var_slope", "var_clip", "var_residual")}
    jobs = getattr(args, "jobs", 1)
    jobs = 1 if jobs is None else int(jobs)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (worker processes); got {jobs}")
    if getattr(args, "out", None):
        check_writable(args.out, "power curve")
    study_file = getattr(args, "study", None)
    per, cps = getattr(args, "clips_per_participant", None), getattr(args, "clips_per_source", None)
    alpha = getattr(args, "alpha", None)
    outcome = getattr(args, "outcome", None)
    if study_file:
        if cps is not None or per is not None:
            raise UserError("--clips-per-source and --clips-per-participant describe a design without a study "
                            "file; with --study the design comes from the study file (its design block and manifest)")
        design = design_from_study(study_file)
        if alpha is None and design.plan.get("alpha"):
            alpha = float(design.plan["alpha"])
        if outcome is None and design.plan.get("primary_outcome"):
            outcome = design.plan["primary_outcome"]
    else:
        design = design_from_counts(16 if cps is None else cps, per)
    alpha = 0.05 if alpha is None else float(alpha)
    outcome = outcome or "valence"
    pair_share = getattr(args, "pair_share", None)
    source = "given on the command line"
    if getattr(args, "pilot", None):
        from analysis.load import load_trials
        from analysis.results import csv_options

        data = load_trials(args.pilot, **csv_options(args))
        if outcome not in data.trials.columns:
            raise UserError(f"the pilot data have no outcome column {outcome!r}",
                            [Problem("--outcome", "columns are: " + ", ".join(map(str, data.trials.columns)))])
        pilot = variance_from_pilot(data.trials, outcome)
        variances = {k: pilot[k] for k in variances}
        if pair_share is None:
            pair_share = pilot["pair_share"]
        source = (f"from the pilot {args.pilot} ({outcome}, {pilot['n_participants']} participants x "
                  f"{pilot['n_stimuli']} clips, model {pilot['model_used']})")
    pair_share = 0.0 if pair_share is None else float(pair_share)
    n_sims = int(args.simulations)
    terms = design.terms()
    print("variance components " + source + ": "
          + ", ".join(f"{k.removeprefix('var_')} {v:.3g}" for k, v in variances.items())
          + (f"; pair share of the clip variance {pair_share:.2f}" if "pairs" in terms else ""))
    print("design: " + design.describe())
    label_d = float(getattr(args, "label_effect", 0.0) or 0.0)
    print(f"effects (Westfall d): source {args.effect:g}" + (f", label {label_d:g}" if "label" in terms else "")
          + f"; tests: {', '.join(terms)}; alpha {alpha:g} (two-sided); {n_sims} simulations per point "
          f"(simulation standard error at most {0.5 / np.sqrt(n_sims):.3f}); seed {args.seed}")
    table = simulate_power(design, _parse_participants(args.participants), args.effect, label_d=label_d,
                           pair_share=pair_share, n_sims=n_sims, alpha=alpha, seed=args.seed, jobs=jobs,
                           progress=_Bar(), **variances)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
        try:  # the chart beside the CSV is a convenience; the CSV is the result
            from analysis.charts import power_curve

            html = str(args.out).rsplit(".", 1)[0] + ".html"
            power_curve(table).write_html(html, include_plotlyjs=True, full_html=True)
            print(f"wrote {html}")
        except ImportError:
            pass
    return 0
