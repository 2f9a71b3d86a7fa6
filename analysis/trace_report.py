"""The report's sections on feeling over time (continuous traces) and moments marked, and the
dashboard's figures of the same. Shown only when a study has traces or marks.

The traces and marks come from analysis.load.load_traces / load_marks when that loader has
them (`load_time_courses`), or are passed in (tests, other tools).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import load, marks as mk, trace_charts, traces as tr
from analysis.agreement import CARMA_TYPES
from study.errors import UserError

SECTIONS = [("traces", "Feeling over time"), ("marks", "Moments marked")]
AFTER = "emotions"  # the report section these follow
N_THUMBS = 8


def _has(df: pd.DataFrame | None) -> bool:
    return isinstance(df, pd.DataFrame) and len(df) > 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


def load_time_courses(engine, study_id: str) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(traces, marks) of a study from the database, each None when the loader has no such
    function (before continuous capture existed) or the study has none."""
    out = []
    for name in ("load_traces", "load_marks"):
        fn = getattr(load, name, None)
        frame = fn(engine, study_id) if fn is not None else None
        out.append(frame if _has(frame) else None)
    return out[0], out[1]


def time_courses_for_source(source: Any, url: str | None = None) -> tuple[Any, Any, dict]:
    """(traces, marks, clip files) for a `kuleshov report` source: a study id or study file in
    the database; (None, None, {}) for a dataset folder or a CSV, which hold no traces here."""
    from study import store

    text = str(source)
    path = Path(text)
    no_loader = getattr(load, "load_traces", None) is None and getattr(load, "load_marks", None) is None
    if no_loader or path.is_dir() or path.suffix.lower() == ".csv":
        return None, None, {}
    if "://" in text:
        engine, study_id = load._engine_for(text), None
    else:
        engine = load._engine_for(url)
        study_id = store.resolve_study_id(text) if path.suffix.lower() in (".yaml", ".yml") else text
    try:
        study_id = study_id or load._only_study(engine)
        traces, marks = load_time_courses(engine, study_id)
        files = mk.clip_files(engine, study_id) if traces is not None or marks is not None else {}
        return traces, marks, files
    finally:
        engine.dispose()


class Stills:
    """Still frames of the report's clips: each clip is decoded once, at the thumbnail times of
    its timeline and at the peak times asked for up front, and the JPEGs are kept."""

    def __init__(self, files: Mapping[str, Path] | None, durations: Mapping[str, float],
                 extra: Mapping[str, list[float]] | None = None):
        self.files = dict(files or {})
        self.durations = dict(durations)
        self.extra = {c: list(ts) for c, ts in (extra or {}).items()}
        self.frames: dict[str, dict[float, Any]] = {}
        self.notes: list[str] = []

    def _times(self, clip: str) -> list[float]:
        d = self.durations.get(clip, 0.0)
        return [(i + 0.5) * d / N_THUMBS for i in range(N_THUMBS)] if d > 0 else []

    def _load(self, clip: str) -> dict:
        if clip not in self.frames:
            times = self._times(clip) + self.extra.get(clip, [])
            got: dict = {}
            if clip in self.files and times:
                try:
                    got = dict(zip(times, mk.frames_at(self.files[clip], times)))
                except UserError as exc:
                    self.notes.append(str(exc))
            self.frames[clip] = got
        return self.frames[clip]

    def thumbs(self, clip: str) -> list[tuple[float, str]]:
        frames = self._load(clip)
        return [(t, mk.data_uri(mk.encode_jpeg(frames[t], mk.THUMB_WIDTH))) for t in self._times(clip) if t in frames]

    def at(self, clip: str, t: float, width: int = 240) -> str | None:
        frames = self._load(clip)
        if t not in frames and clip in self.files:
            try:
                frames[t] = mk.frames_at(self.files[clip], [t])[0]
            except UserError as exc:
                self.notes.append(str(exc))
                return None
        return mk.data_uri(mk.encode_jpeg(frames[t], width)) if t in frames else None


def _durations(traces: pd.DataFrame | None, marks: pd.DataFrame | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for df in (traces, marks):
        if _has(df):
            d = df.groupby("clip")["clip_duration"].max().fillna(df.groupby("clip")["video_time"].max())
            for c, v in d.items():
                out[str(c)] = max(out.get(str(c), 0.0), float(v))
    return out


def _outcomes(trials: pd.DataFrame | None) -> list[str]:
    if trials is None:
        return []
    meta = {"participant_id", "stimulus_id", "position", "source", "pair_id", "label_condition", "is_pilot",
            "watched_share"}
    return [c for c in trials.columns if c not in meta and pd.api.types.is_numeric_dtype(trials[c])
            and not pd.api.types.is_bool_dtype(trials[c])]


def traces_section(traces: pd.DataFrame, trials: pd.DataFrame | None, *, table_html, chart_html,
                   stills: Stills, primary: str | None = None, neutral: float = 0.0) -> str:
    """HTML body of "Feeling over time": curves by source and by clip, agreement, summaries,
    the peak-end model and human vs AI on the summaries."""
    summaries = tr.trial_summaries(traces, neutral=neutral)
    used = summaries[summaries["used"]]
    left_out = summaries[~summaries["used"]]
    why = [f"{n} partial (the trial was restarted)" for n in [int(left_out["partial"].sum())] if n]
    why += [f"{n} covering under {tr.MIN_COVERAGE:.0%} of the clip" for n in
            [int((left_out["coverage"] < tr.MIN_COVERAGE).sum())] if n]
    parts = [f"<p>{len(used)} traces used ({used['participant'].nunique()} participants, "
             f"{used['clip'].nunique()} clips); {len(left_out)} left out"
             + (f" ({', '.join(why)})" if why else "")
             + ". Each trace was resampled onto a common grid by linear interpolation between samples, never "
             f"across a gap over {tr.MAX_GAP_S:g} s; partial traces (a trial restarted by a reload) and traces "
             f"covering under {tr.MIN_COVERAGE:.0%} of the clip are left out. Bands are pointwise 95% t-intervals "
             "across participants (by source, each participant's traces of that source averaged first); they "
             "describe the data, the crossed models below test.</p>"]
    by_source = tr.mean_curves(traces, by="source")
    by_clip = tr.mean_curves(traces, by="clip")
    dims = sorted(summaries["dimension"].unique())
    for dim in dims:
        parts.append(chart_html(trace_charts.mean_curves_by_source(by_source, dim),
                                f"chart-traces-source-{_slug(dim)}"))
    clip_parts = []
    for (clip, dim), g in by_clip.groupby(["clip", "dimension"], sort=True):
        clip_parts.append(chart_html(trace_charts.clip_curve(by_clip, clip, dim, stills.thumbs(clip)),
                                     f"chart-traces-clip-{_slug(clip)}-{_slug(dim)}"))
    parts.append("<h3>By clip</h3>" + "".join(clip_parts))
    parts.append(table_html(tr.summaries_by_clip(summaries), table_id="trace-summaries",
                            caption="Per-trial summaries, means by clip (peak = highest value, peak_time its median "
                                    "time; end = mean of the last second; slope per second)"))
    agree = tr.agreement(traces)
    names = ", ".join(f"{k} = {v}" for k, v in CARMA_TYPES.items())
    parts.append(table_html(agree, table_id="trace-agreement",
                            caption=f"Agreement between raters per clip: the ICCs CARMA reports ({names}) with 95% "
                                    "bounds, and Krippendorff's alpha (interval)")
                 + '<p class="muted">Rows are the time points of the clip, raters the participants. Neighbouring '
                   "time points are not independent, so the ICC bounds are too narrow; the estimates are not "
                   "affected.</p>")
    outcomes = _outcomes(trials)
    pe_rows, notes = [], []
    if outcomes:
        joined = tr.join_ratings(summaries, trials, outcomes)
        for dim in dims:
            rating = tr.rating_for(dim, outcomes, primary)
            try:
                table, fit = tr.peak_end_model(joined, rating, dim)
                pe_rows.append(table)
                notes.append(f"{html.escape(dim)} trace and {html.escape(rating)}: {html.escape(fit.formula)}")
            except UserError as exc:
                notes.append(f"{html.escape(dim)}: not estimated ({html.escape(str(exc))})")
    if pe_rows:
        parts.append("<h3>Peak-end: does the rating after the clip follow its peak and end beyond the mean?</h3>"
                     + table_html(pd.concat(pe_rows, ignore_index=True), table_id="peak-end-table",
                                  caption="Crossed mixed model, REML, Satterthwaite df; predictors standardised "
                                          "(estimates in rating points per SD)")
                     + "<p class=\"muted\">" + "<br>".join(notes) + "</p>")
    elif notes:
        parts.append("<h3>Peak-end</h3><p class=\"note\">" + "<br>".join(notes) + "</p>")
    st = tr.source_tests(summaries)
    parts.append("<h3>Human vs AI on the trace summaries</h3>"
                 + table_html(st, table_id="trace-source-table",
                              caption="Crossed mixed model per summary: human minus AI, Holm across the summaries"))
    return "\n".join(parts)


def mark_tables(marks: pd.DataFrame, trials: pd.DataFrame | None, n_boot: int = mk.N_BOOT):
    """(density, peaks) of the marks, the viewers taken from the trial table when there is one."""
    viewers = trials[["participant_id", "stimulus_id"]] if trials is not None and "stimulus_id" in trials else None
    dens = mk.mark_density(marks, viewers=viewers, n_boot=n_boot)
    return dens, mk.mark_peaks(dens, marks)


def marks_section(marks: pd.DataFrame, dens: pd.DataFrame, peaks: pd.DataFrame, *, table_html, chart_html,
                  stills: Stills) -> str:
    """HTML body of "Moments marked": a density per clip and prompt with its peaks, and the
    frame on screen at each peak."""
    parts = [f"<p>{len(marks)} marks by {marks['participant'].nunique()} participants. Density: Gaussian kernel, "
             f"bandwidth {mk.BANDWIDTH_S:g} s, reflected at the clip's ends, as marks per viewer per second; band: "
             f"95% bootstrap over viewers ({mk.N_BOOT} resamples of participants). Peaks: local maxima with a "
             f"prominence of at least {mk.MIN_PROMINENCE:.0%} of the clip's highest density and at least "
             f"{mk.MIN_MARKS} marks within one bandwidth.</p>"]
    for (clip, mark), g in dens.groupby(["clip", "mark"], sort=True):
        parts.append(chart_html(trace_charts.mark_density_chart(dens, peaks, clip, mark, stills.thumbs(clip)),
                                f"chart-marks-{_slug(clip)}-{_slug(mark)}"))
    rows = []
    for r in peaks.itertuples():
        uri = stills.at(r.clip, r.time_s)
        img = (f'<img class="still" alt="{html.escape(str(r.clip))} at {r.time_s:.2f} s" src="{uri}">' if uri
               else '<span class="note">no clip file</span>')
        rows.append(f"<tr><td>{html.escape(str(r.clip))}</td><td>{html.escape(str(r.mark))}</td>"
                    f"<td class=num>{r.rank}</td><td class=num>{r.time_s:.2f}</td>"
                    f"<td class=num>{r.density:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]</td>"
                    f"<td class=num>{r.n_marks}</td><td class=num>{r.share_viewers:.0%}</td><td>{img}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("clip", "prompt", "rank", "time (s)", "density [95% CI]", "marks",
                                             "viewers", "on screen"))
    parts.append('<p class="caption">Peaks of the mark density, with the frame on screen at each</p>'
                 f'<div class="overflow"><table class="results" id="mark-peaks-table"><thead><tr>{head}</tr></thead>'
                 f"<tbody>{''.join(rows)}</tbody></table></div>" if rows else '<p class="note">No peaks.</p>')
    return "\n".join(parts)


def kept_only(frame: pd.DataFrame | None, trials: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of traces or marks whose participant saw the clip in a trial the analysis kept
    (the trial table after exclusions: no pilots, withdrawals or excluded trials)."""
    if not _has(frame) or trials is None or not {"participant_id", "stimulus_id"} <= set(trials.columns):
        return frame
    keep = pd.MultiIndex.from_frame(trials[["participant_id", "stimulus_id"]].astype(str))
    rows = pd.MultiIndex.from_arrays([frame["participant"].astype(str), frame["clip"].astype(str)])
    return frame[rows.isin(keep)]


def sections(trials: pd.DataFrame | None, traces: pd.DataFrame | None, marks: pd.DataFrame | None, *, table_html,
             chart_html, clip_files=None, primary: str | None = None, neutral: float = 0.0) -> dict[str, str]:
    """{section id: body} of the sections that have data (none without traces or marks).

    Only the traces and marks of the trials kept after exclusions are analysed (kept_only)."""
    out = {}
    dropped = {}
    for name, frame in (("traces", traces), ("marks", marks)):
        if _has(frame):
            kept = kept_only(frame, trials)
            n_out = frame.groupby(["participant", "clip"]).ngroups - kept.groupby(["participant", "clip"]).ngroups
            dropped[name] = (n_out, kept)
    traces = dropped["traces"][1] if "traces" in dropped else None
    marks = dropped["marks"][1] if "marks" in dropped else None
    for name, (n_out, kept) in dropped.items():
        if not _has(kept):
            out[name] = ('<p class="note">None of the recorded ' + name + " belong to a trial kept after "
                         "exclusions.</p>")
    dens = peaks = None
    if _has(marks):
        dens, peaks = mark_tables(marks, trials)
    extra = {str(c): list(g["time_s"]) for c, g in peaks.groupby("clip")} if peaks is not None else {}
    stills = Stills(clip_files, _durations(traces, marks), extra)
    if _has(traces):
        out["traces"] = _left_out_note(dropped["traces"][0], "trace") + traces_section(
            traces, trials, table_html=table_html, chart_html=chart_html, stills=stills, primary=primary,
            neutral=neutral)
    if _has(marks):
        out["marks"] = _left_out_note(dropped["marks"][0], "trial's marks", "trials' marks") + marks_section(
            marks, dens, peaks, table_html=table_html, chart_html=chart_html, stills=stills)
    if stills.notes:
        note = '<p class="note">Still frames: ' + html.escape("; ".join(sorted(set(stills.notes)))) + "</p>"
        out[next(iter(out))] += note
    return out


def result_tables(trials: pd.DataFrame | None, traces: pd.DataFrame | None, marks: pd.DataFrame | None, *,
                  primary: str | None = None, neutral: float = 0.0) -> dict[str, pd.DataFrame]:
    """The trace and mark results as tables for `kuleshov analyze` (empty without traces or marks):
    trace_summaries (per trial, with the post-clip ratings), trace_curves (by source),
    trace_agreement, peak_end, trace_source_tests, mark_peaks."""
    out: dict[str, pd.DataFrame] = {}
    traces, marks = kept_only(traces, trials), kept_only(marks, trials)
    if _has(traces):
        summaries = tr.trial_summaries(traces, neutral=neutral)
        outcomes = _outcomes(trials)
        joined = tr.join_ratings(summaries, trials, outcomes) if outcomes else summaries
        out["trace_summaries"] = joined
        out["trace_curves"] = tr.mean_curves(traces, by="source")
        out["trace_agreement"] = tr.agreement(traces)
        rows = []
        for dim in sorted(summaries["dimension"].unique()):
            rating = tr.rating_for(dim, outcomes, primary)
            if rating is None:
                continue
            try:
                rows.append(tr.peak_end_model(joined, rating, dim)[0])
            except UserError:
                continue
        if rows:
            out["peak_end"] = pd.concat(rows, ignore_index=True)
        out["trace_source_tests"] = tr.source_tests(summaries)
    if _has(marks):
        out["mark_peaks"] = mark_tables(marks, trials)[1]
    return out


def _left_out_note(n: int, one: str, many: str | None = None) -> str:
    if not n:
        return ""
    what = one if n == 1 else (many or one + "s")
    return (f'<p class="muted">{n} {what} left out with the excluded participants and trials '
            "(see Exclusions).</p>")


def dashboard_figures(traces: pd.DataFrame | None, marks: pd.DataFrame | None, trials: pd.DataFrame | None = None,
                      clip_files: Mapping[str, Path] | None = None) -> list:
    """Figures for the dashboard: mean curves by source per dimension, then each clip's mark density."""
    figs = []
    stills = Stills(clip_files, _durations(traces, marks))
    if _has(traces):
        curves = tr.mean_curves(traces, by="source")
        figs += [trace_charts.mean_curves_by_source(curves, d) for d in sorted(traces["dimension"].unique())]
    if _has(marks):
        dens, peaks = mark_tables(marks, trials, n_boot=200)
        for clip, mark in dens[["clip", "mark"]].drop_duplicates().itertuples(index=False):
            figs.append(trace_charts.mark_density_chart(dens, peaks, clip, mark, stills.thumbs(clip)))
    return figs
