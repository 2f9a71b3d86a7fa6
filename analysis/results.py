"""The computed results: every analysis run once, as tidy tables, for the report, the dashboard
and `kuleshov analyze`.

`analyze` returns the tables (keys listed in its docstring); `write_tables` saves them as CSV.
The HTML report (analysis.report) and its methods text (analysis.methods) only read them. The
decision of each outcome (a difference, equivalence or neither) is made here, once, so the
summary sentence, the table and the CSV cannot disagree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import charts, load
from analysis.formatting import csv_safe, plural
from study.config import check_writable
from study.errors import Problem, UserError

# Per-clip outcomes offered by the built-in instruments (study/instruments.py), in report
# order; scale scores rather than their items, so default outcomes are not item-level noise.
KNOWN_OUTCOMES = ("valence", "arousal", "dominance", "moved", "engagement", "ai_qualities")
CORRECTIONS = {"holm": ("p_holm", "Holm's step-down method"),
               "bh": ("p_bh", "the Benjamini-Hochberg false-discovery-rate method"),
               "fdr_bh": ("p_bh", "the Benjamini-Hochberg false-discovery-rate method"),
               "none": ("p", "no correction")}


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
                                     + load.did_you_mean(o, trials.columns) + "; columns are: "
                                     + ", ".join(map(str, trials.columns))) for o in missing])
        return list(dict.fromkeys(wanted))
    # A known outcome column of numbers with a few values that are not is still an outcome:
    # checked_outcomes then names those values (leaving the column out would drop it unsaid).
    # One of words (an item of type choice that a study called "moved") is not.
    candidates = [c for c in KNOWN_OUTCOMES if c in trials.columns] + list(charts.emotion_columns(trials))
    return [c for c in candidates if _numeric_with_data(trials[c]) or _mostly_numbers(trials[c])]


def _as_numbers(col: pd.Series) -> pd.Series:
    """A column of text as numbers (NaN where a cell is no number); a numeric one as it is."""
    if pd.api.types.is_numeric_dtype(col):
        return col
    return pd.to_numeric(col.astype("string").str.strip(), errors="coerce")


def _mostly_numbers(s: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or not s.notna().any():
        return False
    return bool(_as_numbers(s.dropna()).notna().mean() >= 0.5)


# Beyond this no rating scale goes; squares of such values overflow the model's sums.
MAX_ABS_OUTCOME = 1e15


def checked_outcomes(trials: pd.DataFrame, outcomes: list[str]) -> pd.DataFrame:
    """`trials` with each outcome column as numbers; a value that is not a number, not finite
    or beyond +-1e15 is an error naming its column, participant and clip (empty cells are
    missing values, which the models leave out and the methods count)."""
    problems = []
    converted = {}
    for o in outcomes:
        col = trials[o]
        if pd.api.types.is_bool_dtype(col):
            problems.append(Problem(f"outcome {o}", "holds true/false values, not numbers"))
            continue
        num = _as_numbers(col).astype(float)
        values = num.to_numpy()
        kinds = [(col.notna().to_numpy() & np.isnan(values), "is not a number"),
                 (np.isinf(values), "is not a finite number"),
                 (np.isfinite(values) & (np.abs(values) > MAX_ABS_OUTCOME), "is too large to be a rating")]
        for bad, what in kinds:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                v = col.iloc[i]
                shown = repr(v) if isinstance(v, str) else f"{float(v):g}"
                more = f" ({int(bad.sum())} values like it)" if bad.sum() > 1 else ""
                problems.append(Problem(
                    f"outcome {o}", f"{shown} (participant {trials['participant_id'].iloc[i]}, clip "
                    f"{trials['stimulus_id'].iloc[i]}) {what}{more}"))
        if num is not col:
            converted[o] = num
    if problems:
        raise UserError("outcome values that cannot be analysed; correct them in the data, or leave the cell "
                        "empty for a missing rating, or choose other outcomes with --outcomes", problems)
    return trials.assign(**converted) if converted else trials


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
                         f"({plural(int(n_people), 'participant')} and {plural(n_trials, 'trial')} "
                         f"excluded, by rule below); {hint}", problems)
    if participants is not None and len(participants):
        return UserError("nothing to analyse yet: no participant has rated a main clip ("
                         + enrolment_sentence(participants).rstrip(".") + ")")
    return UserError("nothing to analyse: the data hold no ratings of main clips")


# ---------------------------------------------------------------------------------------------
# the decision

# What the primary table's numbers say about each outcome, in the terms of the plan: a test of
# a difference at alpha (adjusted p for secondary outcomes) and the TOST for equivalence within
# the smallest effect of interest (SESOI). Both can hold at once with many ratings: a difference
# too small to matter.
DECISIONS = {
    "difference": "a difference",
    "negligible_difference": "a difference smaller than the smallest effect of interest",
    "equivalence": "equivalence within the smallest effect of interest",
    "inconclusive": "inconclusive: neither a difference nor equivalence shown",
    "not_estimated": "not estimated",
}


def decision_p(row: Any, plan: Plan, primary: bool) -> float:
    """The p the decision uses: the planned primary outcome at alpha, the others adjusted."""
    return float(row["p"] if primary else row[CORRECTIONS[plan.correction][0]])


def with_decisions(prim: pd.DataFrame, plan: Plan, primary_outcomes: list[str]) -> pd.DataFrame:
    """The primary table with a `decision` column (a key of DECISIONS) after `equivalent`."""
    out = prim.copy()
    decided = []
    for _, row in out.iterrows():
        if pd.isna(row["estimate"]):
            decided.append("not_estimated")
            continue
        p_value = decision_p(row, plan, row["outcome"] in primary_outcomes)
        significant = bool(pd.notna(p_value) and p_value < plan.alpha)
        equivalent = bool(row["equivalent"])
        decided.append("negligible_difference" if significant and equivalent else "difference" if significant
                       else "equivalence" if equivalent else "inconclusive")
    out.insert(list(out.columns).index("equivalent") + 1, "decision", decided)
    return out


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


def named_twice(names) -> list[str]:
    """The names that occur more than once, sorted (as text)."""
    names = [str(n) for n in names]
    return sorted({n for n in names if names.count(n) > 1})


def analyze(trials: pd.DataFrame, *, outcomes: list[str] | None = None, plan: Any = None, study: Any = None,
            excluded: pd.DataFrame | None = None, scales: Mapping[str, Any] | None = None,
            codebook: pd.DataFrame | None = None, bootstrap: int = 0, seed: int = 1,
            progress: Callable[[int, int, str], None] | None = None) -> dict[str, pd.DataFrame]:
    """Every result table, computed once: for the report, the dashboard and `kuleshov analyze`.

    bootstrap: parametric-bootstrap samples for the CI of d of the primary outcome(s)
    (stats.primary_test; 0: the fixed-denominator CI), seeded by `seed`; progress(done,
    total, outcome) after each sample.

    Keys (present only when the data allow): primary (with each outcome's `decision`),
    descriptives, naive, pairs, label, sdt, dprime, accuracy_by_clip, confidence_accuracy,
    confidence_accuracy_test, judged_ai, clip_means, position_means, reliability, exclusions,
    exclusion_counts; always `skipped` [section, reason] and
    `outcomes` [outcome, role]. A section whose input was not collected is listed in
    `skipped` with the reason; a UserError from an analysis is recorded there too, so one
    impossible analysis does not stop the others.
    """
    from analysis import stats

    if isinstance(trials, pd.DataFrame) and trials.empty:
        raise nothing_left_error(excluded)
    trials = load.check_trial_table(trials)
    p = Plan.from_any(plan, study)
    outcomes = list(outcomes) if outcomes else default_outcomes(trials, p)
    twice = named_twice(outcomes)
    if twice:
        raise UserError(f"outcomes named more than once: {', '.join(twice)} (each would count twice in the "
                        "correction across outcomes)")
    missing = [o for o in outcomes if o not in trials.columns]
    if missing:
        raise UserError("outcomes not in the trial table",
                        [Problem(f"outcome {o}", "no such column" + load.did_you_mean(o, trials.columns)
                                 + "; columns are: " + ", ".join(map(str, trials.columns))) for o in missing])
    if not outcomes:
        numeric = [str(c) for c in trials.columns if _numeric_with_data(trials[c])
                   and c not in ("position", "watched_share", "confidence")]
        raise UserError("no outcome to analyse: the trial table has none of the known outcome columns ("
                        + ", ".join(KNOWN_OUTCOMES) + ", emo_*); choose them with --outcomes (outcomes= in "
                        "Python)" + (f", e.g. --outcomes {','.join(numeric[:3])}" if numeric else ""))
    trials = checked_outcomes(trials, outcomes)
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
    prim = stats.primary_test(trials, outcomes, alpha=p.alpha, sesoi=p.sesoi, hypothesis=p.hypothesis,
                              bootstrap=bootstrap, seed=seed, progress=progress,
                              bootstrap_outcomes=[o for o, r in zip(outcomes, roles) if r == "primary"])
    prim.attrs["bootstrap_seed"] = seed
    res["primary"] = with_decisions(prim, p, [o for o, r in zip(outcomes, roles) if r == "primary"])
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

        def keep(key: str, fn: Callable[[], pd.DataFrame]) -> pd.DataFrame | None:
            out = attempt("attribution", fn)
            if out is not None:
                res[key] = out
            return out

        sdt = keep("sdt", lambda: attribution.sdt_per_participant(trials))
        if sdt is not None:
            keep("dprime", lambda: attribution.dprime_test(sdt))
        keep("accuracy_by_clip", lambda: attribution.accuracy_by_clip(trials))
        if "confidence" in trials.columns and trials["confidence"].notna().any():
            keep("confidence_accuracy", lambda: attribution.confidence_accuracy(trials))
            keep("confidence_accuracy_test", lambda: attribution.confidence_accuracy_test(trials))
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
        csv_safe(df).to_csv(path, index=False)
        paths.append(path)
    return paths



# ---------------------------------------------------------------------------------------------
# counts


def counts(trials: pd.DataFrame) -> dict[str, int]:
    """Participants, clips (by source) and ratings of a trial table.

    A clip is counted by every source it appears under, not by its first row: `both` counts the
    clips rated under both sources (source varies within the clip), which are neither human-made
    nor AI-generated only."""
    rated = trials.dropna(subset=["stimulus_id"])
    sources = rated.dropna(subset=["source"]).groupby("stimulus_id", observed=True)["source"].agg(frozenset)
    return {"participants": int(trials["participant_id"].nunique()), "clips": int(rated["stimulus_id"].nunique()),
            "human": int((sources == frozenset({"human"})).sum()), "ai": int((sources == frozenset({"ai"})).sum()),
            "both": int((sources.map(len) > 1).sum()), "ratings": len(rated)}


def clips_phrase(n: Mapping[str, int]) -> str:
    """'40 clips (20 human-made, 20 AI-generated)', naming clips seen under both sources."""
    parts = [f"{n['human']} human-made", f"{n['ai']} AI-generated"]
    if n.get("both"):
        parts.append(f"{n['both']} under both sources")
    return f"{plural(n['clips'], 'clip')} ({', '.join(parts)})"


# Exclusion reasons name the measured value (e.g. "watched 58% of the clip (at least 80%
# required)"); the methods count them by the rule that was broken.
_REASON_RULES = [
    (re.compile(r"^watched .* \(at least (.+) required\)$"), "watched less than {0} of the clip"),
    (re.compile(r"^failed \d+ attention checks? \(at most 0 allowed\)$"), "failed an attention check (none allowed)"),
    (re.compile(r"^failed \d+ attention checks? \(at most (\d+) allowed\)$"), "failed more than {0} attention checks"),
    (re.compile(r"^completed .* planned clips \(.*at least (.+) required\)$"), "completed less than {0} of the planned clips"),
    (re.compile(r"^pilot participant"), "pilot participant"),
    # how the clip was seen and heard (analysis.scoring.PLAYBACK_LIMITS / PLAYBACK_FLAGS)
    (re.compile(r"^.* \((\w+); at most (.+) allowed\)$"), "{0} above {1}"),
    (re.compile(r"^clip .* \((skipped|replayed)\)$"), "{0}"),
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


def enrolment_sentence(participants: pd.DataFrame | None) -> str:
    """'30 people started the study (completed 25, in progress 3, withdrawn 2); median duration 14.2 min.'"""
    if participants is None or len(participants) == 0 or "status" not in participants.columns:
        return ""
    counts = participants["status"].fillna("unknown").astype(str).value_counts()
    who = "person" if len(participants) == 1 else "people"
    text = (f"{len(participants)} {who} started the study ("
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + ")")
    if "duration_s" in participants.columns and participants["duration_s"].notna().any():
        median_s = participants["duration_s"].median()
        # Short pilots and simulated sessions take seconds; '0.0 min' would read as missing.
        text += (f"; median time to complete {median_s / 60:.1f} min" if median_s >= 60
                 else f"; median time to complete {median_s:.0f} s")
    return text + "."


# ---------------------------------------------------------------------------------------------
# the CLI


def load_source(args: Any) -> load.LoadedData:
    """The data named on the command line: a study id or study file (database at --url), a
    dataset folder or a trial-table CSV (its columns renamed by --columns), exclusions applied."""
    data = load.load_trials(args.study, include_pilot=bool(getattr(args, "include_pilot", False)),
                            url=getattr(args, "url", None), **csv_options(args),
                            version=getattr(args, "version", None))
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    return data


def csv_options(args: Any) -> dict[str, Any]:
    """load.load_trials's CSV options (columns, sources, rows, pivot, wide) from the command line's
    --columns, --sources, --rows, --pivot, --wide and --clips (each None when not given)."""
    return {"columns": _columns_arg(args), "sources": _sources_arg(args), "rows": _rows_arg(args),
            "pivot": _pivot_arg(args), "wide": _wide_arg(args)}


def _wide_arg(args: Any) -> tuple[str, Path] | None:
    """--wide "{clip}_{outcome}" with --clips manifest.csv as ('{clip}_{outcome}', Path('manifest.csv'))."""
    pattern, clips = getattr(args, "wide", None), getattr(args, "clips", None)
    if not pattern and not clips:
        return None
    if not (pattern and clips):
        raise UserError("--wide and --clips go together: --wide names the columns ({clip} and {outcome} in a "
                        "pattern), --clips the file with each clip's source (a study's manifest.csv)")
    return str(pattern), Path(clips)


def _pivot_arg(args: Any) -> tuple[str, str] | None:
    """--pivot "Zone Name=Response" as ('Zone Name', 'Response')."""
    text = getattr(args, "pivot", None)
    if not text:
        return None
    name, sep, value = (s.strip() for s in str(text).partition("="))
    if not sep or not name or not value or "," in text:
        raise UserError(f"--pivot takes one NAME=VALUE pair of their columns, e.g. \"Zone Name=Response\"; "
                        f"got {str(text).strip()!r}")
    return name, value


def _pairs(text: str, usage: str, left_ok=bool) -> list[tuple[str, str]]:
    """'a=b,c=d' as [('a', 'b'), ('c', 'd')], each side trimmed; a part without '=', with an empty
    side or whose left side left_ok refuses raises UserError(f"{usage}; got 'part'")."""
    out = []
    for part in str(text).split(","):
        left, sep, right = (s.strip() for s in part.partition("="))
        if not sep or not left or not right or not left_ok(left):
            raise UserError(f"{usage}; got {part.strip()!r}")
        out.append((left, right))
    return out


def _rows_arg(args: Any) -> dict[str, list[str]] | None:
    """--rows "Zone Type=response_slider_endValue,Zone Name=valence" as {column: [values]}; a
    column given twice keeps either value."""
    text = getattr(args, "rows", None)
    if not text:
        return None
    wanted: dict[str, list[str]] = {}
    for col, value in _pairs(text, "--rows takes COLUMN=VALUE pairs separated by commas (their column names), "
                             "e.g. \"Zone Type=response_slider_endValue\""):
        wanted.setdefault(col, []).append(value)
    return wanted


def _columns_arg(args: Any) -> dict[str, str] | None:
    """--columns participant_id=subject,stimulus_id=clip as {'participant_id': 'subject', ...}."""
    text = getattr(args, "columns", None)
    if not text:
        return None
    mapping: dict[str, str] = {}
    for ours, theirs in _pairs(text, "--columns takes OURS=THEIRS pairs separated by commas, e.g. "
                               "participant_id=subject,stimulus_id=clip,source=clip_source"):
        if ours in mapping:
            raise UserError(f"--columns names {ours} twice ({ours}={mapping[ours]} and {ours}={theirs}); give one "
                            "column for it")
        mapping[ours] = theirs
    return mapping


def _sources_arg(args: Any) -> dict[str, str] | None:
    """--sources human=real,human=film,ai=generated as {'real': 'human', 'film': 'human', 'generated': 'ai'}."""
    text = getattr(args, "sources", None)
    if not text:
        return None
    mapping: dict[str, str] = {}
    for ours, theirs in _pairs(text, "--sources takes human=THEIRS and ai=THEIRS pairs separated by commas, e.g. "
                               "human=real,ai=generated", left_ok=lambda ours: ours.lower() in load.SOURCES):
        key = theirs.casefold()
        if key in mapping and mapping[key] != ours.lower():
            raise UserError(f"--sources recodes {theirs!r} both as {mapping[key]} and as {ours.lower()}")
        mapping[key] = ours.lower()
    return mapping


def outcomes_arg(args: Any) -> list[str] | None:
    """--outcomes a,b,c as a list; None (the plan's or the default outcomes) when not given."""
    text = getattr(args, "outcomes", None)
    names = [o.strip() for o in str(text).split(",") if o.strip()] if text else []
    twice = named_twice(names)
    if twice:
        # analysed twice, the same outcome would also count twice in the correction across outcomes
        raise UserError(f"--outcomes names {', '.join(twice)} more than once; give each outcome once")
    return names or None


# `--bootstrap` when not given: samples for d's CI of the primary outcome, on data up to
# BOOTSTRAP_MAX_RATINGS ratings (above, each refit takes seconds: the default is off, with a note)
BOOTSTRAP_DEFAULT = 200
BOOTSTRAP_MAX_RATINGS = 20_000


def bootstrap_arg(args: Any, trials: pd.DataFrame) -> dict[str, Any]:
    """analyze()'s bootstrap, seed and progress from --bootstrap and --seed (see BOOTSTRAP_DEFAULT)."""
    from analysis.progress import ProgressBar

    n = getattr(args, "bootstrap", None)
    if n is None:
        n = BOOTSTRAP_DEFAULT if len(trials) <= BOOTSTRAP_MAX_RATINGS else 0
        if not n:
            print(f"note: {len(trials)} ratings: d's CI treats its denominator as known (no bootstrap by default "
                  f"above {BOOTSTRAP_MAX_RATINGS:,} ratings); --bootstrap N makes a parametric-bootstrap CI",
                  file=sys.stderr)
    n = int(n)
    if n == 1 or n < 0:
        raise UserError(f"--bootstrap must be 0 (none) or at least 2 samples; got {n}")
    return {"bootstrap": n, "seed": int(getattr(args, "seed", 1) or 1),
            "progress": ProgressBar("bootstrap of d", "samples") if n else None}


def cli_analyze(args: Any) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; give a folder for the result tables")
    check_writable(out / "outcomes.csv", "result tables")
    data = load_source(args)
    results = analyze(data.trials, study=data.study, excluded=data.excluded, codebook=data.codebook,
                      outcomes=outcomes_arg(args), **bootstrap_arg(args, data.trials))
    from analysis import trace_report, traces

    tr_frames, mk_frames, _ = trace_report.time_courses_for_source(args.study, getattr(args, "url", None))
    primary = getattr(getattr(data.study, "analysis", None), "primary_outcome", None)
    results = {**results, **trace_report.result_tables(data.trials, tr_frames, mk_frames, primary=primary,
                                                       neutral=traces.neutral_point(data.study))}
    paths = write_tables(results, args.out)
    print(f"wrote {len(paths)} tables to {args.out}: " + ", ".join(p.name for p in paths))
    return 0

