"""The methods text of the report, written from what was actually run.

The model each outcome ended up with, the exclusions and their reasons, the corrections and the
equivalence bounds are read from the result tables (analysis.results), never from what was
planned. HTML fragments: the report places them.
"""

from __future__ import annotations

import html
import importlib.metadata
import platform
import re
from collections.abc import Mapping

import pandas as pd

from analysis.formatting import format_number, plural
from analysis.lmm import NO_PARTICIPANT_SLOPE, SIMPLIFIED
from analysis.results import CORRECTIONS, Plan, clips_phrase, counts, exclusion_counts

SOFTWARE = ("kuleshov", "numpy", "pandas", "scipy", "statsmodels", "plotly")
_DROPPED = re.compile(r"\d+ of \d+ rows dropped for missing values( \([^)]*\))?")


def exclusion_sentence(excluded: pd.DataFrame | None) -> str:
    if excluded is None or len(excluded) == 0:
        return "No participant or trial was excluded."
    counts = exclusion_counts(excluded)
    level = excluded["level"].fillna("participant").astype(str)
    parts = []
    for unit in ("participant", "trial"):
        c = counts[counts["level"] == unit]
        if c.empty:
            continue
        rows = excluded[level.str.startswith(unit)]
        total = rows["participant_id"].nunique() if unit == "participant" else len(rows)
        reasons = "; ".join(f"{html.escape(r)}: {n}" for r, n in zip(c["reason"], c["count"]))
        parts.append(f"{plural(int(total), unit)} ({reasons})")
    return "Excluded before analysis: " + " and ".join(parts) + "."


_SINGLE_LABEL_NOTES = {
    "true": "Every participant saw each clip with its true source label, so the human &minus; AI difference "
            "combines the clips' source with what participants were told about it.",
    "swapped": "Every participant saw each clip labelled with the opposite of its true source (condition "
               "swapped), so the human &minus; AI difference was measured while participants believed the "
               "human-made clips were AI-generated and the AI-generated clips human-made.",
}


def single_label_note(trials: pd.DataFrame) -> str:
    """A warning sentence when every participant saw the same, non-neutral source label."""
    if "label_condition" not in trials.columns:
        return ""
    conditions = trials["label_condition"].dropna().astype(str).unique()
    return _SINGLE_LABEL_NOTES.get(conditions[0], "") if len(conditions) == 1 else ""



def d_ci_sentence(prim: pd.DataFrame, plan: Plan) -> str:
    """How the CI of d was made, per stats.primary_test's d_ci_method."""
    level = f"{100 * (1 - plan.alpha):g}%"
    method = prim["d_ci_method"] if "d_ci_method" in prim.columns else pd.Series("fixed_denominator", prim.index)
    boot = prim[method == "parametric_bootstrap"]
    fixed_text = ("the CI of the difference divided by the estimated denominator, which treats the denominator as "
                  "known and so is too narrow when the variance components are uncertain")
    if not len(boot):
        return (f"its {level} CI is {fixed_text} (<code>kuleshov report --bootstrap N</code> makes a "
                "parametric-bootstrap CI instead).")
    n_boot = ", ".join(sorted({str(int(v)) for v in boot["n_boot"].dropna()}))
    seed = prim.attrs.get("bootstrap_seed")
    names = ", ".join(html.escape(str(o)) for o in boot["outcome"])
    rest = "" if len(boot) == len(prim) else f" For the other outcomes the CI of d is {fixed_text}."
    return (f"for {names}, its {level} CI is the percentile interval of d over {n_boot} parametric-bootstrap "
            "samples: ratings simulated from the fitted model (its fixed effects and variance components) on the "
            "same participants and clips, refitted with the same model, d recomputed each time"
            + (f" (seed {seed})" if seed is not None else "")
            + ", so it includes the uncertainty of the variance components." + rest)


def _model_note(r) -> str:
    """Why an outcome's model is not the planned one, as its fit said (analysis.lmm.fit_crossed):
    the design (no participant rated both sources) or the singular-fit rule; and whether the
    model used is singular itself."""
    messages = str(r.messages)
    why = []
    if NO_PARTICIPANT_SLOPE in messages:
        why.append(f"{NO_PARTICIPANT_SLOPE}, so the model has no source slope by participant")
    if SIMPLIFIED in messages:
        why.append("simplified from the planned model because the fit was singular or did not converge")
    if bool(r.singular):
        why.append("singular fit")
    if why and r.model_used != "correlated_slope":
        why.append(f"model used: {html.escape(str(r.model_used))}")
    return f" ({'; '.join(why)})" if why else ""


def repeated_pairs_sentence(trials: pd.DataFrame) -> str:
    """'20 ratings repeat a participant-clip pair already rated (the first: ...)', or ''. A CSV
    put together by hand may hold copied rows; the models count each row as a rating."""
    rated = trials.dropna(subset=["participant_id", "stimulus_id"])
    again = rated.duplicated(["participant_id", "stimulus_id"])
    if not again.any():
        return ""
    first = rated[again].iloc[0]
    k = int(again.sum())
    return (f"{plural(k, 'rating')} {'repeats' if k == 1 else 'repeat'} a participant&ndash;clip pair already "
            f"rated (the first: participant {html.escape(str(first['participant_id']))}, clip "
            f"{html.escape(str(first['stimulus_id']))}); each enters the models as a rating of its own.")


def methods_html(trials: pd.DataFrame, results: Mapping[str, pd.DataFrame], plan: Plan,
                 *, include_pilot: bool | None = None, load_notes: list[str] | None = None) -> str:
    n = counts(trials)
    prim = results["primary"]
    outcomes = list(prim["outcome"])
    roles = results.get("outcomes")
    primary = (", ".join(roles.loc[roles["role"] == "primary", "outcome"]) if roles is not None else "") or outcomes[0]
    paras = []
    pilot = ""
    if include_pilot is not None:
        pilot = " Pilot participants were included." if include_pilot else " Pilot participants were left out."
    paras.append(
        f"<p>The analysis used {plural(n['participants'], 'participant')} and {clips_phrase(n)}, "
        f"{n['ratings']} ratings in total, after exclusions. "
        f"{exclusion_sentence(results.get('exclusions'))}{pilot}"
        + "".join(f" {sentence}" for sentence in (single_label_note(trials), repeated_pairs_sentence(trials))
                  if sentence)
        + (f" Reading the data: {html.escape('; '.join(load_notes))}." if load_notes else "") + "</p>")

    by_model = []
    for r in prim.itertuples():
        if r.formula is None or pd.isna(r.formula):
            by_model.append(f"<li><b>{html.escape(r.outcome)}</b>: not fitted ({html.escape(str(r.messages))})</li>")
            continue
        note = _model_note(r)
        dropped = _DROPPED.search(str(r.messages))  # stats.primary_test counts them against the whole table
        if dropped:
            note += f"; {html.escape(dropped.group(0))}"
        by_model.append(f"<li><b>{html.escape(r.outcome)}</b>: <code>{html.escape(str(r.formula))}</code>{note}</li>")
    corr_col, corr_name = CORRECTIONS[plan.correction]
    sided = {"two_sided": "two-sided", "human_greater": "one-sided (human-made &gt; AI-generated)",
             "ai_greater": "one-sided (AI-generated &gt; human-made)"}.get(plan.hypothesis, plan.hypothesis)
    paras.append(
        "<p>For each outcome a linear mixed model with crossed random effects of participants and clips was "
        "fitted by restricted maximum likelihood (REML); the planned model was "
        "<code>outcome ~ source + (1 + source | participant) + (1 | clip)</code>. Source was coded +0.5 for "
        "human-made and &minus;0.5 for AI-generated clips, so the fixed effect of source is the human-minus-AI "
        "difference in scale points. Degrees of freedom and p-values use the Satterthwaite approximation. "
        "When a fit was singular or did not converge, the correlation between participant intercepts and "
        "slopes was dropped, then the participant slope."
        + (f" Source varied within clips: {n['both']} of {n['clips']} clips were rated as human-made by some "
           "participants and as AI-generated by others, so the model adds a by-clip source slope, "
           "<code>(1 + source | clip)</code>, simplified together with the participant slope by the same rule, "
           "and the denominator of d includes its variance, times 0.25." if n.get("both") else "")
        + " Models actually used:</p>"
        f"<ul class=\"models\">{''.join(by_model)}</ul>")
    sesoi_raw = ", ".join(f"{o}: &plusmn;{format_number(v)}" for o, v in zip(prim["outcome"], prim["sesoi_raw"])
                          if pd.notna(v)) if "sesoi_raw" in prim.columns else ""
    paras.append(
        "<p>The standardised effect size is d = (human &minus; AI) / &radic;(sum of the variance components: "
        "participant intercept, participant slope times 0.25 (the square of the &plusmn;0.5 source code, so that the "
        "sum is the variance of one rating within a source), clip intercept and residual, each where the model used "
        "has it: a slope the model left out counts as zero) (Westfall, Kenny &amp; "
        f"Judd, 2014); {d_ci_sentence(prim, plan)} "
        f"Tests were {sided} at &alpha; = {plan.alpha:g}. "
        + (f"The primary outcome ({html.escape(primary)}) was tested at &alpha;; the secondary outcomes are judged "
           f"by p-values adjusted with {corr_name} across all {len(outcomes)} outcomes (column "
           f"<code>{corr_col}</code>; Holm and Benjamini-Hochberg are both reported). "
           if len(outcomes) > 1 else "One outcome was tested, so no correction across outcomes was needed. ")
        + f"Equivalence was tested with two one-sided tests (TOST) against bounds of d = &plusmn;{plan.sesoi:g}, "
        f"the smallest effect of interest"
        + (f" (in scale points: {sesoi_raw})" if sesoi_raw else "") + ". "
        "For comparison, the paired t-test on participant means and the Welch t-test on clip means are also "
        "reported (table <code>naive</code>); they treat the clips as fixed and are not the test of record.</p>")
    extra = []
    if "label" in results and len(results["label"]):
        extra.append("The effect of the source label was estimated with a source &times; label-condition mixed "
                     "model (same random structure and simplification rule) and its planned contrasts, for "
                     + ", ".join(html.escape(o) for o in dict.fromkeys(results["label"]["outcome"])) + ".")
    if "sdt" in results:
        extra.append("AI attribution was analysed by signal detection per participant (a hit is judging an "
                     "AI-generated clip as AI; log-linear correction: H = (hits + 0.5) / (n<sub>AI</sub> + 1), "
                     "F = (false alarms + 0.5) / (n<sub>human</sub> + 1); d' = z(H) &minus; z(F)), with a one-sample "
                     "t-test of d' against zero.")
    if "judged_ai" in results and len(results["judged_ai"]):
        extra.append("Whether clips judged AI-made were rated differently whatever their true source was estimated "
                     "with <code>outcome ~ x_true + x_judged + (1 | participant) + (1 | clip)</code> (both coded "
                     "+0.5 human / &minus;0.5 AI; correlational, since participants chose their judgment), for "
                     + ", ".join(html.escape(o) for o in dict.fromkeys(results["judged_ai"]["outcome"])) + ".")
    if "pairs" in results and len(results["pairs"]):
        extra.append("Within each matched pair, the human-minus-AI difference of clip means is reported with a "
                     "95% CI, and pooled over pairs.")
    if extra:
        paras.append("<p>" + " ".join(extra) + "</p>")
    versions = ", ".join(f"{k} {v}" for k, v in software_versions().items())
    paras.append(f"<p>Software: {html.escape(versions)}.</p>")
    return "\n".join(paras)


def software_versions() -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for pkg in SOFTWARE:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
