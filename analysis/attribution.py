"""Can people tell AI-generated clips from human-made ones? Signal detection on the judgments.

The signal is an AI-generated clip: a hit is judging an AI clip 'ai', a false alarm is
judging a human clip 'ai'. Rates use the log-linear correction (Hautus 1995),
H = (hits + 0.5) / (n_ai + 1) and F = (false_alarms + 0.5) / (n_human + 1), so that
d' = z(H) - z(F) and criterion c = -(z(H) + z(F)) / 2 stay finite for perfect scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from analysis.lmm import RandomTerm, fit_lmm, source_code
from analysis.tables import require_columns
from study.errors import Problem, UserError

__all__ = [
    "sdt_per_participant", "dprime_test", "accuracy_by_clip", "confidence_accuracy",
    "confidence_accuracy_test", "judged_ai_effect",
]

SDT_COLUMNS = ["participant_id", "hits", "false_alarms", "n_ai", "n_human", "hit_rate", "fa_rate",
               "dprime", "criterion"]


def _judgments(trials: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows with a judgment, source and judged_source normalised to 'human'/'ai'."""
    if not isinstance(trials, pd.DataFrame):
        raise UserError("attribution analysis needs the trial table (a pandas DataFrame)")
    require_columns(trials, ["participant_id", "stimulus_id", "source", "judged_source", *extra],
                    "attribution analysis: columns missing from the trial table")
    d = trials[trials["judged_source"].notna() & trials["source"].notna()].copy()
    for col in ("source", "judged_source"):
        d[col] = d[col].astype("string").str.strip().str.lower()
        bad = ~d[col].isin(["human", "ai"])
        if bad.any():
            raise UserError(f"{col} must be 'human' or 'ai'",
                            [Problem(f"column {col}", f"values seen: {sorted(set(d.loc[bad, col]))}")])
    if d.empty:
        raise UserError("no AI-attribution judgments (judged_source) in the data")
    d["correct"] = (d["source"] == d["judged_source"]).astype(float)
    return d


def sdt_per_participant(trials: pd.DataFrame) -> pd.DataFrame:
    """Hits, false alarms, corrected rates, d' and criterion c for each participant.

    Positive c is a bias towards answering 'human' (conservative about saying 'ai').
    """
    d = _judgments(trials)
    d["is_ai"] = d["source"] == "ai"
    d["said_ai"] = d["judged_source"] == "ai"
    g = d.groupby("participant_id", sort=True)
    out = pd.DataFrame({
        "hits": g.apply(lambda x: int((x["is_ai"] & x["said_ai"]).sum()), include_groups=False),
        "false_alarms": g.apply(lambda x: int((~x["is_ai"] & x["said_ai"]).sum()), include_groups=False),
        "n_ai": g["is_ai"].sum().astype(int),
        "n_human": (~d["is_ai"]).groupby(d["participant_id"]).sum().astype(int),
    }).reset_index()
    out["hit_rate"] = (out["hits"] + 0.5) / (out["n_ai"] + 1)
    out["fa_rate"] = (out["false_alarms"] + 0.5) / (out["n_human"] + 1)
    zh, zf = stats.norm.ppf(out["hit_rate"]), stats.norm.ppf(out["fa_rate"])
    out["dprime"] = zh - zf
    out["criterion"] = -(zh + zf) / 2
    return out[SDT_COLUMNS]


def dprime_test(sdt: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One-sample t-test of mean d' against 0 (can people tell at all?), with its CI.

    Also reports the mean criterion, so one row holds the group-level summary.
    """
    if "dprime" not in getattr(sdt, "columns", []):
        raise UserError("dprime_test needs the table from sdt_per_participant (column dprime)")
    v = sdt["dprime"].dropna().to_numpy(float)
    n = len(v)
    if n < 2:
        raise UserError(f"the test of d' needs at least 2 participants with judgments; found {n}")
    res = stats.ttest_1samp(v, 0.0)
    ci = res.confidence_interval(confidence)
    sd = float(np.std(v, ddof=1))
    crit = float(sdt["criterion"].mean()) if "criterion" in sdt else np.nan
    return pd.DataFrame([{
        "n": n, "mean_dprime": float(v.mean()), "sd": sd, "se": sd / np.sqrt(n),
        "t": float(res.statistic), "df": float(n - 1), "p": float(res.pvalue),
        "ci_low": float(ci.low), "ci_high": float(ci.high), "mean_criterion": crit,
    }])


def accuracy_by_clip(trials: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Share of correct source judgments per clip, Wilson interval, mean confidence."""
    has_conf = "confidence" in trials.columns
    d = _judgments(trials)
    if not has_conf:
        d["confidence"] = np.nan
    d["confidence"] = pd.to_numeric(d["confidence"], errors="coerce")
    g = d.groupby(["stimulus_id", "source"], sort=True)
    out = g.agg(n=("correct", "size"), k=("correct", "sum"), mean_confidence=("confidence", "mean")).reset_index()
    out["accuracy"] = out["k"] / out["n"]
    lo, hi = proportion_confint(out["k"], out["n"], alpha=1 - confidence, method="wilson")
    out["ci_low"], out["ci_high"] = np.asarray(lo, float), np.asarray(hi, float)
    return out[["stimulus_id", "source", "n", "accuracy", "ci_low", "ci_high", "mean_confidence"]]


def _confidence(d: pd.DataFrame) -> pd.Series:
    c = pd.to_numeric(d["confidence"], errors="coerce")
    bad = d["confidence"].notna() & c.isna()
    if bad.any():
        raise UserError("confidence must be a number (50-100)",
                        [Problem("column confidence", f"value {d.loc[bad, 'confidence'].iloc[0]!r}")])
    return c


def confidence_accuracy(trials: pd.DataFrame, bins=(50, 60, 70, 80, 90, 101)) -> pd.DataFrame:
    """Accuracy of source judgments by confidence band (calibration table).

    Bins are left-closed: [50, 60), ..., [90, 101) labelled '50-59', ..., '90-100'.
    """
    d = _judgments(trials, ("confidence",))
    d["confidence"] = _confidence(d)
    d = d[d["confidence"].notna()]
    bins = list(bins)
    labels = [f"{bins[i]:g}-{bins[i + 1] - 1:g}" for i in range(len(bins) - 1)]
    d["confidence_bin"] = pd.cut(d["confidence"], bins=bins, right=False, labels=labels)
    out = (d.groupby("confidence_bin", observed=False)
           .agg(n=("correct", "size"), accuracy=("correct", "mean"), mean_confidence=("confidence", "mean"))
           .reset_index())
    out["confidence_bin"] = out["confidence_bin"].astype(str)
    return out


def confidence_accuracy_test(trials: pd.DataFrame) -> pd.DataFrame:
    """Does higher confidence go with correct judgments? Logistic regression, clustered SEs.

    correct ~ confidence (in units of 10 percentage points, centred at 75), a binomial GLM
    (statsmodels) with standard errors clustered by participant, since each person gives
    many judgments. Clips are not modelled as a second cluster; the estimate is the
    population-averaged log-odds change per 10 points of confidence. One row per term.
    """
    import statsmodels.api as sm

    d = _judgments(trials, ("confidence",))
    d["confidence"] = _confidence(d)
    d = d[d["confidence"].notna()]
    if d["participant_id"].nunique() < 2 or d["confidence"].nunique() < 2 or d["correct"].nunique() < 2:
        raise UserError("the confidence-accuracy test needs at least 2 participants, varying "
                        "confidence and both correct and wrong judgments")
    X = sm.add_constant((d["confidence"].to_numpy(float) - 75.0) / 10.0)
    groups = pd.factorize(d["participant_id"])[0]
    res = sm.GLM(d["correct"].to_numpy(float), X, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": groups})
    ci = np.asarray(res.conf_int())
    rows = []
    for i, term in enumerate(["intercept (confidence 75)", "confidence_per_10"]):
        b = float(res.params[i])
        rows.append({"term": term, "estimate": b, "se": float(res.bse[i]), "z": float(res.tvalues[i]),
                     "p": float(res.pvalues[i]), "ci_low": float(ci[i, 0]), "ci_high": float(ci[i, 1]),
                     "odds_ratio": float(np.exp(b)), "n": len(d),
                     "n_participants": int(d["participant_id"].nunique())})
    return pd.DataFrame(rows)


def judged_ai_effect(trials: pd.DataFrame, dv: str) -> pd.DataFrame:
    """Are clips judged 'AI' rated differently, whatever their true source?

    Mixed model dv ~ x_true + x_judged + (1 | participant) + (1 | stimulus), both coded
    +0.5 human / -0.5 AI, REML with Satterthwaite df. x_judged is the rating difference
    between clips judged human and judged AI with the true source held constant (a
    within-clip, between-judgment contrast: it is correlational, since people chose their
    judgment). Rows: x_true, x_judged.
    """
    d = _judgments(trials, (dv,))
    d[dv] = pd.to_numeric(d[dv], errors="coerce")
    d = d[d[dv].notna()].copy()
    d["x_true"] = source_code(d["source"])
    d["x_judged"] = source_code(d["judged_source"])
    fit = fit_lmm(d, dv, ["x_true", "x_judged"], [RandomTerm("participant_id"), RandomTerm("stimulus_id")])
    out = fit.fixed[fit.fixed["term"].isin(["x_true", "x_judged"])].reset_index(drop=True)
    out.attrs.update(formula=fit.formula, messages=fit.messages, singular=fit.singular, nobs=fit.nobs)
    return out[["term", "estimate", "se", "df", "t", "p", "ci_low", "ci_high"]]
