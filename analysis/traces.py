"""Continuous ratings over time: resampling, mean curves, agreement, per-trial summaries, the
peak-end model and human vs AI on the summaries.

Input is the long table of `analysis.load.load_traces` (TRACE_COLUMNS): one row per sample,
stamped with the video's time, so pauses, stalls and seeks do not shift it. Every function
takes and returns tidy DataFrames with fixed column names.

Choices, stated once (the report's text repeats them):

* Resampling (`resample`). Each trial's samples are ordered by video time; samples at the
  same video time (a pause, a stall, a re-watched stretch) are averaged. Grid points are
  interpolated linearly between neighbouring samples, but never across a gap longer than
  `max_gap_s` (default 1 s: ten missed samples at 10 Hz) and never further than half of it
  beyond the first or last sample: there the value is missing, not invented. Two grids: seconds
  (0, step, 2 step ... up to the clip's duration) and normalised (`points` points from 0 to 1
  of each trial's clip duration), the second for comparing clips of different lengths.
* Partial traces (the trial was restarted by a reload, `partial` = True) are kept by
  `resample` with their flag, and left out of the curves, the agreement and the models by
  default (`include_partial=False`): a restarted trial shows the clip again, so its trace mixes
  a first and a second viewing. Traces covering less than `min_coverage` (default 0.8) of the
  grid are left out of the same analyses, with the reason in `trial_summaries`.
* Mean curves (`mean_curves`): pointwise 95% t-intervals across participants. By source, each
  participant's traces of that source are first averaged on the normalised grid, so every
  participant counts once whatever the number of clips; by clip, the traces of its raters.
  Participants are the independent units, so the interval is across them (a bootstrap over
  participants, `method="bootstrap"`, gives nearly the same band with 30+ raters and is kept
  for small or skewed samples). The bands are pointwise, not simultaneous, and by source they
  ignore the sampling of clips: the crossed model (`source_tests`) is the inference.
* Agreement (`agreement`): per clip and dimension, grid points (rows) x raters (columns) on
  the seconds grid, the four ICCs CARMA reports plus Krippendorff's alpha (interval); see
  analysis.agreement.
* Summaries (`trial_summaries`), on each trial's seconds grid: peak = the highest value and
  peak_time its first time (for a rating of how positive one feels, the most positive moment;
  trough and trough_time are the lowest), end = the mean over the last `end_window_s` (1 s) of
  the clip (one last sample is too noisy), mean = the mean over the grid (a time-weighted mean,
  as the grid is regular), area = the trapezoid integral of (value - neutral) in value-seconds,
  slope = the least-squares slope of value on time, per second.
* The peak-end model (`peak_end_model`): rating ~ peak + end + mean + (1 | participant) +
  (1 | clip), REML with Satterthwaite df (analysis.lmm), the three predictors standardised
  (z-scores over the trials used) so their coefficients are comparable: does the retrospective
  rating follow peak and end beyond the mean? Pinned to lme4 in tests/test_traces.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.integrate import trapezoid

from analysis import agreement as agree
from analysis.lmm import RandomTerm, fit_crossed, fit_lmm
from analysis.tables import require_columns
from study.errors import Problem, UserError

TRACE_COLUMNS = ["participant", "trial", "clip", "source", "dimension", "video_time", "value", "clip_duration",
                 "partial"]
TRIAL_KEYS = ["participant", "trial", "clip", "source", "dimension"]
STEP_S = 0.25
POINTS = 101
MAX_GAP_S = 1.0
MIN_COVERAGE = 0.8
END_WINDOW_S = 1.0
# Samples this far past the clip's end are refused as bad data (a few tenths of a second are
# normal: the last sample is stamped as the video reports its end).
PAST_END_S = 1.0
SUMMARY_MEASURES = ("peak", "end", "mean", "slope")


# ----------------------------------------------------------------------------- checks


def check_traces(traces: pd.DataFrame) -> pd.DataFrame:
    """The traces table with its columns checked and typed; a UserError says what is wrong where."""
    if not isinstance(traces, pd.DataFrame):
        raise UserError("the traces must be a table (pandas DataFrame) in the shape of load.load_traces")
    require_columns(traces, TRACE_COLUMNS, "the traces table misses columns (see analysis.load.load_traces)")
    d = traces[TRACE_COLUMNS].copy()
    problems: list[Problem] = []
    for col in ("video_time", "value", "clip_duration"):
        num = pd.to_numeric(d[col], errors="coerce")
        bad = d[col].notna() & num.isna()
        if bad.any():
            i = d.index[bad][0]
            problems.append(Problem(f"column {col}", f"must be numeric; row {i} has {d.at[i, col]!r}"))
        d[col] = num.astype(float)
    if problems:
        raise UserError("the traces table has values that are not numbers", problems)
    inf = ~np.isfinite(d["value"]) & d["value"].notna()
    if inf.any():
        i = d.index[inf][0]
        problems.append(Problem("column value", f"row {i} is {d.at[i, 'value']} (participant "
                                f"{d.at[i, 'participant']}, trial {d.at[i, 'trial']})"))
    missing_time = d["video_time"].isna() | ~np.isfinite(d["video_time"].fillna(0))
    if missing_time.any():
        i = d.index[missing_time][0]
        problems.append(Problem("column video_time", f"row {i} has no video time (participant "
                                f"{d.at[i, 'participant']}, trial {d.at[i, 'trial']})"))
    neg = d["video_time"] < 0
    if neg.any():
        i = d.index[neg][0]
        problems.append(Problem("column video_time", f"row {i} is {d.at[i, 'video_time']:g} s: video time "
                                "cannot be negative"))
    bad_dur = d["clip_duration"].notna() & (d["clip_duration"] <= 0)
    if bad_dur.any():
        i = d.index[bad_dur][0]
        problems.append(Problem("column clip_duration", f"row {i} is {d.at[i, 'clip_duration']:g} s; a clip "
                                "lasts longer than 0 s"))
    past = d["clip_duration"].notna() & (d["video_time"] > d["clip_duration"] + PAST_END_S)
    if past.any():
        i = d.index[past][0]
        problems.append(Problem("column video_time", f"row {i} is at {d.at[i, 'video_time']:g} s, past the end "
                                f"of clip {d.at[i, 'clip']} ({d.at[i, 'clip_duration']:g} s)"))
    for col in ("participant", "clip", "dimension"):
        if d[col].isna().any():
            i = d.index[d[col].isna()][0]
            problems.append(Problem(f"column {col}", f"row {i} is empty"))
    if problems:
        raise UserError("the traces table cannot be analysed", problems)
    d["partial"] = d["partial"].fillna(False).astype(bool)
    d["source"] = d["source"].astype("string").str.strip().str.lower().astype(object)
    return d


def _durations(d: pd.DataFrame) -> pd.Series:
    """Each clip's duration: the longest stated one, else the last sample's video time."""
    stated = d.groupby("clip")["clip_duration"].max()
    seen = d.groupby("clip")["video_time"].max()
    return stated.fillna(seen)


# ----------------------------------------------------------------------------- resampling


def _grid_values(t: np.ndarray, v: np.ndarray, grid: np.ndarray, max_gap_s: float) -> np.ndarray:
    """Linear interpolation of (t, v) at the grid, missing across gaps and beyond the ends."""
    out = np.interp(grid, t, v)
    idx = np.searchsorted(t, grid, side="left")
    exact = (idx < len(t)) & (t[np.minimum(idx, len(t) - 1)] == grid)
    right = np.minimum(idx, len(t) - 1)
    left = np.maximum(idx - 1, 0)
    inside = (idx > 0) & (idx < len(t))
    gap = inside & ((t[right] - t[left]) > max_gap_s) & ~exact
    before = (idx == 0) & ~exact & ((t[0] - grid) > max_gap_s / 2)
    after = (idx >= len(t)) & ((grid - t[-1]) > max_gap_s / 2)
    out[gap | before | after] = np.nan
    return out


def _blocks(frame: pd.DataFrame, sort_col: str):
    """(key tuple, start, stop) of each trial's contiguous rows in `frame` sorted by trial and `sort_col`."""
    codes = frame.groupby(TRIAL_KEYS, sort=False, dropna=False).ngroup().to_numpy()
    if not len(codes):
        return []
    cut = np.flatnonzero(np.diff(codes)) + 1
    starts, stops = np.r_[0, cut], np.r_[cut, len(codes)]
    keys = list(frame[TRIAL_KEYS].iloc[starts].itertuples(index=False, name=None))
    return list(zip(keys, starts, stops))


def _trial_arrays(d: pd.DataFrame):
    """(key, partial, times, values) per trial: NaN values dropped, samples at the same video
    time averaged, in one grouping over the whole table."""
    partial = d.groupby(TRIAL_KEYS, dropna=False)["partial"].any()
    d = d[d["value"].notna()]
    # Sub-millisecond differences are clock noise, not different moments.
    d = d.assign(_t=d["video_time"].round(3))
    agg = (d.groupby([*TRIAL_KEYS, "_t"], sort=True, dropna=False)[["video_time", "value"]].mean()
           .reset_index())
    t_all, v_all = agg["video_time"].to_numpy(float), agg["value"].to_numpy(float)
    for key, a, b in _blocks(agg, "_t"):
        yield key, bool(partial.get(key, False)), t_all[a:b], v_all[a:b]


def resample(traces: pd.DataFrame, grid: str = "seconds", *, step_s: float = STEP_S, points: int = POINTS,
             max_gap_s: float = MAX_GAP_S) -> pd.DataFrame:
    """Every trace on a common grid: TRIAL_KEYS + partial, t (seconds, or 0..1 of the clip),
    time_s (seconds), value (NaN where the trace has no data; see the module's notes)."""
    if grid not in ("seconds", "normalised"):
        raise UserError(f"grid must be 'seconds' or 'normalised'; got {grid!r}")
    if not step_s > 0 or not max_gap_s > 0:
        raise UserError(f"step_s and max_gap_s must be positive; got {step_s!r} and {max_gap_s!r}")
    if int(points) < 2:
        raise UserError(f"a normalised grid needs at least 2 points; got {points!r}")
    d = check_traces(traces)
    durations = _durations(d)
    trial_dur = d.groupby(TRIAL_KEYS, dropna=False)["clip_duration"].max()
    keys, partials, ts, gs, vs, lens = [], [], [], [], [], []
    for key, partial, t, v in _trial_arrays(d):
        clip = key[2]
        if grid == "seconds":
            g = np.arange(0.0, durations[clip] + 1e-9, step_s)
            tt = g
        else:
            dur = trial_dur.get(key, np.nan)
            dur = durations[clip] if not np.isfinite(dur) else dur
            tt = np.linspace(0.0, 1.0, int(points))
            g = tt * dur
        keys.append(key)
        partials.append(partial)
        ts.append(tt)
        gs.append(g)
        vs.append(_grid_values(t, v, g, max_gap_s))
        lens.append(len(g))
    cols = [*TRIAL_KEYS, "partial", "t", "time_s", "value"]
    if not keys:
        return pd.DataFrame(columns=cols)
    rep = np.repeat(np.arange(len(keys)), lens)
    key_arr = np.array(keys, dtype=object)
    out = {name: key_arr[rep, i] for i, name in enumerate(TRIAL_KEYS)}
    out.update(partial=np.repeat(partials, lens), t=np.concatenate(ts), time_s=np.concatenate(gs),
               value=np.concatenate(vs))
    res = pd.DataFrame(out, columns=cols)
    trial = pd.to_numeric(res["trial"], errors="coerce")
    if trial.notna().all():  # positions, as load_traces gives them
        res["trial"] = trial.astype("int64")
    return res


def _usable(res: pd.DataFrame, include_partial: bool, min_coverage: float) -> pd.DataFrame:
    cov = res.groupby(TRIAL_KEYS, dropna=False)["value"].apply(lambda s: s.notna().mean()).rename("coverage")
    res = res.join(cov, on=TRIAL_KEYS)
    keep = res["coverage"] >= min_coverage
    if not include_partial:
        keep &= ~res["partial"]
    return res[keep]


# ----------------------------------------------------------------------------- mean curves


def _t_band(m: np.ndarray, level: float):
    """Pointwise n, mean, se and t-interval across the rows of m (participants x grid)."""
    n = np.isfinite(m).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns: NaN is the answer
        mean = np.nanmean(m, axis=0)
        sd = np.nanstd(m, axis=0, ddof=1)
    mean = np.where(n > 0, mean, np.nan)
    se = np.where(n > 1, sd, np.nan) / np.sqrt(np.maximum(n, 1))
    q = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
    return n, mean, se, mean - q * se, mean + q * se


def _boot_band(m: np.ndarray, level: float, n_boot: int, rng: np.random.Generator):
    """Like _t_band with a percentile band from resampling the rows (participants)."""
    n, mean, se, _, _ = _t_band(m, level)
    idx = rng.integers(0, m.shape[0], size=(int(n_boot), m.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boots = np.nanmean(m[idx], axis=1)
        lo = np.nanquantile(boots, (1 - level) / 2, axis=0)
        hi = np.nanquantile(boots, (1 + level) / 2, axis=0)
    return n, mean, se, np.where(n > 1, lo, np.nan), np.where(n > 1, hi, np.nan)


def mean_curves(traces: pd.DataFrame, by: str = "source", *, grid: str | None = None, method: str = "t",
                level: float = 0.95, n_boot: int = 1000, seed: int = 0, include_partial: bool = False,
                min_coverage: float = MIN_COVERAGE, step_s: float = STEP_S, points: int = POINTS,
                max_gap_s: float = MAX_GAP_S) -> pd.DataFrame:
    """Mean curve with a pointwise confidence band, by source or by clip, per dimension.

    Returns [by columns, dimension, t, time_s (by clip only), n, mean, se, ci_low, ci_high]; by
    clip the source is kept beside the clip. Grid: normalised by source (clips differ in
    length), seconds by clip, unless `grid` says otherwise. method "t" (default) or
    "bootstrap" (percentile, resampling participants)."""
    if by not in ("source", "clip"):
        raise UserError(f"mean curves are by 'source' or by 'clip'; got {by!r}")
    if method not in ("t", "bootstrap"):
        raise UserError(f"method must be 't' or 'bootstrap'; got {method!r}")
    if not 0 < level < 1:
        raise UserError(f"level must lie between 0 and 1; got {level!r}")
    grid = grid or ("normalised" if by == "source" else "seconds")
    res = _usable(resample(traces, grid, step_s=step_s, points=points, max_gap_s=max_gap_s),
                  include_partial, min_coverage)
    groups = ["source"] if by == "source" else ["clip", "source"]
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in res.groupby([*groups, "dimension"], sort=True):
        # one row per participant: their traces of this group averaged first
        wide = g.pivot_table(index="participant", columns="t", values="value", aggfunc="mean", dropna=False)
        m = wide.to_numpy(float)
        band = _boot_band(m, level, n_boot, rng) if method == "bootstrap" else _t_band(m, level)
        out = pd.DataFrame(dict(zip(["n", "mean", "se", "ci_low", "ci_high"], band)))
        out.insert(0, "t", wide.columns.to_numpy(float))
        for name, val in zip([*groups, "dimension"], key):
            out.insert(0, name, val)
        if by == "clip":
            out["time_s"] = out["t"]
        rows.append(out)
    cols = [*groups, "dimension", "t", *(["time_s"] if by == "clip" else []), "n", "mean", "se", "ci_low",
            "ci_high"]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.concat(rows, ignore_index=True)
    out["n"] = out["n"].astype(int)
    return out[cols]


# ----------------------------------------------------------------------------- agreement


def agreement(traces: pd.DataFrame, *, step_s: float = STEP_S, include_partial: bool = False,
              min_coverage: float = MIN_COVERAGE, max_gap_s: float = MAX_GAP_S) -> pd.DataFrame:
    """Agreement between the raters of each clip, per dimension, on the seconds grid.

    Rows of the matrix are grid points, columns raters (a rater's traces of the clip averaged);
    the ICCs use the points every rater has (as CARMA), alpha every point two raters have.
    Returns clip, source, dimension, n_raters, n_points, and for each of CARMA's four ICCs
    (analysis.agreement.CARMA_TYPES) its value and 95% bounds (icc2, icc2_lower, icc2_upper,
    ...), plus alpha_interval; a clip with fewer than two raters gets a note instead."""
    res = _usable(resample(traces, "seconds", step_s=step_s, max_gap_s=max_gap_s), include_partial, min_coverage)
    rows = []
    for (clip, source, dim), g in res.groupby(["clip", "source", "dimension"], sort=True):
        wide = g.pivot_table(index="t", columns="participant", values="value", aggfunc="mean", dropna=False)
        m = wide.to_numpy(float)
        row = {"clip": clip, "source": source, "dimension": dim, "n_raters": m.shape[1],
               "n_points": int(np.all(np.isfinite(m), axis=1).sum()), "note": ""}
        try:
            table = agree.icc(m).set_index("type")
            for typ in agree.CARMA_TYPES:
                key = typ.lower()
                row[key], row[f"{key}_lower"], row[f"{key}_upper"] = table.loc[typ, ["icc", "lower", "upper"]]
            row["alpha_interval"] = agree.krippendorff_alpha(m)
        except UserError as exc:
            row["note"] = exc.message if hasattr(exc, "message") else str(exc)
        rows.append(row)
    cols = ["clip", "source", "dimension", "n_raters", "n_points"] + [
        c for typ in agree.CARMA_TYPES for c in (typ.lower(), f"{typ.lower()}_lower", f"{typ.lower()}_upper")
    ] + ["alpha_interval", "note"]
    return pd.DataFrame(rows).reindex(columns=cols)


# ----------------------------------------------------------------------------- per-trial summaries


def trial_summaries(traces: pd.DataFrame, *, neutral: float = 0.0, step_s: float = STEP_S,
                    end_window_s: float = END_WINDOW_S, max_gap_s: float = MAX_GAP_S,
                    min_coverage: float = MIN_COVERAGE, include_partial: bool = False) -> pd.DataFrame:
    """One row per trial and dimension: TRIAL_KEYS, partial, duration_s, coverage, peak,
    peak_time, trough, trough_time, end, mean, area, slope, used (bool) and reason (why not
    used). Definitions in the module's notes; `neutral` is the scale's neutral point (area)."""
    if not end_window_s > 0:
        raise UserError(f"end_window_s must be positive; got {end_window_s!r}")
    res = resample(traces, "seconds", step_s=step_s, max_gap_s=max_gap_s)
    t_all, v_all, p_all = res["time_s"].to_numpy(float), res["value"].to_numpy(float), res["partial"].to_numpy(bool)
    rows = []
    for key, a, b in _blocks(res, "t"):
        t, v = t_all[a:b], v_all[a:b]
        ok = np.isfinite(v)
        dur = float(t[-1]) if len(t) else np.nan
        row = dict(zip(TRIAL_KEYS, key), partial=bool(p_all[a]), duration_s=dur,
                   coverage=float(ok.mean()) if len(v) else 0.0)
        if ok.any():
            tv, vv = t[ok], v[ok]
            row.update(peak=float(vv.max()), peak_time=float(tv[np.argmax(vv)]),
                       trough=float(vv.min()), trough_time=float(tv[np.argmin(vv)]), mean=float(vv.mean()),
                       area=float(trapezoid(vv - neutral, tv)) if len(vv) > 1 else np.nan,
                       slope=float(np.polyfit(tv, vv, 1)[0]) if len(vv) > 1 and np.ptp(tv) > 0 else np.nan)
            tail = t >= dur - end_window_s - 1e-9
            row["end"] = float(np.nanmean(v[tail])) if np.isfinite(v[tail]).mean() >= 0.5 else np.nan
        reasons = []
        if row["partial"] and not include_partial:
            reasons.append("partial trace (trial restarted)")
        if row["coverage"] < min_coverage:
            reasons.append(f"covers {row['coverage']:.0%} of the clip (< {min_coverage:.0%})")
        row["used"] = not reasons
        row["reason"] = "; ".join(reasons)
        rows.append(row)
    cols = [*TRIAL_KEYS, "partial", "duration_s", "coverage", "peak", "peak_time", "trough", "trough_time", "end",
            "mean", "area", "slope", "used", "reason"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["used"] = out["used"].astype(bool)
    return out


def join_ratings(summaries: pd.DataFrame, trials: pd.DataFrame, outcomes: Sequence[str] | None = None) -> pd.DataFrame:
    """The trial summaries with each trial's post-clip ratings beside them.

    trials: the scored trial table (analysis.load: participant_id, stimulus_id, position, one
    column per per-clip item or scale). Matched on participant and clip (and on the trial's
    position where both tables have one). outcomes: the rating columns to bring (default every
    numeric column of trials that is not a key)."""
    require_columns(trials, ["participant_id", "stimulus_id"], "the trial table misses columns")
    keys = {"participant_id", "stimulus_id", "position", "source", "pair_id", "label_condition", "is_pilot",
            "watched_share"}
    if outcomes is None:
        outcomes = [c for c in trials.columns if c not in keys and pd.api.types.is_numeric_dtype(trials[c])
                    and not pd.api.types.is_bool_dtype(trials[c])]
    outcomes = list(outcomes)
    require_columns(trials, outcomes, "the trial table misses the ratings asked for")
    right = trials[["participant_id", "stimulus_id", *(["position"] if "position" in trials else []), *outcomes]]
    right = right.rename(columns={"participant_id": "participant", "stimulus_id": "clip", "position": "trial"})
    right["participant"] = right["participant"].astype(str)
    right["clip"] = right["clip"].astype(str)
    on = ["participant", "clip"]
    left = summaries.assign(participant=summaries["participant"].astype(str), clip=summaries["clip"].astype(str))
    if "trial" in right and right.duplicated(on).any():
        on.append("trial")
        right["trial"] = pd.to_numeric(right["trial"], errors="coerce")
        left["trial"] = pd.to_numeric(left["trial"], errors="coerce")
    else:
        right = right.drop(columns="trial", errors="ignore").drop_duplicates(on)
    clash = [c for c in outcomes if c in left.columns]
    if clash:
        right = right.rename(columns={c: f"rating_{c}" for c in clash})
    return left.merge(right, on=on, how="left")


# ----------------------------------------------------------------------------- models


def _zscore(s: pd.Series) -> pd.Series:
    sd = s.std(ddof=1)
    return (s - s.mean()) / sd if sd > 0 else s * np.nan


def peak_end_data(joined: pd.DataFrame, rating: str, dimension: str,
                  predictors: Sequence[str] = ("peak", "end", "mean")) -> pd.DataFrame:
    """The rows the peak-end model uses, with z-scored predictors z_peak, z_end, z_mean."""
    require_columns(joined, ["participant", "clip", "dimension", "used", rating, *predictors],
                    "the peak-end model needs the joined trial summaries")
    d = joined[(joined["dimension"] == dimension) & joined["used"]].dropna(subset=[rating, *predictors]).copy()
    for p in predictors:
        d[f"z_{p}"] = _zscore(d[p])
    return d


def peak_end_model(joined: pd.DataFrame, rating: str, dimension: str,
                   predictors: Sequence[str] = ("peak", "end", "mean")):
    """(table, fit) of rating ~ z_peak + z_end + z_mean + (1 | participant) + (1 | clip).

    table: rating, dimension, term, estimate, se, df, t, p, ci_low, ci_high, n_trials,
    n_participants, n_clips; the estimates are rating points per SD of the predictor."""
    d = peak_end_data(joined, rating, dimension, predictors)
    if d.empty:
        raise UserError(f"no trial has both a usable {dimension} trace and a {rating} rating")
    zs = [f"z_{p}" for p in predictors]
    bad = [p for p, z in zip(predictors, zs) if d[z].isna().all()]
    if bad:
        raise UserError(f"the peak-end model cannot be fitted: {', '.join(bad)} has the same value in every trial")
    fit = fit_lmm(d, rating, zs, [RandomTerm("participant"), RandomTerm("clip")])
    table = fit.fixed.copy()
    table.insert(0, "dimension", dimension)
    table.insert(0, "rating", rating)
    table["n_trials"] = fit.nobs
    table["n_participants"] = fit.ngroups.get("participant")
    table["n_clips"] = fit.ngroups.get("clip")
    return table, fit


def source_tests(summaries: pd.DataFrame, measures: Sequence[str] = SUMMARY_MEASURES) -> pd.DataFrame:
    """Human vs AI on each trace summary with the crossed model (analysis.lmm.fit_crossed:
    measure ~ source + (1 + source | participant) + (1 | clip), with its singular-fit rule).

    One row per dimension x measure: estimate (human minus AI), se, df, t, p, ci_low, ci_high,
    p_holm (Holm across the measures of a dimension), model_used, n_trials, note."""
    require_columns(summaries, [*TRIAL_KEYS, "used", *measures], "the source tests need the trial summaries")
    rows = []
    for dim, g in summaries[summaries["used"]].groupby("dimension", sort=True):
        for m in measures:
            row = {"dimension": dim, "measure": m, "n_trials": int(g[m].notna().sum()), "note": ""}
            try:
                fit = fit_crossed(g, m, participant="participant", stimulus="clip", source="source")
                x = fit.fixed.set_index("term").loc["x"]
                row.update({k: float(x[k]) for k in ("estimate", "se", "df", "t", "p", "ci_low", "ci_high")})
                row["model_used"] = fit.model_used
            except UserError as exc:
                row["note"] = str(exc)
            rows.append(row)
    cols = ["dimension", "measure", "estimate", "se", "df", "t", "p", "ci_low", "ci_high", "p_holm", "model_used",
            "n_trials", "note"]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["p_holm"] = np.nan
    for _, idx in out.groupby("dimension").groups.items():
        p = out.loc[idx, "p"]
        ok = p.notna()
        if ok.any():
            from statsmodels.stats.multitest import multipletests
            out.loc[p[ok].index, "p_holm"] = multipletests(p[ok].to_numpy(), method="holm")[1]
    return out


def rating_for(dimension: str, outcomes: Sequence[str], primary: str | None = None) -> str | None:
    """The post-clip rating that a dimension's trace is compared with: the item of the same name
    (valence, arousal), else for a 1-D 'rating' trace the primary outcome."""
    if dimension in outcomes:
        return dimension
    if primary in outcomes:
        return primary
    return outcomes[0] if outcomes else None


def neutral_point(study) -> float:
    """The neutral point of the study's continuous scale (its midpoint), 0 when unknown."""
    cr = getattr(getattr(study, "playback", None), "continuous_rating", None)
    lo, hi = getattr(cr, "min", None), getattr(cr, "max", None)
    return (float(lo) + float(hi)) / 2 if lo is not None and hi is not None else 0.0


def summaries_by_clip(summaries: pd.DataFrame, measures: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Clip-level means of the used trials' summaries (for a table beside the curves)."""
    use = summaries[summaries["used"]]
    cols = list(measures or {"peak": "mean", "peak_time": "median", "end": "mean", "mean": "mean", "slope": "mean"})
    agg = use.groupby(["clip", "source", "dimension"])[cols].agg(measures or "mean")
    agg["n_trials"] = use.groupby(["clip", "source", "dimension"]).size()
    return agg.reset_index()
