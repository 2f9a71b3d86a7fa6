"""From answers to analysable scores: the trial table, reverse keying, scales, reliability, exclusions.

Decisions, stated once:

- Item columns in the trial table keep the raw answers, never reversed, so the data stay
  what the participant chose. Reverse keying (min + max - value) happens only inside scale
  scores and reliability; no `<item>_r` columns are added.
- A scale score is the mean of its items after reverse keying, computed when at least half
  of the scale's items were answered on that trial (otherwise missing).
- Scales are the ones declared by the built-in instruments (`study.instruments.scales_for`,
  e.g. `moved`, `engagement`, `engagement_focus`), for the items present in `items_meta`,
  plus one per `subscale` of other items (e.g. custom items) that no declared scale covers,
  named after the subscale (or `<instrument>_<subscale>` if that name is taken).
- A declared scale is scored only when every one of its items is in `items_meta`. A study
  that asks a subset of a built-in instrument (`{name: moved, items: [moved_1, moved_2]}`)
  gets no `moved` score: the mean of some items is not the declared scale, and the codebook
  says so (`study.instruments.unscored_scales`). Nor do the subscales of a built-in
  instrument become scales of their own from the items that were asked.
- Only per-clip answers (rows with a stimulus_id) enter the trial table; session-level
  answers (mood, demographics) stay in the long table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from analysis.tables import require_columns
from study import item_types
from study.errors import Problem, UserError

__all__ = ["score_items", "add_scale_scores", "default_scales", "reliability", "cronbach_alpha", "apply_exclusions",
           "TRIAL_KEYS", "TRIAL_ATTRIBUTES", "EXCLUDED_COLUMNS", "RELIABILITY_COLUMNS"]

TRIAL_KEYS = ["participant_id", "stimulus_id"]
TRIAL_ATTRIBUTES = ["source", "pair_id", "label_condition", "position", "watched_share", "is_pilot"]
LONG_COLUMNS = [*TRIAL_KEYS, *TRIAL_ATTRIBUTES, "item_id", "value", "value_text"]
EXCLUDED_COLUMNS = ["level", "participant_id", "stimulus_id", "reason"]
RELIABILITY_COLUMNS = ["scale", "n_items", "n", "alpha", "ci_low", "ci_high"]


def _missing_columns(df, columns, what):
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{what} must be a table (pandas DataFrame)")
    require_columns(df, columns, f"{what}: columns missing")


# --------------------------------------------------------------------------------------
# item metadata


def _item_meta(items_meta: pd.DataFrame) -> pd.DataFrame:
    """Item rows of a codebook with name, instrument, response type, reverse, subscale, min, max.

    Accepts the codebook of study.instruments.codebook (response type in `response_type`,
    no min/max: taken from the built-in item declarations) or a plain table with `type`,
    `min` and `max`.
    """
    _missing_columns(items_meta, ["name"], "item metadata (codebook)")
    m = items_meta.copy()
    rtype = "response_type" if "response_type" in m.columns else "type"
    m["response_type"] = m[rtype].astype("string") if rtype in m.columns else pd.NA
    for col, default in (("instrument", ""), ("subscale", ""), ("reverse", False)):
        if col not in m.columns:
            m[col] = default
    m["reverse"] = m["reverse"].map(lambda v: str(v).strip().lower() in ("true", "1", "yes")
                                    if not isinstance(v, bool | np.bool_) else bool(v))
    m["subscale"] = m["subscale"].fillna("").astype(str).str.strip()
    for col in ("min", "max"):
        m[col] = pd.to_numeric(m[col], errors="coerce") if col in m.columns else np.nan
    need = m["min"].isna() | m["max"].isna()
    if need.any():
        from study.instruments import builtin_item

        for idx in m.index[need]:
            it = builtin_item(str(m.at[idx, "name"]))
            if it is not None:
                if pd.isna(m.at[idx, "min"]):
                    m.at[idx, "min"] = it.min
                if pd.isna(m.at[idx, "max"]):
                    m.at[idx, "max"] = it.max
    # scale-score and trial-column rows of a codebook are not items
    m = m[~m["response_type"].isin(["scale_mean", ""]) & m["response_type"].notna()]
    return m.drop_duplicates("name").set_index("name", drop=False)


def default_scales(items_meta: pd.DataFrame) -> dict[str, list[str]]:
    """Scales for the items in `items_meta`: declared built-in scales plus uncovered subscales."""
    from study.instruments import INSTRUMENTS, scales_for

    m = _item_meta(items_meta)
    names = set(m.index)
    scales = {sid: list(sc.items) for sid, sc in scales_for(None).items() if set(sc.items) <= names}
    covered = {frozenset(v) for v in scales.values()}
    # built-in subscales are declared scales: scored whole (above) or not at all
    sub = m[(m["subscale"] != "") & ~m["instrument"].isin([k for k, ins in INSTRUMENTS.items() if ins.scales])]
    for (instrument, subscale), g in sub.groupby(["instrument", "subscale"], sort=False):
        items = list(g.index)
        if frozenset(items) in covered:
            continue
        name = subscale if subscale not in names and subscale not in scales else f"{instrument}_{subscale}"
        scales[name] = items
    return scales


def _reversed(values: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    out = values.astype(float).copy()
    for item in out.columns:
        if item in meta.index and meta.at[item, "reverse"]:
            lo, hi = meta.at[item, "min"], meta.at[item, "max"]
            if pd.isna(lo) or pd.isna(hi):
                raise UserError(f"item {item} is reverse-keyed but its scale range is unknown",
                                [Problem(f"codebook row {item}", "needs min and max")])
            out[item] = lo + hi - out[item]
    return out


# --------------------------------------------------------------------------------------
# long table -> trial table


def score_items(long: pd.DataFrame, items_meta: pd.DataFrame,
                scales: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per participant x clip with the raw item columns and the scale scores.

    Numeric answers come from `value`, choice and text answers (e.g. judged_source) from
    `value_text`. Trial attributes (source, pair, label condition, position, watched
    share, pilot flag) are the first non-missing value per trial. `scales` overrides
    `default_scales(items_meta)`. Two answers to the same item on the same trial are an
    error (listed), never silently dropped.
    """
    _missing_columns(long, LONG_COLUMNS, "the long table")
    meta = _item_meta(items_meta)
    d = long[long["stimulus_id"].notna()].copy()
    dup = d.duplicated([*TRIAL_KEYS, "item_id"], keep=False)
    if dup.any():
        ex = d.loc[dup, [*TRIAL_KEYS, "item_id"]].drop_duplicates().head(10)
        raise UserError("some items were answered twice on the same trial; resolve before scoring",
                        [Problem(f"participant {r.participant_id}, clip {r.stimulus_id}", f"item {r.item_id}")
                         for r in ex.itertuples()])
    keys = d[TRIAL_KEYS].drop_duplicates()
    attrs = d.groupby(TRIAL_KEYS, sort=False)[TRIAL_ATTRIBUTES].first().reset_index()
    trials = keys.merge(attrs, on=TRIAL_KEYS, how="left")
    numeric_types = item_types.numeric_type_names()  # declared once, in study/item_types.py
    numeric_items = [i for i in d["item_id"].dropna().unique()
                     if (i in meta.index and meta.at[i, "response_type"] in numeric_types)
                     or (i not in meta.index and d.loc[d["item_id"] == i, "value"].notna().any())]
    is_num = d["item_id"].isin(numeric_items)
    value = pd.to_numeric(d["value"], errors="coerce")
    num = d[is_num].assign(value=value[is_num])
    txt = d[~is_num & d["item_id"].notna()]
    if len(num):
        wide = num.pivot(index=TRIAL_KEYS, columns="item_id", values="value").reset_index()
        trials = trials.merge(wide, on=TRIAL_KEYS, how="left")
    if len(txt):
        wide = txt.pivot(index=TRIAL_KEYS, columns="item_id", values="value_text").reset_index()
        trials = trials.merge(wide, on=TRIAL_KEYS, how="left")
    trials.columns.name = None
    if "confidence" in trials.columns:
        trials["confidence"] = pd.to_numeric(trials["confidence"], errors="coerce")

    trials = add_scale_scores(trials, items_meta=items_meta, scales=scales)
    return trials.sort_values(["participant_id", "position", "stimulus_id"], kind="stable").reset_index(drop=True)


def add_scale_scores(trials: pd.DataFrame, study=None, *, items_meta: pd.DataFrame | None = None,
                     scales: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """The trial table with one column per scale score (mean after reverse keying, >= half answered).

    Items and scales come from `items_meta` (a codebook) if given, else from the study's
    codebook (study.instruments.codebook(study); every built-in instrument when study is
    None). A scale none of whose items is in the table is skipped; an existing column of
    that name is then left as it is (e.g. a CSV that already carries the score), otherwise
    it is recomputed from the items.
    """
    if items_meta is None:
        from study.instruments import codebook

        items_meta = codebook(study)
    meta = _item_meta(items_meta)
    scales = default_scales(items_meta) if scales is None else dict(scales)
    out = trials.copy()
    for name, items in scales.items():
        present = [i for i in items if i in out.columns]
        if not present:
            continue
        if name in items or name in TRIAL_KEYS or name in TRIAL_ATTRIBUTES:
            raise UserError(f"scale {name} has the same name as one of its items or a trial column")
        vals = _reversed(out[present].apply(pd.to_numeric, errors="coerce"), meta)
        answered = vals.notna().sum(axis=1)
        out[name] = vals.mean(axis=1, skipna=True).where(answered * 2 >= len(items))
    return out


# --------------------------------------------------------------------------------------
# reliability


def cronbach_alpha(items: pd.DataFrame, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Cronbach's alpha of complete rows with Feldt's (1965) F-based interval.

    alpha = k/(k-1) (1 - sum of item variances / variance of the sum). Feldt: with
    n rows and k items, (1 - alpha_pop)/(1 - alpha) ~ F(n-1, (n-1)(k-1)), so the interval
    is 1 - (1 - alpha) F_{upper}, 1 - (1 - alpha) F_{lower}. Returns (alpha, lo, hi, n).
    """
    x = items.dropna().to_numpy(float)
    n, k = x.shape
    if k < 2 or n < 2:
        return np.nan, np.nan, np.nan, n
    total_var = x.sum(axis=1).var(ddof=1)
    if total_var == 0:
        return np.nan, np.nan, np.nan, n
    a = k / (k - 1) * (1 - x.var(axis=0, ddof=1).sum() / total_var)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    g = 1 - confidence
    lo = 1 - (1 - a) * stats.f.ppf(1 - g / 2, df1, df2)
    hi = 1 - (1 - a) * stats.f.ppf(g / 2, df1, df2)
    return float(a), float(lo), float(hi), n


def reliability(trials: pd.DataFrame, scales: Mapping[str, list[str]] | None = None,
                items_meta: pd.DataFrame | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Cronbach's alpha per scale on the participant x clip rows, with Feldt's CI.

    Reverse-keyed items are reversed first when `items_meta` says so (without it the
    columns are used as given). Rows missing any item of the scale are left out (n says
    how many were used). The rows are ratings, several per participant; the interval
    treats them as independent and is therefore somewhat too narrow. Scales with fewer
    than two items in the data get alpha missing.
    """
    if scales is None:
        if items_meta is None:
            raise UserError("reliability needs the scales (or the codebook to derive them from)")
        scales = default_scales(items_meta)
    meta = _item_meta(items_meta) if items_meta is not None else pd.DataFrame(
        columns=["reverse", "min", "max"])
    rows = []
    for name, items in scales.items():
        present = [i for i in items if i in trials.columns]
        if not present:
            continue
        vals = trials[present].apply(pd.to_numeric, errors="coerce")
        if len(meta):
            vals = _reversed(vals, meta)
        a, lo, hi, n = cronbach_alpha(vals, confidence)
        rows.append({"scale": name, "n_items": len(present), "n": n, "alpha": a, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)


# --------------------------------------------------------------------------------------
# exclusions


def _rule(rules, name):
    if rules is None:
        return None
    if isinstance(rules, Mapping):
        return rules.get(name)
    return getattr(rules, name, None)


def apply_exclusions(trials: pd.DataFrame, participants: pd.DataFrame | None, rules,
                     attention: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the study file's exclusion rules; return (kept trials, what was excluded and why).

    rules: the study's `exclusions` section (object or dict) with min_watched_share
    (trial level), max_failed_attention_checks, exclude_pilot, min_completion
    (participant level); a rule that is None is not applied.
    participants: participant_id, is_pilot, n_planned, n_completed, failed_attention
    (missing columns: is_pilot from the trials, n_completed from the number of trials,
    failed_attention from `attention`). attention, if given: one row per check answer
    with participant_id and `passed` (bool), overriding failed_attention.
    A participant excluded for several reasons gets one row with the reasons joined by
    "; ". Trial-level exclusions are listed only for participants who are kept. A trial
    without a recorded watched_share is kept (nothing to judge it by).
    """
    _missing_columns(trials, ["participant_id", "stimulus_id"], "the trial table")
    if participants is None:
        participants = pd.DataFrame({"participant_id": trials["participant_id"].unique()})
    _missing_columns(participants, ["participant_id"], "the participant table")
    p = participants.drop_duplicates("participant_id").set_index("participant_id")
    extra = sorted(set(trials["participant_id"]) - set(p.index), key=str)
    if extra:
        p = pd.concat([p, pd.DataFrame(index=pd.Index(extra, name="participant_id"))])
    if "is_pilot" not in p.columns or p["is_pilot"].isna().any():
        from_trials = trials.groupby("participant_id")["is_pilot"].first() if "is_pilot" in trials else None
        base = p["is_pilot"] if "is_pilot" in p.columns else pd.Series(np.nan, index=p.index, dtype=object)
        p["is_pilot"] = base.fillna(from_trials) if from_trials is not None else base
    counts = trials.groupby("participant_id").size()
    if "n_completed" not in p.columns:
        p["n_completed"] = np.nan
    p["n_completed"] = pd.to_numeric(p["n_completed"], errors="coerce").fillna(counts).fillna(0)
    if attention is not None:
        _missing_columns(attention, ["participant_id", "passed"], "the attention-check table")
        failed = (~attention["passed"].astype(bool)).groupby(attention["participant_id"]).sum()
        p["failed_attention"] = failed.reindex(p.index).fillna(0)
    elif "failed_attention" not in p.columns:
        p["failed_attention"] = np.nan

    min_share = _rule(rules, "min_watched_share")
    max_failed = _rule(rules, "max_failed_attention_checks")
    exclude_pilot = _rule(rules, "exclude_pilot")
    min_completion = _rule(rules, "min_completion")

    reasons: dict[object, list[str]] = {}
    for pid, r in p.iterrows():
        why = []
        pilot = r.get("is_pilot")
        if exclude_pilot and pd.notna(pilot) and str(pilot).strip().lower() in ("true", "1", "1.0", "yes"):
            why.append("pilot participant (the study excludes pilot runs)")
        fa = r.get("failed_attention")
        if max_failed is not None and pd.notna(fa) and fa > max_failed:
            why.append(f"failed {int(fa)} attention check{'s' if fa != 1 else ''} "
                       f"(at most {int(max_failed)} allowed)")
        planned = pd.to_numeric(r.get("n_planned"), errors="coerce") if "n_planned" in p.columns else np.nan
        if min_completion is not None and pd.notna(planned) and planned > 0:
            share = r["n_completed"] / planned
            if share < min_completion - 1e-12:
                why.append(f"completed {int(r['n_completed'])} of {int(planned)} planned clips "
                           f"({_pct_below(share)}; at least {min_completion:.0%} required)")
        if why:
            reasons[pid] = why
    out_rows = [{"level": "participant", "participant_id": pid, "stimulus_id": None, "reason": "; ".join(why)}
                for pid, why in reasons.items()]
    keep = ~trials["participant_id"].isin(list(reasons))
    # Trial-level rules, by row number (the trial table's index need not be unique).
    keep = keep.to_numpy(dtype=bool, copy=True)
    trial_why: dict[int, list[str]] = {}
    if min_share is not None and "watched_share" in trials.columns:
        share = pd.to_numeric(trials["watched_share"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        for i in np.flatnonzero(keep & (share < min_share)):
            trial_why.setdefault(i, []).append(
                f"watched {_pct_below(share[i])} of the clip (at least {min_share:.0%} required)")
    for column, rule, what, unit in PLAYBACK_LIMITS:
        limit = _rule(rules, rule)
        if limit is None or column not in trials.columns:
            continue  # not recorded: nothing to judge the trial by (like a missing watched_share)
        value = pd.to_numeric(trials[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        for i in np.flatnonzero(keep & (value > limit)):
            trial_why.setdefault(i, []).append(
                f"{what} {_amount(value[i], unit)} ({column}; at most {_amount(limit, unit)} allowed)")
    for column, rule, what in PLAYBACK_FLAGS:
        if not _rule(rules, rule) or column not in trials.columns:
            continue
        flag = np.array([pd.notna(v) and str(v).strip().lower() in ("true", "1", "1.0", "yes") for v in trials[column]],
                        dtype=bool)
        for i in np.flatnonzero(keep & flag):
            trial_why.setdefault(i, []).append(f"{what} ({column})")
    for i in sorted(trial_why):
        out_rows.append({"level": "trial", "participant_id": trials["participant_id"].iloc[i],
                         "stimulus_id": trials["stimulus_id"].iloc[i], "reason": "; ".join(trial_why[i])})
    keep[list(trial_why)] = False
    excluded = pd.DataFrame(out_rows, columns=EXCLUDED_COLUMNS)
    return trials[keep].copy(), excluded


# Trial-level rules on how a clip was seen and heard: (trials column, exclusions rule, what
# the reason says, unit). Each reason names its column, and the report counts them by it.
PLAYBACK_LIMITS = [
    ("seconds_hidden", "max_seconds_hidden", "page hidden or out of focus for", "s"),
    ("share_muted", "max_share_muted", "played muted or at volume 0 for", "share"),
    ("seconds_stalled", "max_seconds_stalled", "playback stalled for", "s"),
    ("seconds_offline", "max_seconds_offline", "offline for", "s"),
    ("load_ms", "max_load_ms", "clip took", "ms"),
    ("play_count", "max_play_count", "clip started", "times"),
]
PLAYBACK_FLAGS = [
    ("skipped", "exclude_skipped", "clip failed to play and was skipped"),
    ("replayed", "exclude_replayed", "clip was played more than once"),
]


def _amount(value: float, unit: str) -> str:
    if unit == "share":
        return f"{float(value):.0%}" if float(value) * 100 == round(float(value) * 100) else f"{float(value):.1%}"
    if unit in ("ms", "times"):
        return f"{float(value):.0f} {unit}"
    return f"{float(value):.1f} s"


def _pct_below(share: float) -> str:
    """A share that failed a threshold, rounded down: 0.797 is '79%', never the '80%' it fell short of."""
    return f"{math.floor(round(float(share) * 100, 6)):.0f}%"
