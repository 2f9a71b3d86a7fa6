"""Tests and models on the trial table; every function returns a tidy DataFrame.

Source is coded x = +0.5 (human) / -0.5 (AI) throughout, so every "estimate" of a source
effect is the human-minus-AI difference in the outcome's own units.

The primary analysis is the crossed mixed model of `analysis.lmm.fit_crossed`
(outcome ~ x + (1 + x | participant) + (1 | stimulus), REML, Satterthwaite df, with the
singular-fit rule documented there). The naive analyses are kept only to show how far
they are from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.lmm import LmmFit, RandomTerm, fit_crossed, fit_lmm, source_code
from study.errors import Problem, UserError

__all__ = [
    "primary_test", "naive_tests", "pair_differences", "label_effect", "describe_by_source",
    "westfall_denominator", "denominator_from_components", "tost", "fit_crossed_fixed",
]

HYPOTHESES = ("two_sided", "human_greater", "ai_greater")
PRIMARY_COLUMNS = [
    "outcome", "model_used", "formula", "n_participants", "n_stimuli", "nobs", "estimate", "se",
    "df", "t", "p", "p_sided", "ci_low", "ci_high", "d", "d_ci_low", "d_ci_high", "d_ci_method",
    "n_boot", "p_holm", "p_bh", "tost_p", "equivalent", "sesoi_raw", "singular", "messages",
]
# d_ci_method: how d's CI was made (see primary_test)
D_CI_BOOTSTRAP = "parametric_bootstrap"
D_CI_FIXED = "fixed_denominator"
CONTRAST_COLUMNS = ["contrast", "estimate", "se", "df", "t", "p", "ci_low", "ci_high", "description"]
PAIR_COLUMNS = ["pair_id", "human_id", "ai_id", "n", "basis", "human_mean", "ai_mean", "diff",
                "se", "ci_low", "ci_high"]
DESCRIBE_COLUMNS = ["outcome", "source", "n", "mean", "sd", "se", "ci_low", "ci_high"]


# --------------------------------------------------------------------------------------
# input checks


def _require(trials: pd.DataFrame, columns, what: str) -> None:
    if not isinstance(trials, pd.DataFrame):
        raise UserError(f"{what} needs the trial table (a pandas DataFrame)")
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise UserError(
            f"{what}: columns missing from the trial table",
            [Problem(f"column {c}", "not found; columns are: " + ", ".join(map(str, trials.columns)))
             for c in missing],
        )


def _numeric_outcome(trials: pd.DataFrame, dv: str) -> pd.Series:
    s = pd.to_numeric(trials[dv], errors="coerce")
    bad = trials[dv].notna() & s.isna()
    if bad.any():
        row = trials.index[bad.to_numpy()][0]
        raise UserError(f"outcome {dv} must be numeric",
                        [Problem(f"column {dv}, row {row}", f"value {trials.at[row, dv]!r} is not a number")])
    return s.astype(float)


def _with_x(trials: pd.DataFrame, dv: str) -> pd.DataFrame:
    """Rows with an outcome and a source, plus x and the numeric outcome."""
    d = trials.copy()
    d[dv] = _numeric_outcome(d, dv)
    d = d[d[dv].notna() & d["source"].notna()].copy()
    d["x"] = source_code(d["source"])
    return d


def _require_variation(values: pd.Series, dv: str, n_rows: int) -> None:
    """A plain error when the outcome has nothing to compare: no usable rating at all (e.g. the
    wrong rows of a long export, whose outcome cells are empty) or one value throughout."""
    if values.notna().sum() == 0:
        raise UserError(f"outcome {dv} has no ratings to analyse: none of the {n_rows} rows holds a value of "
                        f"{dv} with its source, participant and clip")
    if values.nunique() < 2:
        raise UserError(f"outcome {dv} has the same value in every rating; nothing to test")


def _complete_rows(trials: pd.DataFrame, dv: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows a crossed model can use, and one message counting every row left out against
    the whole table (the model's own count would start after the rows dropped here)."""
    d = trials.copy()
    d[dv] = _numeric_outcome(d, dv)
    no_outcome = ~np.isfinite(d[dv].to_numpy(float, na_value=np.nan))
    no_source = d["source"].isna().to_numpy()
    no_group = d[["participant_id", "stimulus_id"]].isna().any(axis=1).to_numpy()
    keep = ~(no_outcome | no_source | no_group)
    messages = []
    if not keep.all():
        why = [f"{label} missing in {int(n)}" for label, n in ((dv, no_outcome.sum()), ("source", no_source.sum()),
                                                               ("participant_id or stimulus_id", no_group.sum()))
               if n]
        messages.append(f"{int((~keep).sum())} of {len(d)} rows dropped for missing values ({', '.join(why)})")
    d = d[keep].copy()
    d["x"] = source_code(d["source"])
    return d, messages


# --------------------------------------------------------------------------------------
# effect size and equivalence


# |x| of the source codes (lmm.source_code: +0.5 human, -0.5 AI)
CODE = 0.5


def denominator_from_components(random: pd.DataFrame, slope: str = "x", code: float = CODE) -> float:
    """Westfall's denominator from a variance-component table (LmmFit.random's columns).

    Intercept and residual variances enter as they are; the variance of a random slope of
    the source code (var1 == slope, any group) enters multiplied by code**2. Covariances
    (var2 set) are left out. See westfall_denominator for why.
    """
    var_rows = random[random["var2"].isna()]
    v = var_rows["variance_or_cov"].astype(float).clip(lower=0).to_numpy()
    w = np.where(var_rows["var1"].astype("string").fillna("") == slope, code**2, 1.0)
    return float(np.sqrt(np.sum(w * v)))


def westfall_denominator(fit: LmmFit, code: float = CODE) -> float:
    """The standardiser of Westfall's d: the SD of one response within one source.

    Westfall, Kenny and Judd (2014, "Statistical power and optimal design in experiments in
    which samples of participants respond to samples of stimuli", J. Exp. Psychol. Gen.
    143(5), 2020-2045) define d as the mean difference over the square root of the summed
    variance components of their model, whose participant-by-condition and
    stimulus-by-condition components are the variances of the terms as they enter a
    response. With source coded x = +-c (here c = 0.5), a participant's random slope u1
    enters a response as c * u1, so it contributes c^2 var(u1):

        d = (mu_human - mu_AI) / sqrt(var_p + c^2 var_p_slope + var_clip
                                      [+ c^2 var_clip_slope] + var_residual)

    which for +-0.5 codes is var_p + 0.25 var_p_slope + var_clip + var_residual: the
    variance of a response within one source, pooled over the two. The intercept-slope
    covariance adds +2c cov to one source and -2c cov to the other, so it cancels in the
    pooled variance and is left out. (With +-1 codes, c = 1 and the slope variance of that
    coding, a quarter of the +-0.5 one, enters unweighted: d does not depend on the coding.)
    A by-clip slope (source varying within clips) is weighted the same way. When the
    singular-fit rule dropped a slope, its variance is absent (zero) in the model used.
    """
    return denominator_from_components(fit.random, code=code)


def tost(estimate: float, se: float, df: float, bound: float) -> float:
    """p of the two one-sided tests of |effect| < bound (Lakens 2017), on df.

    H0a: effect <= -bound, H0b: effect >= +bound; equivalence is claimed when the larger
    of the two one-sided p values is below alpha (same as the 1 - 2 alpha CI lying
    inside +-bound).
    """
    if not (np.isfinite(estimate) and np.isfinite(se) and se > 0 and bound > 0):
        return float("nan")
    p_low = stats.t.sf((estimate + bound) / se, df)
    p_high = stats.t.cdf((estimate - bound) / se, df)
    return float(max(p_low, p_high))


def _sided_p(t: float, df: float, hypothesis: str) -> float:
    if hypothesis == "human_greater":
        return float(stats.t.sf(t, df))
    if hypothesis == "ai_greater":
        return float(stats.t.cdf(t, df))
    return float(2 * stats.t.sf(abs(t), df))


_SIDED_LABEL = {
    "two_sided": "two-sided",
    "human_greater": "one-sided (human > AI)",
    "ai_greater": "one-sided (AI > human)",
}


def _adjust(p: pd.Series, method: str) -> pd.Series:
    out = pd.Series(np.nan, index=p.index, dtype=float)
    ok = p.notna()
    if ok.any():
        out[ok] = multipletests(p[ok].to_numpy(float), method=method)[1]
    return out


def d_statistic(fixed: pd.Series, random: pd.DataFrame) -> float:
    """Westfall's d of one fit: the x coefficient over denominator_from_components."""
    den = denominator_from_components(random)
    return float(fixed["x"] / den) if den > 0 else float("nan")


def primary_test(trials: pd.DataFrame, outcomes: list[str], *, alpha: float = 0.05,
                 sesoi: float = 0.2, hypothesis: str = "two_sided", bootstrap: int = 0,
                 bootstrap_outcomes=None, seed: int = 1, progress=None) -> pd.DataFrame:
    """The planned crossed mixed model for each outcome, with d, corrections and TOST.

    estimate: human minus AI (coefficient of x). p follows `hypothesis` (say which in
    `p_sided`); ci_low/ci_high are the two-sided (1 - alpha) interval on Satterthwaite df.
    d = estimate / westfall_denominator(fit) (slope variances weighted by 0.25: see there).
    d's (1 - alpha) CI, d_ci_low/d_ci_high, is made in one of two ways, named in d_ci_method:
    'parametric_bootstrap' (bootstrap >= 2 samples, for the outcomes in bootstrap_outcomes,
    all when None): the percentile interval of d over `bootstrap` samples simulated from the
    fitted model and refitted (analysis.bootstrap), which includes the uncertainty of the
    variance components; n_boot says how many samples; seeded by [seed, outcome number].
    'fixed_denominator' (otherwise): the CI limits of the difference divided by the
    estimated denominator, which treats the denominator as known and so is too narrow
    when the variance components are poorly estimated (few clips or participants).
    progress(done, total, outcome) is called after each bootstrap sample.
    p_holm and p_bh adjust `p` across the outcomes (statsmodels multipletests, 'holm' and
    'fdr_bh'). TOST tests equivalence to within +-sesoi in d units, converted to raw units
    with the same denominator (`sesoi_raw`); `equivalent` is tost_p < alpha.
    An outcome whose model cannot be fitted gets a row of missing values and the reason
    in `messages`; the others are still analysed.
    """
    if hypothesis not in HYPOTHESES:
        raise UserError(f"hypothesis must be one of {', '.join(HYPOTHESES)}; got {hypothesis!r}")
    if not 0 < alpha < 1:
        raise UserError(f"alpha must lie between 0 and 1; got {alpha!r}")
    if bootstrap and (isinstance(bootstrap, bool) or int(bootstrap) != bootstrap or bootstrap < 2):
        raise UserError(f"the number of bootstrap samples must be a whole number of at least 2 (or 0 for "
                        f"none); got {bootstrap!r}")
    if isinstance(outcomes, str):
        outcomes = [outcomes]
    _require(trials, ["participant_id", "stimulus_id", "source", *outcomes], "primary test")
    rows = []
    for dv in outcomes:
        row = {c: np.nan for c in PRIMARY_COLUMNS}
        row.update(outcome=dv, p_sided=_SIDED_LABEL[hypothesis], equivalent=False)
        try:
            d, dropped = _complete_rows(trials, dv)
            _require_variation(d[dv], dv, len(trials))
            fit = fit_crossed(d, dv)
        except UserError as exc:
            row.update(model_used=None, formula=None, singular=None, messages=str(exc))
            rows.append(row)
            continue
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            # a numerical failure on one outcome must not hide the results of the others
            row.update(model_used=None, formula=None, singular=None,
                       messages=f"the model for {dv} could not be fitted ({exc.__class__.__name__}: {exc})")
            rows.append(row)
            continue
        xr = fit.fixed.set_index("term").loc["x"]
        est, se, df_ = float(xr["estimate"]), float(xr["se"]), float(xr["df"])
        tq = stats.t.ppf(1 - alpha / 2, df_)
        denom = westfall_denominator(fit)
        bound = sesoi * denom
        tp = tost(est, se, df_, bound)
        d_low = (est - tq * se) / denom if denom > 0 else np.nan
        d_high = (est + tq * se) / denom if denom > 0 else np.nan
        method, n_boot, boot_note = D_CI_FIXED, pd.NA, []
        if bootstrap and (bootstrap_outcomes is None or dv in bootstrap_outcomes) and denom > 0:
            from analysis.bootstrap import parametric_bootstrap

            res = parametric_bootstrap(
                fit, d_statistic, bootstrap, seed=[int(seed), outcomes.index(dv)], confidence=1 - alpha,
                progress=None if progress is None else (lambda done, total, dv=dv: progress(done, total, dv)))
            if np.isfinite(res.ci_low):
                method, n_boot, d_low, d_high = D_CI_BOOTSTRAP, res.n_boot, res.ci_low, res.ci_high
            if res.n_failed:
                boot_note.append(f"bootstrap of d: {res.n_failed} of {res.n_boot} refits failed and were "
                                 "left out of the interval")
        row.update(
            model_used=fit.model_used, formula=fit.formula,
            n_participants=fit.ngroups.get("participant_id"), n_stimuli=fit.ngroups.get("stimulus_id"),
            nobs=fit.nobs, estimate=est, se=se, df=df_, t=float(xr["t"]),
            p=_sided_p(float(xr["t"]), df_, hypothesis),
            ci_low=est - tq * se, ci_high=est + tq * se,
            d=est / denom if denom > 0 else np.nan, d_ci_low=d_low, d_ci_high=d_high,
            d_ci_method=method, n_boot=n_boot,
            tost_p=tp, equivalent=bool(np.isfinite(tp) and tp < alpha), sesoi_raw=bound,
            singular=fit.singular, messages="; ".join([*fit.messages, *dropped, *boot_note]),
        )
        rows.append(row)
    out = pd.DataFrame(rows, columns=PRIMARY_COLUMNS)
    out["p_holm"] = _adjust(out["p"], "holm")
    out["p_bh"] = _adjust(out["p"], "fdr_bh")
    for c in ("n_participants", "n_stimuli", "nobs", "n_boot"):
        out[c] = out[c].astype("Int64")
    out["equivalent"] = out["equivalent"].astype(bool)
    return out


# --------------------------------------------------------------------------------------
# the analyses that are often run instead


def naive_tests(trials: pd.DataFrame, dv: str) -> pd.DataFrame:
    """The two shortcuts: a paired t-test on participant means and a Welch t-test on clip means.

    paired_t_participant_means: each participant's mean over human clips minus over AI
    clips (participants who rated both sources); it treats the clips as fixed and so
    overstates the evidence whenever clips differ. welch_t_stimulus_means: clip means
    compared between sources (Welch); it ignores participants; n counts distinct clips (a
    clip rated under both sources once). estimate is human minus AI.
    """
    _require(trials, ["participant_id", "stimulus_id", "source", dv], "naive tests")
    d = _with_x(trials, dv)
    _require_variation(d[dv], dv, len(trials))
    pm = d.pivot_table(index="participant_id", columns="x", values=dv, aggfunc="mean").dropna()
    sm = d.groupby(["stimulus_id", "x"])[dv].mean().reset_index()
    rows = []
    # A test whose differences (or groups) do not vary is left out: scipy would warn and give NaN.
    if pm.shape[1] == 2 and len(pm) >= 2 and np.ptp((pm[0.5] - pm[-0.5]).to_numpy(float)) > 0:
        res = stats.ttest_rel(pm[0.5], pm[-0.5])
        rows.append(("paired_t_participant_means", res.statistic, float(len(pm) - 1), res.pvalue,
                     float((pm[0.5] - pm[-0.5]).mean()), len(pm)))
    hm, am = sm.loc[sm["x"] > 0, dv], sm.loc[sm["x"] < 0, dv]
    if len(hm) >= 2 and len(am) >= 2 and (np.ptp(hm.to_numpy(float)) > 0 or np.ptp(am.to_numpy(float)) > 0):
        res = stats.ttest_ind(hm, am, equal_var=False)
        rows.append(("welch_t_stimulus_means", res.statistic, float(res.df), res.pvalue,
                     float(hm.mean() - am.mean()), int(sm["stimulus_id"].nunique())))  # a clip under both sources is one clip
    return pd.DataFrame(rows, columns=["test", "statistic", "df", "p", "estimate", "n"])


# --------------------------------------------------------------------------------------
# matched pairs


def _t_interval(values: np.ndarray, confidence: float):
    n = len(values)
    mean = float(np.mean(values)) if n else np.nan
    if n < 2:
        return mean, np.nan, np.nan, np.nan
    se = float(np.std(values, ddof=1) / np.sqrt(n))
    q = stats.t.ppf(0.5 + confidence / 2, n - 1)
    return mean, se, mean - q * se, mean + q * se


def pair_differences(trials: pd.DataFrame, dv: str, confidence: float = 0.95) -> pd.DataFrame:
    """Human-minus-AI difference within each matched pair, and pooled over pairs.

    basis 'within_participant' (used when at least 2 participants rated both clips of the
    pair): per participant, the human clip's rating minus the AI clip's; human_mean,
    ai_mean and diff are means over those participants only (so diff = human_mean - ai_mean),
    se and CI from the t distribution on n - 1 df, n = participants who saw both.
    basis 'between_participant' (otherwise): the two clip means over everyone who rated
    each clip, se = sqrt(s_h^2/n_h + s_a^2/n_a), Welch df; n = n_h + n_a ratings.
    A pair holding several clips of one source uses their mean per participant.
    Pairs lacking a human or an AI clip are left out and named in attrs['messages'].
    The last row, pair_id 'pooled', takes the pairs as the unit: the mean of the pair
    differences with a t interval on (number of pairs - 1) df; n = number of pairs.
    """
    _require(trials, ["participant_id", "stimulus_id", "source", "pair_id", dv], "pair differences")
    if not 0 < confidence < 1:
        raise UserError(f"confidence must lie between 0 and 1; got {confidence!r}")
    d = _with_x(trials, dv)
    d = d[d["pair_id"].notna() & (d["pair_id"].astype(str).str.strip() != "")]
    rows, messages = [], []
    for pair, g in d.groupby("pair_id", sort=True):
        hum = sorted(g.loc[g["x"] > 0, "stimulus_id"].astype(str).unique())
        ai = sorted(g.loc[g["x"] < 0, "stimulus_id"].astype(str).unique())
        if not hum or not ai:
            messages.append(f"pair {pair} has no {'human' if not hum else 'AI'} clip with ratings; left out")
            continue
        wide = g.pivot_table(index="participant_id", columns="x", values=dv, aggfunc="mean")
        both = wide.dropna() if wide.shape[1] == 2 else wide.iloc[0:0]
        row = {"pair_id": pair, "human_id": ",".join(hum), "ai_id": ",".join(ai)}
        if len(both) >= 2:
            diffs = (both[0.5] - both[-0.5]).to_numpy(float)
            mean, se, lo, hi = _t_interval(diffs, confidence)
            row.update(n=len(both), basis="within_participant", human_mean=float(both[0.5].mean()),
                       ai_mean=float(both[-0.5].mean()), diff=mean, se=se, ci_low=lo, ci_high=hi)
        else:
            h = g.loc[g["x"] > 0, dv].to_numpy(float)
            a = g.loc[g["x"] < 0, dv].to_numpy(float)
            diff = float(h.mean() - a.mean())
            se = lo = hi = np.nan
            if len(h) >= 2 and len(a) >= 2:
                vh, va = h.var(ddof=1) / len(h), a.var(ddof=1) / len(a)
                se = float(np.sqrt(vh + va))
                if se > 0:
                    dfw = (vh + va) ** 2 / (vh**2 / (len(h) - 1) + va**2 / (len(a) - 1))
                    q = stats.t.ppf(0.5 + confidence / 2, dfw)
                    lo, hi = diff - q * se, diff + q * se
                else:
                    lo = hi = diff
            row.update(n=len(h) + len(a), basis="between_participant", human_mean=float(h.mean()),
                       ai_mean=float(a.mean()), diff=diff, se=se, ci_low=lo, ci_high=hi)
        rows.append(row)
    out = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    if len(out):
        mean, se, lo, hi = _t_interval(out["diff"].to_numpy(float), confidence)
        pooled = {"pair_id": "pooled", "human_id": None, "ai_id": None, "n": len(out),
                  "basis": "pairs", "human_mean": float(out["human_mean"].mean()),
                  "ai_mean": float(out["ai_mean"].mean()), "diff": mean, "se": se,
                  "ci_low": lo, "ci_high": hi}
        out = pd.concat([out, pd.DataFrame([pooled], columns=PAIR_COLUMNS)], ignore_index=True)
    else:
        messages.append("no matched pairs with both a human and an AI clip")
    out["n"] = out["n"].astype("Int64")
    out.attrs["messages"] = messages
    return out


# --------------------------------------------------------------------------------------
# source x label condition


def fit_crossed_fixed(data: pd.DataFrame, dv: str, fixed: list[str], *,
                      participant: str = "participant_id", stimulus: str = "stimulus_id",
                      slope: str = "x") -> LmmFit:
    """Like lmm.fit_crossed, with extra fixed terms: same random structure and singular rule.

    Correlated slope of `slope` by participant; if singular or not converged, uncorrelated;
    then intercepts only (kept even if singular). Sets .model_used and .messages.
    """
    specs = [
        ("correlated_slope", RandomTerm(participant, (slope,), True)),
        ("uncorrelated_slope", RandomTerm(participant, (slope,), False)),
        ("intercepts", RandomTerm(participant)),
    ]
    notes = []
    if not (data.dropna(subset=[slope]).groupby(participant)[slope].nunique() > 1).any():
        # a slope that never varies within a participant cannot be estimated (fit_lmm
        # refuses it); lme4 users drop it, as lmm.fit_crossed does
        specs = specs[2:]
        notes.append(f"no participant has more than one value of {slope}, so a slope by "
                     f"participant cannot be estimated; fitted (1 | {participant})")
    for name, term in specs:
        fit = fit_lmm(data, dv, fixed, [term, RandomTerm(stimulus)])
        if name == "intercepts" or (fit.converged and not fit.singular):
            break
        notes.append(f"model {name} ({fit.formula}) "
                     f"{'singular' if fit.singular else 'did not converge'}; simplified")
    fit.model_used = name
    fit.messages = notes + [f"model used: {name} ({fit.formula})"] + list(fit.messages)
    return fit


LABELS = ("none", "true", "swapped")


def label_effect(trials: pd.DataFrame, dv: str) -> pd.DataFrame:
    """Source x label-condition model and its planned contrasts.

    Model: dv ~ x + lab_<c> + x:lab_<c> for each label condition c other than the
    reference ('none' when present), lab_<c> a 0/1 indicator; random part and
    singular-fit rule as the primary model (participant slope of x, clip intercept).
    Because x is centred (+-0.5), lab_<c> is the difference of condition c from the
    reference averaged over the two sources, and x + x:lab_<c> is the source effect
    within c. Contrasts (estimates, Satterthwaite df, 95% CI from LmmFit.contrast):

    - source_in_<c>: human minus AI within each condition c;
    - label_<c>_vs_<ref>: main effect of condition c against the reference;
    - believed_human_vs_ai (needs 'true' and 'swapped'): under 'true' a human clip is
      labelled human, under 'swapped' it is labelled AI (and the reverse for AI clips);
      the same clips rated as labelled-human minus labelled-AI is
      (source_in_true - source_in_swapped) / 2 = the label's own effect;
    - source_net_of_label (needs both): (source_in_true + source_in_swapped) / 2, what
      the clips' true source does when the label is held balanced.

    With fewer than two label conditions the frame is empty and attrs['message'] says why.
    """
    _require(trials, ["participant_id", "stimulus_id", "source", "label_condition", dv], "label effect")
    d = _with_x(trials, dv)
    cond = d["label_condition"].astype("string").str.strip().str.lower()
    bad = cond.notna() & ~cond.isin(LABELS)
    if bad.any():
        raise UserError("label_condition must be none, true or swapped",
                        [Problem("column label_condition", f"values seen: {sorted(set(cond[bad]))}")])
    d = d[cond.notna()].copy()
    d["label_condition"] = cond[cond.notna()]
    present = [c for c in LABELS if c in set(d["label_condition"])]
    if len(present) < 2:
        out = pd.DataFrame(columns=CONTRAST_COLUMNS)
        out.attrs["message"] = (f"only one label condition ({', '.join(present) or 'none'}) in the data; "
                                "the label effect needs at least two")
        return out
    ref, others = present[0], present[1:]
    fixed = ["x"]
    for c in others:
        d[f"lab_{c}"] = (d["label_condition"] == c).astype(float)
        fixed.append(f"lab_{c}")
    for c in others:
        d[f"x_lab_{c}"] = d["x"] * d[f"lab_{c}"]
        fixed.append(f"x_lab_{c}")
    fit = fit_crossed_fixed(d, dv, fixed)
    terms = list(fit.fixed["term"])

    def L(**w):
        v = np.zeros(len(terms))
        for k, val in w.items():
            v[terms.index(k)] = val
        return v

    def src(c):
        return L(x=1.0) if c == ref else L(**{"x": 1.0, f"x_lab_{c}": 1.0})

    plan = [(f"source_in_{c}", src(c), f"human minus AI among participants in the '{c}' label condition")
            for c in present]
    plan += [(f"label_{c}_vs_{ref}", L(**{f"lab_{c}": 1.0}),
              f"'{c}' minus '{ref}' label condition, averaged over human and AI clips") for c in others]
    if "true" in present and "swapped" in present:
        plan.append(("believed_human_vs_ai", (src("true") - src("swapped")) / 2,
                     "same clips labelled human minus labelled AI ('true' vs 'swapped'): "
                     "the effect of believing a clip is human-made"))
        plan.append(("source_net_of_label", (src("true") + src("swapped")) / 2,
                     "human minus AI with the label balanced ('true' and 'swapped'): "
                     "the effect of the clips' real source apart from what people were told"))
    rows = []
    for name, vec, desc in plan:
        r = fit.contrast(vec, name)
        rows.append({"contrast": name, **{k: r[k] for k in CONTRAST_COLUMNS[1:-1]}, "description": desc})
    out = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    out.attrs.update(model_used=fit.model_used, formula=fit.formula, messages=fit.messages,
                     fixed=fit.fixed)
    return out


# --------------------------------------------------------------------------------------
# descriptives


def describe_by_source(trials: pd.DataFrame, outcomes: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Mean, SD, SE and t-interval of each outcome by source, over all ratings.

    These intervals treat ratings as independent; they describe, they do not test.
    """
    if isinstance(outcomes, str):
        outcomes = [outcomes]
    _require(trials, ["source", *outcomes], "describe by source")
    rows = []
    for dv in outcomes:
        d = _with_x(trials, dv)
        for src, sign in (("human", 0.5), ("ai", -0.5)):
            v = d.loc[d["x"] == sign, dv].to_numpy(float)
            mean, se, lo, hi = _t_interval(v, confidence)
            sd = float(np.std(v, ddof=1)) if len(v) >= 2 else np.nan
            rows.append({"outcome": dv, "source": src, "n": len(v), "mean": mean, "sd": sd,
                         "se": se, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=DESCRIBE_COLUMNS)
