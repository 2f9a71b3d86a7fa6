"""Result tables and the self-contained HTML report, plus `kuleshov analyze` and `kuleshov report`.

`analyze` runs every analysis once and returns tidy tables; `write_tables` saves them as CSV;
`build_report` turns them (and charts) into ONE HTML file that opens offline: plotly.js is
inlined once in <head>, and nothing is fetched from the network. The methods paragraph is
written from what was actually run (the model each outcome ended up with, the exclusions and
their reasons), never from what was planned.
"""

from __future__ import annotations

import html
import importlib.metadata
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import charts
from analysis.load import did_you_mean
from study.config import check_writable
from study.errors import Problem, UserError

# Per-clip outcomes offered by the built-in instruments (study/instruments.py), in report
# order; scale scores rather than their items, so default outcomes are not item-level noise.
KNOWN_OUTCOMES = ("valence", "arousal", "dominance", "moved", "engagement", "ai_qualities")
REQUIRED_COLUMNS = ("participant_id", "stimulus_id", "source")
P_COLUMNS = {"p", "p_holm", "p_bh", "tost_p", "p_adjusted"}
COUNT_COLUMNS = {"n", "nobs", "n_participants", "n_stimuli", "hits", "false_alarms", "n_ai", "n_human",
                 "n_items", "n_pairs", "participants", "trials", "count", "position"}
CORRECTIONS = {"holm": ("p_holm", "Holm's step-down method"),
               "bh": ("p_bh", "the Benjamini-Hochberg false-discovery-rate method"),
               "fdr_bh": ("p_bh", "the Benjamini-Hochberg false-discovery-rate method"),
               "none": ("p", "no correction")}
SOFTWARE = ("kuleshov", "numpy", "pandas", "scipy", "statsmodels", "plotly")

SECTIONS = [  # (id, heading); the order of the report
    ("summary", "Summary"),
    ("methods", "Methods"),
    ("exclusions", "Exclusions"),
    ("descriptives", "Descriptive statistics"),
    ("primary", "Primary test: crossed mixed models"),
    ("forest", "Effects across outcomes"),
    ("distributions", "Distributions by source"),
    ("pairs", "Matched pairs"),
    ("label", "Label effect"),
    ("attribution", "AI attribution"),
    ("valence-arousal", "Valence-arousal plane"),
    ("emotions", "Discrete emotions"),
    ("order", "Order and fatigue"),
    ("reliability", "Reliability of scales"),
    ("software", "Software"),
]


# ---------------------------------------------------------------------------------------------
# the analysis plan


@dataclass
class Plan:
    """The study file's `analysis` block, with the defaults used when there is no study file."""

    primary_outcome: str | None = None
    secondary_outcomes: list[str] = field(default_factory=list)
    hypothesis: str = "two_sided"
    alpha: float = 0.05
    sesoi: float = 0.2  # in d units (stats.primary_test)
    correction: str = "holm"

    @classmethod
    def from_any(cls, plan: Any = None, study: Any = None) -> Plan:
        src = plan if plan is not None else getattr(study, "analysis", None)
        if src is None:
            return cls()
        if isinstance(src, cls):
            return src
        if hasattr(src, "model_dump"):
            src = src.model_dump()
        if not isinstance(src, Mapping):
            raise UserError(f"analysis plan must be a mapping of settings; got {type(src).__name__}")
        known = {k: v for k, v in src.items() if k in cls.__dataclass_fields__ and v is not None}
        out = cls(**known)
        out.secondary_outcomes = list(out.secondary_outcomes or [])
        out.correction = str(out.correction).lower()
        if out.correction not in CORRECTIONS:
            raise UserError(f"analysis.correction must be one of {', '.join(CORRECTIONS)}; got {out.correction!r}")
        return out


def default_outcomes(trials: pd.DataFrame, plan: Plan | None = None) -> list[str]:
    """The plan's primary and secondary outcomes, else every known outcome present: the
    built-in dimensions and scale scores, then the discrete emotions."""
    if plan is not None and plan.primary_outcome:
        wanted = [plan.primary_outcome, *plan.secondary_outcomes]
        missing = [o for o in wanted if o not in trials.columns]
        if missing:
            raise UserError("outcomes named in the analysis plan are not in the data",
                            [Problem(f"analysis: outcome {o}", "no such column in the trial table"
                                     + did_you_mean(o, trials.columns) + "; columns are: "
                                     + ", ".join(map(str, trials.columns))) for o in missing])
        return list(dict.fromkeys(wanted))
    numeric = [c for c in trials.columns if _numeric_with_data(trials[c])]
    return [c for c in KNOWN_OUTCOMES if c in numeric] + [c for c in charts.emotion_columns(trials) if c in numeric]


def main_outcomes(outcomes: list[str]) -> list[str]:
    """The outcomes that get their own charts and secondary models (label effect, judged-AI
    effect): the dimensions and scale scores. The discrete emotions are many, are shown
    together in the emotion profile, and are tested in the primary table only."""
    main = [o for o in outcomes if not o.startswith("emo_")]
    return main or outcomes[:1]


def _numeric_with_data(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.notna().any()


def nothing_left_error(excluded: pd.DataFrame | None, participants: pd.DataFrame | None = None) -> UserError:
    """Why there is nothing to analyse: every rating excluded (by which rules), or no ratings yet."""
    if excluded is not None and len(excluded):
        counts = exclusion_counts(excluded)
        problems = [Problem(f"excluded {r.level}s", f"{r.reason}: {r.count}") for r in counts.itertuples()]
        hint = ("check the study file's exclusions settings or the data; every excluded participant and "
                "trial is listed with its reason in the export's exclusions.csv")
        if (counts["reason"] == "pilot participant").any():
            hint += "; add --include-pilot to keep pilot participants"
        level = excluded["level"].fillna("participant").astype(str)
        n_people = excluded.loc[level.str.startswith("participant"), "participant_id"].nunique()
        n_trials = int(level.str.startswith("trial").sum())
        return UserError(f"nothing left to analyse: the exclusion rules removed every rating "
                         f"({_plural(int(n_people), 'participant')} and {_plural(n_trials, 'trial')} "
                         f"excluded, by rule below); {hint}", problems)
    if participants is not None and len(participants):
        return UserError("nothing to analyse yet: no participant has rated a main clip ("
                         + enrolment_sentence(participants).rstrip(".") + ")")
    return UserError("nothing to analyse: the data hold no ratings of main clips")


def check_trials(trials: pd.DataFrame, where: str = "trial table") -> pd.DataFrame:
    """Clear errors for a table that is not in trial-table shape; returns it with source normalised."""
    if not isinstance(trials, pd.DataFrame):
        raise UserError(f"{where}: expected a table (pandas DataFrame), got {type(trials).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in trials.columns]
    if missing:
        raise UserError(f"{where} is not in trial-table shape",
                        [Problem(f"{where}: column {c}", "missing; columns are: " + ", ".join(map(str, trials.columns)))
                         for c in missing])
    if trials.empty:
        raise UserError(f"{where} has no rows: nothing to analyse")
    t = trials.copy()
    t["source"] = t["source"].astype("string").str.strip().str.lower()
    bad = t["source"].notna() & ~t["source"].isin(charts.SOURCES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"{where}: source must be 'human' or 'ai'",
                        [Problem(f"{where}: row {row + 1}, column source", f"value {trials['source'].iloc[row]!r}")])
    return t


# ---------------------------------------------------------------------------------------------
# analysis


def _with_outcome(frames: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    parts = [f.assign(outcome=o)[["outcome", *f.columns]] for o, f in frames if f is not None and len(f)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _scales_present(trials: pd.DataFrame, scales: Mapping[str, Any]) -> dict[str, list[str]]:
    """Scales (name -> item ids) whose items are all columns of the trial table."""
    out = {}
    for name, sc in scales.items():
        items = list(getattr(sc, "items", sc))
        if len(items) >= 2 and all(i in trials.columns and trials[i].notna().any() for i in items):
            out[name] = items
    return out


def analyze(trials: pd.DataFrame, *, outcomes: list[str] | None = None, plan: Any = None, study: Any = None,
            excluded: pd.DataFrame | None = None, scales: Mapping[str, Any] | None = None,
            codebook: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Every result table, computed once: for the report, the dashboard and `kuleshov analyze`.

    Keys (present only when the data allow): primary, descriptives, naive, pairs, label,
    sdt, dprime, accuracy_by_clip, confidence_accuracy, confidence_accuracy_test, judged_ai, clip_means,
    position_means, reliability, exclusions; always `skipped` [section, reason] and
    `outcomes` [outcome, role]. A section whose input was not collected is listed in
    `skipped` with the reason; a UserError from an analysis is recorded there too, so one
    impossible analysis does not stop the others.
    """
    from analysis import stats

    if isinstance(trials, pd.DataFrame) and trials.empty:
        raise nothing_left_error(excluded)
    trials = check_trials(trials)
    p = Plan.from_any(plan, study)
    outcomes = list(outcomes) if outcomes else default_outcomes(trials, p)
    missing = [o for o in outcomes if o not in trials.columns]
    if missing:
        raise UserError("outcomes not in the trial table",
                        [Problem(f"outcome {o}", "no such column" + did_you_mean(o, trials.columns)
                                 + "; columns are: " + ", ".join(map(str, trials.columns))) for o in missing])
    if not outcomes:
        numeric = [str(c) for c in trials.columns if _numeric_with_data(trials[c])
                   and c not in ("position", "watched_share", "confidence")]
        raise UserError("no outcome to analyse: the trial table has none of the known outcome columns ("
                        + ", ".join(KNOWN_OUTCOMES) + ", emo_*); choose them with --outcomes (outcomes= in "
                        "Python)" + (f", e.g. --outcomes {','.join(numeric[:3])}" if numeric else ""))
    res: dict[str, pd.DataFrame] = {}
    skipped: list[tuple[str, str]] = []

    def attempt(section: str, fn: Callable[[], pd.DataFrame | None]) -> pd.DataFrame | None:
        try:
            return fn()
        except UserError as exc:
            skipped.append((section, str(exc)))
            return None

    roles = ["primary" if (p.primary_outcome and o == p.primary_outcome) or (not p.primary_outcome and i == 0)
             else "secondary" for i, o in enumerate(outcomes)]
    res["outcomes"] = pd.DataFrame({"outcome": outcomes, "role": roles})
    res["primary"] = stats.primary_test(trials, outcomes, alpha=p.alpha, sesoi=p.sesoi, hypothesis=p.hypothesis)
    res["descriptives"] = stats.describe_by_source(trials, outcomes)
    res["naive"] = _with_outcome([(o, attempt("naive", lambda o=o: stats.naive_tests(trials, o))) for o in outcomes])
    res["clip_means"] = _with_outcome([(o, charts.clip_means(trials, o)) for o in outcomes])
    if "position" in trials.columns and trials["position"].notna().any():
        res["position_means"] = _with_outcome(
            [(o, charts.summarise(trials.dropna(subset=["position"]), o, ["position", "source"])) for o in outcomes])
    else:
        skipped.append(("order", "no position column"))

    has_pairs = "pair_id" in trials.columns and trials.dropna(subset=["pair_id"]).groupby("pair_id")["source"].nunique().eq(2).any()
    if has_pairs:
        res["pairs"] = _with_outcome([(o, attempt("pairs", lambda o=o: stats.pair_differences(trials, o))) for o in outcomes])
    else:
        skipped.append(("pairs", "no matched pairs (pair_id with both a human and an AI clip)"))

    n_labels = trials["label_condition"].nunique() if "label_condition" in trials.columns else 0
    main = main_outcomes(outcomes)
    if n_labels > 1:
        frames = []
        for o in main:
            lab = attempt("label", lambda o=o: stats.label_effect(trials, o))
            if lab is not None and len(lab):
                lab = lab.assign(model_used=lab.attrs.get("model_used"), formula=lab.attrs.get("formula"))
            frames.append((o, lab))
        res["label"] = _with_outcome(frames)
    else:
        only = trials["label_condition"].dropna().unique() if n_labels else []
        skipped.append(("label", f"one label condition only ({only[0]})" if len(only) else "no label_condition column"))

    if "judged_source" in trials.columns and trials["judged_source"].notna().any():
        from analysis import attribution

        sdt = attempt("attribution", lambda: attribution.sdt_per_participant(trials))
        if sdt is not None:
            res["sdt"] = sdt
            dp = attempt("attribution", lambda: attribution.dprime_test(sdt))
            if dp is not None:
                res["dprime"] = dp
        acc = attempt("attribution", lambda: attribution.accuracy_by_clip(trials))
        if acc is not None:
            res["accuracy_by_clip"] = acc
        if "confidence" in trials.columns and trials["confidence"].notna().any():
            ca = attempt("attribution", lambda: attribution.confidence_accuracy(trials))
            if ca is not None:
                res["confidence_accuracy"] = ca
            ct = attempt("attribution", lambda: attribution.confidence_accuracy_test(trials))
            if ct is not None:
                res["confidence_accuracy_test"] = ct
        res["judged_ai"] = _with_outcome(
            [(o, attempt("attribution", lambda o=o: attribution.judged_ai_effect(trials, o))) for o in main])
    else:
        skipped.append(("attribution", "no judged_source column (the attribution instrument was not used)"))

    if not {"valence", "arousal"} <= set(trials.columns):
        skipped.append(("valence-arousal", "valence and arousal were not both measured"))
    if not charts.emotion_columns(trials):
        skipped.append(("emotions", "no discrete-emotion ratings (emo_*)"))

    from analysis import scoring

    if codebook is None:
        from study import instruments

        codebook = instruments.codebook(study)  # item keying of the study's (or the built-in) items
    scale_items = _scales_present(trials, scoring.default_scales(codebook) if scales is None else scales)
    if scale_items:
        rel = attempt("reliability", lambda: scoring.reliability(trials, scale_items, items_meta=codebook))
        if rel is not None:
            res["reliability"] = rel
    else:
        skipped.append(("reliability", "no multi-item scale with its items in the data"))

    res["exclusions"] = _exclusion_table(excluded)
    res["exclusion_counts"] = exclusion_counts(res["exclusions"])
    res["skipped"] = pd.DataFrame(skipped, columns=["section", "reason"])
    return res


def _exclusion_table(excluded: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["level", "participant_id", "stimulus_id", "reason"]
    if excluded is None or len(excluded) == 0:
        return pd.DataFrame(columns=cols)
    ex = excluded.copy()
    for c in cols:
        if c not in ex.columns:
            ex[c] = pd.NA
    return ex[cols + [c for c in ex.columns if c not in cols]].reset_index(drop=True)


def write_tables(results: Mapping[str, pd.DataFrame], out_dir: str | Path) -> list[Path]:
    """Every result table as <out_dir>/<name>.csv (UTF-8, no index); returns the paths written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; give a folder for the result tables")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in results.items():
        if not isinstance(df, pd.DataFrame):
            continue
        path = out / f"{name}.csv"
        df.to_csv(path, index=False)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# formatting


def format_p(p: Any) -> str:
    """APA-style p: '< .001', else three decimals without the leading zero; '' when missing."""
    if p is None or pd.isna(p):
        return ""
    p = float(p)
    if p < 0.001:
        return "< .001"
    return f"{p:.3f}".lstrip("0") if p < 1 else "1.000"


def p_equals(p: Any, name: str = "p") -> str:
    """'p = .046' or 'p < .001' for running text (format_p alone would give 'p = < .001')."""
    text = format_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def format_number(x: Any, column: str = "") -> str:
    if x is None or (not isinstance(x, (list, tuple, np.ndarray)) and pd.isna(x)):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if column in COUNT_COLUMNS and float(x).is_integer():
            return str(int(x))
        if column == "df":
            return f"{x:.1f}"
        if not np.isfinite(x):
            return str(x)
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"
    return str(x)


def table_html(df: pd.DataFrame, *, columns: list[str] | None = None, caption: str | None = None,
               table_id: str | None = None, max_rows: int = 200, collapse_after: int = 15) -> str:
    """A DataFrame as an escaped HTML table with p-values and numbers formatted for reading.

    Numeric columns are right-aligned (class "num"); tables longer than `collapse_after` rows
    sit in a <details> element so the report stays scannable."""
    if df is None or len(df) == 0:
        return '<p class="note">No rows.</p>'
    d = df[[c for c in (columns or df.columns) if c in df.columns]]
    more = len(d) - max_rows
    d = d.head(max_rows)
    numeric = {c: pd.api.types.is_numeric_dtype(d[c]) and not pd.api.types.is_bool_dtype(d[c]) for c in d.columns}
    head = "".join(f'<th{" class=num" if numeric[c] else ""}>{html.escape(str(c))}</th>' for c in d.columns)
    rows = []
    for rec in d.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(d.columns, rec):
            text = format_p(v) if c in P_COLUMNS else format_number(v, c)
            cells.append(f'<td{" class=num" if numeric[c] else ""}>{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    out = (f'<div class="overflow"><table class="results"{ident}>{cap}<thead><tr>{head}</tr></thead>'
           f'<tbody>{"".join(rows)}</tbody></table></div>')
    if more > 0:
        out += f'<p class="note">{more} more rows in the CSV tables (kuleshov analyze).</p>'
    if len(d) > collapse_after:
        label = html.escape(caption or "Table")
        out = f"<details><summary>{label} ({len(d)} rows)</summary>{out}</details>"
    return out


def chart_html(fig, div_id: str) -> str:
    """A figure as a div + script, without plotly.js (inlined once in <head>)."""
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return f'<figure class="chart" data-chart="{div_id}">{body}</figure>'


# ---------------------------------------------------------------------------------------------
# methods text


def _n(trials: pd.DataFrame) -> dict[str, int]:
    clips = trials.drop_duplicates("stimulus_id")
    return {"participants": trials["participant_id"].nunique(), "clips": len(clips),
            "human": int((clips["source"] == "human").sum()), "ai": int((clips["source"] == "ai").sum()),
            "ratings": len(trials)}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# Exclusion reasons name the measured value (e.g. "watched 58% of the clip (at least 80%
# required)"); the methods count them by the rule that was broken.
_REASON_RULES = [
    (re.compile(r"^watched .* \(at least (.+) required\)$"), "watched less than {0} of the clip"),
    (re.compile(r"^failed \d+ attention checks? \(at most 0 allowed\)$"), "failed an attention check (none allowed)"),
    (re.compile(r"^failed \d+ attention checks? \(at most (\d+) allowed\)$"), "failed more than {0} attention checks"),
    (re.compile(r"^completed .* planned clips \(.*at least (.+) required\)$"), "completed less than {0} of the planned clips"),
    (re.compile(r"^pilot participant"), "pilot participant"),
]
_REASON_SPLIT = re.compile(r";\s+(?![^(]*\))")  # "; " joins reasons, but not inside parentheses


def reason_category(reason: str) -> str:
    """The rule behind one exclusion reason, without the participant's own value."""
    for pattern, label in _REASON_RULES:
        m = pattern.match(reason.strip())
        if m:
            return label.format(*m.groups())
    return reason.strip()


def exclusion_counts(excluded: pd.DataFrame | None) -> pd.DataFrame:
    """[level, reason, count]: participants (or trials) per broken rule; a participant
    excluded for two reasons counts under both."""
    cols = ["level", "reason", "count"]
    if excluded is None or len(excluded) == 0:
        return pd.DataFrame(columns=cols)
    rows = []
    for r in excluded.itertuples():
        level = "participant" if str(r.level or "participant").startswith("participant") else "trial"
        for part in _REASON_SPLIT.split(str(r.reason) if pd.notna(r.reason) else "unspecified"):
            rows.append((level, reason_category(part)))
    counts = pd.DataFrame(rows, columns=["level", "reason"]).value_counts(sort=False).rename("count").reset_index()
    return counts.sort_values(["level", "count", "reason"], ascending=[True, False, True]).reset_index(drop=True)[cols]


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
        parts.append(f"{_plural(int(total), unit)} ({reasons})")
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


def methods_html(trials: pd.DataFrame, results: Mapping[str, pd.DataFrame], plan: Plan,
                 *, include_pilot: bool | None = None) -> str:
    n = _n(trials)
    prim = results["primary"]
    outcomes = list(prim["outcome"])
    roles = results.get("outcomes")
    primary = (", ".join(roles.loc[roles["role"] == "primary", "outcome"]) if roles is not None else "") or outcomes[0]
    paras = []
    pilot = ""
    if include_pilot is not None:
        pilot = " Pilot participants were included." if include_pilot else " Pilot participants were left out."
    paras.append(
        f"<p>The analysis used {_plural(n['participants'], 'participant')} and {_plural(n['clips'], 'clip')} "
        f"({n['human']} human-made, {n['ai']} AI-generated), {n['ratings']} ratings in total, after exclusions. "
        f"{exclusion_sentence(results.get('exclusions'))}{pilot}"
        + (f" {single_label_note(trials)}" if single_label_note(trials) else "") + "</p>")

    by_model = []
    for r in prim.itertuples():
        if r.formula is None or pd.isna(r.formula):
            by_model.append(f"<li><b>{html.escape(r.outcome)}</b>: not fitted ({html.escape(str(r.messages))})</li>")
            continue
        note = ""
        if r.model_used != "correlated_slope":
            note = (f" (simplified from the planned model because the fit was singular or did not converge; "
                    f"model used: {html.escape(str(r.model_used))})")
        elif bool(r.singular):
            note = " (singular fit)"
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
        "slopes was dropped, then the participant slope. Models actually used:</p>"
        f"<ul class=\"models\">{''.join(by_model)}</ul>")
    sesoi_raw = ", ".join(f"{o}: &plusmn;{format_number(v)}" for o, v in zip(prim["outcome"], prim["sesoi_raw"])
                          if pd.notna(v)) if "sesoi_raw" in prim.columns else ""
    paras.append(
        "<p>The standardised effect size is d = (human &minus; AI) / &radic;(sum of the variance components: "
        "participant intercept, participant slope, clip intercept and residual) (Westfall, Kenny &amp; Judd, 2014); "
        "its 95% CI is the CI of the difference divided by the same denominator. "
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


# ---------------------------------------------------------------------------------------------
# the report


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1100px;margin:0 auto;padding:1rem 1.5rem;line-height:1.45}
h1{font-size:1.7rem;margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
nav ol{columns:3;font-size:.9rem} .banner{background:#fff3cd;border:2px solid #b8860b;padding:.8rem 1rem;font-weight:600;margin:1rem 0}
table.results{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem;font-variant-numeric:tabular-nums}
table.results th,table.results td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
table.results th{background:#f4f4f4} table.results .num{text-align:right;white-space:nowrap}
details summary{cursor:pointer;color:#0072B2;margin:.4rem 0}
caption{text-align:left;font-weight:600;padding:.3rem 0}
.note{color:#555;font-style:italic} section.skipped h2{color:#777} figure.chart{margin:0 0 1rem}
code{background:#f4f4f4;padding:0 .2rem} .muted{color:#666;font-size:.85rem} .overflow{overflow-x:auto}
"""


def _section(sid: str, heading: str, body: str, *, skipped: str | None = None) -> str:
    if skipped is not None:
        return (f'<section id="{sid}" class="skipped" data-status="skipped"><h2>{html.escape(heading)}</h2>'
                f'<p class="note">Not shown: {html.escape(skipped)}.</p></section>')
    return f'<section id="{sid}" data-status="shown"><h2>{html.escape(heading)}</h2>\n{body}\n</section>'


def enrolment_sentence(participants: pd.DataFrame | None) -> str:
    """'30 people started the study (completed 25, in progress 3, withdrawn 2); median duration 14.2 min.'"""
    if participants is None or len(participants) == 0 or "status" not in participants.columns:
        return ""
    counts = participants["status"].fillna("unknown").astype(str).value_counts()
    who = "person" if len(participants) == 1 else "people"
    text = (f"{len(participants)} {who} started the study ("
            + ", ".join(f"{html.escape(k.replace('_', ' '))} {v}" for k, v in counts.items()) + ")")
    if "duration_s" in participants.columns and participants["duration_s"].notna().any():
        median_s = participants["duration_s"].median()
        # Short pilots and simulated sessions take seconds; '0.0 min' would read as missing.
        text += (f"; median time to complete {median_s / 60:.1f} min" if median_s >= 60
                 else f"; median time to complete {median_s:.0f} s")
    return text + "."


def _summary_html(trials: pd.DataFrame, results: Mapping[str, pd.DataFrame], plan: Plan,
                  participants: pd.DataFrame | None = None) -> str:
    n = _n(trials)
    prim = results["primary"]
    corr_col = CORRECTIONS[plan.correction][0]
    roles = results.get("outcomes")
    primary_names = set(roles.loc[roles["role"] == "primary", "outcome"]) if roles is not None else set()
    items = [f"<li>{_plural(n['participants'], 'participant')}, {_plural(n['clips'], 'clip')} "
             f"({n['human']} human-made, {n['ai']} AI-generated), {n['ratings']} ratings analysed. "
             f"{enrolment_sentence(participants)}</li>"]
    if single_label_note(trials):
        items.append(f"<li>{single_label_note(trials)}</li>")
    for r in prim.itertuples():
        if pd.isna(r.estimate):
            items.append(f"<li><b>{html.escape(r.outcome)}</b>: not estimated.</li>")
            continue
        # The planned primary outcome is tested at alpha; the others are judged by the adjusted p
        # (study file: the correction is for the secondary outcomes).
        primary = r.outcome in primary_names
        p_adj = r.p if primary else getattr(r, corr_col)
        if p_adj < plan.alpha:
            verdict = "human-made higher" if r.estimate > 0 else "AI-generated higher"
        elif bool(r.equivalent):
            verdict = "equivalent within the smallest effect of interest"
        else:
            verdict = "no clear difference (neither a difference nor equivalence shown)"
        items.append(
            f"<li><b>{html.escape(r.outcome)}</b>: human &minus; AI = {format_number(r.estimate)} "
            f"[{format_number(r.ci_low)}, {format_number(r.ci_high)}], d = {format_number(r.d)}, "
            f"{p_equals(r.p)}"
            + (f", {p_equals(p_adj, 'adjusted p')}" if not primary and len(prim) > 1 and corr_col != "p" else "")
            + f"{' (primary outcome)' if primary else ''}: {verdict}.</li>")
    if "dprime" in results and len(results["dprime"]):
        dp = results["dprime"].iloc[0]
        items.append(f"<li>Telling AI from human clips: mean d' = {format_number(dp['mean_dprime'])} "
                     f"[{format_number(dp['ci_low'])}, {format_number(dp['ci_high'])}], {p_equals(dp['p'])}.</li>")
    return f"<ul>{''.join(items)}</ul>"


def build_report(trials: pd.DataFrame, *, study: Any = None, participants: pd.DataFrame | None = None,
                 excluded: pd.DataFrame | None = None, outcomes: list[str] | None = None, plan: Any = None,
                 title: str | None = None, interim: bool = False, results: Mapping[str, pd.DataFrame] | None = None,
                 scales: Mapping[str, Any] | None = None, codebook: pd.DataFrame | None = None,
                 include_pilot: bool | None = None,
                 data_source: str | None = None) -> str:
    """The whole report as one self-contained HTML string (plotly.js inlined once, no network).

    Pass `results` from `analyze` to avoid computing twice. `interim=True` adds a banner saying
    the data collection is still running. Every section in SECTIONS is present, by its id; a
    section whose data were not collected says so instead of showing a chart."""
    import plotly.offline

    if isinstance(trials, pd.DataFrame) and trials.empty:
        raise nothing_left_error(excluded, participants)
    trials = check_trials(trials)
    p = Plan.from_any(plan, study)
    if results is None:
        results = analyze(trials, outcomes=outcomes, plan=p, study=study, excluded=excluded, scales=scales,
                          codebook=codebook)
    prim = results["primary"]
    outcomes = list(prim["outcome"])
    chart_outcomes = main_outcomes(outcomes)
    skipped = {}
    for r in results["skipped"].itertuples():
        skipped.setdefault(r.section, r.reason)
    title = title or (f"{getattr(study, 'title', None) or getattr(study, 'id', None)}: results" if study is not None
                      else "Kuleshov results")
    body: dict[str, str] = {}

    body["summary"] = _summary_html(trials, results, p, participants)
    body["methods"] = methods_html(trials, results, p, include_pilot=include_pilot)
    ex = results.get("exclusions")
    body["exclusions"] = "<p>" + exclusion_sentence(ex) + "</p>" + (
        table_html(exclusion_counts(ex), caption="Exclusions by rule")
        + table_html(ex, caption="Every excluded participant and trial") if ex is not None and len(ex) else "")
    body["descriptives"] = ('<p class="muted">Means over all ratings; these intervals treat ratings as independent '
                            'and describe the data, they do not test.</p>' + table_html(results["descriptives"]))
    body["primary"] = table_html(prim, columns=[
        "outcome", "model_used", "n_participants", "n_stimuli", "nobs", "estimate", "se", "df", "t", "p", "p_sided",
        "ci_low", "ci_high", "d", "d_ci_low", "d_ci_high", "p_holm", "p_bh", "tost_p", "equivalent", "singular"],
        table_id="primary-table")
    if "naive" in results and len(results["naive"]):
        body["primary"] += ("<h3>Shortcut analyses (for comparison only)</h3>" + table_html(results["naive"]))
    body["forest"] = (chart_html(charts.forest_plot(prim, units="d", sesoi=p.sesoi), "chart-forest-d")
                      + chart_html(charts.forest_plot(prim, units="raw"), "chart-forest-raw"))
    body["distributions"] = "".join(
        chart_html(charts.distributions_by_source(trials, o), f"chart-distributions-{o}") for o in chart_outcomes)

    if "pairs" in results and len(results["pairs"]):
        pr = results["pairs"]
        body["pairs"] = "".join(
            chart_html(charts.pair_slopes(pr[pr["outcome"] == o], o), f"chart-pairs-{o}") for o in chart_outcomes
            if (pr["outcome"] == o).any()) + table_html(pr[pr["outcome"].isin(chart_outcomes)],
                                                          caption="Human minus AI within each pair")
    if "label" in results and len(results["label"]):
        body["label"] = "".join(chart_html(charts.label_means(trials, o), f"chart-label-{o}")
                                for o in chart_outcomes) + table_html(results["label"].drop(columns="formula", errors="ignore"))
    if "sdt" in results or "accuracy_by_clip" in results:
        parts = []
        if "dprime" in results:
            parts.append(table_html(results["dprime"], caption="d' against zero (one-sample t-test)"))
        if "sdt" in results:
            parts.append(chart_html(charts.dprime_distribution(results["sdt"], results.get("dprime")), "chart-dprime"))
        if "accuracy_by_clip" in results:
            parts.append(chart_html(charts.accuracy_by_clip(results["accuracy_by_clip"]), "chart-accuracy"))
        if "confidence_accuracy" in results:
            parts.append(chart_html(charts.confidence_accuracy(results["confidence_accuracy"]), "chart-confidence"))
            parts.append(table_html(results["confidence_accuracy"], caption="Accuracy by confidence"))
        if "confidence_accuracy_test" in results:
            parts.append(table_html(results["confidence_accuracy_test"],
                                    caption="Confidence and correctness: logistic regression, SEs clustered by participant"))
        if "judged_ai" in results and len(results["judged_ai"]):
            parts.append(table_html(results["judged_ai"],
                                    caption="Ratings of clips judged AI-made, apart from their true source"))
        body["attribution"] = "".join(parts)
    if "valence-arousal" not in skipped:
        body["valence-arousal"] = chart_html(charts.valence_arousal_plane(trials), "chart-valence-arousal")
    if "emotions" not in skipped:
        body["emotions"] = chart_html(charts.emotion_profile(trials), "chart-emotions")
    if "position_means" in results:
        body["order"] = "".join(chart_html(charts.ratings_by_position(trials, o), f"chart-order-{o}")
                                for o in chart_outcomes)
    if "reliability" in results:
        body["reliability"] = table_html(results["reliability"])
    sw = pd.DataFrame(list(software_versions().items()), columns=["software", "version"])
    body["software"] = (table_html(sw) + f'<p class="muted">Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC'
                        + (f" from {html.escape(data_source)}" if data_source else "")
                        + ". Result tables as CSV: <code>kuleshov analyze</code>.</p>")

    sections = []
    for sid, heading in SECTIONS:
        if sid in body:
            sections.append(_section(sid, heading, body[sid]))
        else:
            sections.append(_section(sid, heading, "", skipped=skipped.get(sid, "not measured in this study")))
    nav = "".join(f'<li><a href="#{sid}">{html.escape(h)}</a></li>' for sid, h in SECTIONS)
    banner = ('<div class="banner" id="interim-banner">Interim report: data collection is still running. '
              'These results are provisional and must not be used to decide when to stop.</div>' if interim else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n"
        f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{banner}\n<nav><ol>{nav}</ol></nav>\n" + "\n".join(sections)
        + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------------------
# loading and the CLI


def load_source(source: str, *, url: str | None = None, include_pilot: bool = False, version: str | None = None):
    """A study id or study file (database at `url`), a dataset folder or a trial-table CSV ->
    analysis.load.LoadedData (trials with exclusions applied, excluded rows with reasons)."""
    from analysis.load import load_trials

    return load_trials(source, include_pilot=include_pilot, url=url, version=version)


def _outcomes_arg(args: Any) -> list[str] | None:
    """--outcomes a,b,c as a list; None (the plan's or the default outcomes) when not given."""
    text = getattr(args, "outcomes", None)
    names = [o.strip() for o in str(text).split(",") if o.strip()] if text else []
    return names or None


def cli_analyze(args: Any) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; give a folder for the result tables")
    check_writable(out / "outcomes.csv", "result tables")
    data = load_source(args.study, url=getattr(args, "url", None), include_pilot=getattr(args, "include_pilot", False),
                       version=getattr(args, "version", None))
    results = analyze(data.trials, study=data.study, excluded=data.excluded, codebook=data.codebook,
                      outcomes=_outcomes_arg(args))
    paths = write_tables(results, args.out)
    print(f"wrote {len(paths)} tables to {args.out}: " + ", ".join(p.name for p in paths))
    return 0


def cli_report(args: Any) -> int:
    include_pilot = bool(getattr(args, "include_pilot", False))
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the path of the HTML file to write, e.g. {out / 'report.html'}")
    check_writable(out, "report")
    data = load_source(args.study, url=getattr(args, "url", None), include_pilot=include_pilot,
                       version=getattr(args, "version", None))
    page = build_report(data.trials, study=data.study, participants=data.participants, excluded=data.excluded,
                        codebook=data.codebook, include_pilot=include_pilot if data.pilot_known else None,
                        data_source=str(args.study), outcomes=_outcomes_arg(args),
                        interim=bool(getattr(args, "interim", False)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0

