"""Tidy DataFrames in, Plotly figures out. Nothing here queries or computes statistics beyond
the plain means and t-intervals a chart needs to draw itself (`mean_ci`, `summarise`,
`clip_means`, which return DataFrames and are shared with analysis.results).

Every chart function returns a `go.Figure`. When the data it needs were not collected (a column
is missing or empty), it returns a figure carrying the note "not measured in this study" instead
of raising, so the report and the dashboard decide what to show. p-values in hovers read as in
the report's tables (analysis.formatting: "p < .001").

Colours follow Okabe & Ito (2008), readable with the common colour-vision deficiencies, and
human and AI clips also differ by marker shape so the charts survive greyscale printing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy import stats as sps

from analysis.formatting import p_equals

SOURCES = ("human", "ai")
SOURCE_LABELS = {"human": "Human-made", "ai": "AI-generated"}
SOURCE_COLORS = {"human": "#0072B2", "ai": "#D55E00"}  # Okabe-Ito blue / vermillion
SOURCE_SYMBOLS = {"human": "circle", "ai": "diamond"}
NEUTRAL = "#555555"
POOLED = "#000000"
NOT_MEASURED = "not measured in this study"

LABEL_ORDER = ("none", "true", "swapped")
EMOTIONS = ("amusement", "sadness", "fear", "anger", "disgust", "tenderness", "awe", "surprise", "unease")

# A small explicit template: plotly's default one is ~10 kB of JSON repeated in every figure of
# the HTML report, and its grey background prints badly.
TEMPLATE = go.layout.Template(
    layout=dict(
        font=dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=13, color="#222"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis=dict(showgrid=True, gridcolor="#e5e5e5", zeroline=False, linecolor="#888", ticks="outside"),
        yaxis=dict(showgrid=True, gridcolor="#e5e5e5", zeroline=False, linecolor="#888", ticks="outside"),
        hoverlabel=dict(align="left"),
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
        margin=dict(l=70, r=30, t=60, b=60),
    )
)


# ---------------------------------------------------------------------------------------------
# helpers


def mean_ci(values: Sequence[float] | pd.Series, level: float = 0.95) -> tuple[int, float, float, float, float]:
    """(n, mean, se, ci_low, ci_high) of the non-missing values, t-interval; NaN where undefined."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    n = len(x)
    if n == 0:
        return 0, np.nan, np.nan, np.nan, np.nan
    m = float(x.mean())
    if n < 2:
        return n, m, np.nan, np.nan, np.nan
    se = float(x.std(ddof=1) / np.sqrt(n))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * se)
    return n, m, se, m - half, m + half


def summarise(df: pd.DataFrame, value: str, by: list[str], level: float = 0.95) -> pd.DataFrame:
    """Mean with 95% t-interval of `value` per group: by + [n, mean, se, ci_low, ci_high],
    as mean_ci gives for each group (in one grouped pass: thousands of clips)."""
    cols = [*by, "n", "mean", "se", "ci_low", "ci_high"]
    d = df[by].copy()
    d["_v"] = pd.to_numeric(df[value], errors="coerce").astype(float)
    d = d[np.isfinite(d["_v"])]
    if d.empty:
        return pd.DataFrame(columns=cols)
    g = d.groupby(by, sort=True, dropna=True, observed=True)["_v"].agg(["count", "mean", "std"])
    n = g["count"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(n >= 2, g["std"].to_numpy(float) / np.sqrt(n), np.nan)
        half = np.where(n >= 2, sps.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * se, np.nan)
    m = g["mean"].to_numpy(float)
    out = g.index.to_frame(index=False)
    out["n"] = g["count"].to_numpy(int)
    out["mean"], out["se"], out["ci_low"], out["ci_high"] = m, se, m - half, m + half
    return out[out["n"] > 0].reset_index(drop=True)[cols]


def clip_means(trials: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """Each clip's mean rating with a 95% CI across its raters:
    [stimulus_id, source, n, mean, se, ci_low, ci_high]."""
    return summarise(trials, outcome, ["stimulus_id", "source"])


def _has(df: pd.DataFrame | None, *columns: str) -> bool:
    """True when every column exists and holds at least one value."""
    if df is None or len(df) == 0:
        return False
    return all(c in df.columns and df[c].notna().any() for c in columns)


def not_measured(title: str, detail: str = "") -> go.Figure:
    """An empty figure that says why it is empty."""
    fig = go.Figure()
    text = NOT_MEASURED + (f"<br><sub>{detail}</sub>" if detail else "")
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=16, color=NEUTRAL))
    fig.update_layout(template=TEMPLATE, title=title, height=300,
                      xaxis=dict(visible=False), yaxis=dict(visible=False),
                      meta={"not_measured": True})
    return fig


def _pretty(name: str) -> str:
    name = name.removeprefix("emo_")
    return name.replace("_", " ").capitalize()


def _errors(df: pd.DataFrame, centre: str = "mean") -> dict:
    """Asymmetric error-bar spec reaching exactly from ci_low to ci_high."""
    return dict(type="data", symmetric=False, array=(df["ci_high"] - df[centre]).to_numpy(),
                arrayminus=(df[centre] - df["ci_low"]).to_numpy(), thickness=1.2, width=3)


def _sources_present(df: pd.DataFrame) -> list[str]:
    present = set(df["source"].dropna().astype(str))
    return [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))


def _color(source: str) -> str:
    return SOURCE_COLORS.get(source, NEUTRAL)


def _label(source: str) -> str:
    return SOURCE_LABELS.get(source, str(source))


# ---------------------------------------------------------------------------------------------
# ratings


def distributions_by_source(trials: pd.DataFrame, outcome: str, *, seed: int = 0) -> go.Figure:
    """Half violin of every rating per source, with each clip's mean as a jittered point beside it.

    Traces: one violin per source (name "<source label> ratings"), then one scatter of clip
    means per source (name "<source label> clip means"; one point per clip, the hover shows the
    clip id, its mean and its number of ratings)."""
    title = f"{_pretty(outcome)} by source"
    if not _has(trials, outcome, "source", "stimulus_id"):
        return not_measured(title, f"no {outcome} ratings")
    df = trials.dropna(subset=[outcome, "source"])
    means = clip_means(df, outcome)
    rng = np.random.default_rng(seed)
    fig = go.Figure()
    sources = _sources_present(df)
    for i, src in enumerate(sources):
        vals = df.loc[df["source"] == src, outcome].astype(float)
        fig.add_trace(go.Violin(
            x=np.full(len(vals), i, dtype=float), y=vals, name=f"{_label(src)} ratings",
            legendgroup=src, line_color=_color(src), fillcolor=_color(src), opacity=0.35,
            # spanmode "hard": a rating scale has ends; tails past them would show impossible ratings
            side="negative", width=0.8, points=False, spanmode="hard", meanline_visible=True,
            hoverinfo="y",
        ))
    for i, src in enumerate(sources):
        m = means[means["source"] == src]
        jitter = rng.uniform(0.08, 0.32, len(m))
        fig.add_trace(go.Scatter(
            x=i + jitter, y=m["mean"], mode="markers", name=f"{_label(src)} clip means",
            legendgroup=src, marker=dict(color=_color(src), symbol=SOURCE_SYMBOLS.get(src, "circle"),
                                         size=8, line=dict(color="white", width=0.8)),
            customdata=np.column_stack([m["stimulus_id"], m["n"]]),
            hovertemplate="clip %{customdata[0]}<br>mean %{y:.2f} (n = %{customdata[1]})<extra></extra>",
            meta={"role": "clip_means", "source": src},
        ))
    fig.update_layout(
        template=TEMPLATE, title=title, violingap=0.1, violinmode="overlay",
        xaxis=dict(tickvals=list(range(len(sources))), ticktext=[_label(s) for s in sources],
                   title="Source of the clip", range=[-0.7, len(sources) - 0.3]),
        yaxis=dict(title=f"{_pretty(outcome)} (rating, scale points)"),
    )
    return fig


def pair_slopes(data: pd.DataFrame, outcome: str | None = None) -> go.Figure:
    """Per matched pair, a line from the human clip's mean to the AI clip's mean, with the pooled
    means in black (and the pooled difference's CI in the hover).

    `data` is either `stats.pair_differences` output (pair_id, human_mean, ai_mean, ... with a
    row pair_id="pooled") or a trial table (then `outcome` names the column to average)."""
    title = f"{_pretty(outcome) if outcome else 'Rating'}: human vs AI clip within each pair"
    if {"human_mean", "ai_mean", "pair_id"} <= set(data.columns):
        pairs = data.copy()
    elif outcome and _has(data, outcome, "pair_id", "source"):
        df = data.dropna(subset=[outcome, "pair_id", "source"])
        wide = df.groupby(["pair_id", "source"], observed=True)[outcome].mean().unstack("source")
        wide = wide.dropna(subset=[c for c in SOURCES if c in wide.columns])
        if not set(SOURCES) <= set(wide.columns) or wide.empty:
            return not_measured(title, "no pair has both a human and an AI clip")
        pairs = pd.DataFrame({"pair_id": wide.index.astype(str), "human_mean": wide["human"].to_numpy(),
                              "ai_mean": wide["ai"].to_numpy()})
        pairs["diff"] = pairs["human_mean"] - pairs["ai_mean"]
        _, d, _, lo, hi = mean_ci(pairs["diff"])
        pooled = {"pair_id": "pooled", "human_mean": pairs["human_mean"].mean(),
                  "ai_mean": pairs["ai_mean"].mean(), "diff": d, "ci_low": lo, "ci_high": hi}
        pairs = pd.concat([pairs, pd.DataFrame([pooled])], ignore_index=True)
    else:
        return not_measured(title, "no matched pairs in this study")
    if "diff" not in pairs.columns:
        pairs["diff"] = pairs["human_mean"] - pairs["ai_mean"]
    for c in ("ci_low", "ci_high"):
        if c not in pairs.columns:
            pairs[c] = np.nan
    is_pooled = pairs["pair_id"].astype(str) == "pooled"
    each, pooled = pairs[~is_pooled].dropna(subset=["human_mean", "ai_mean"]), pairs[is_pooled]
    if each.empty:
        return not_measured(title, "no matched pairs in this study")

    def hover(r) -> str:
        ci = "" if pd.isna(r.ci_low) else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
        return f"{r.pair_id}<br>human - AI = {r.diff:.2f}{ci}"

    # One trace for all pairs, segments separated by gaps: hundreds of pairs stay one object.
    xs, ys, texts, colors = [], [], [], []
    for r in each.itertuples():
        xs += ["Human-made", "AI-generated", None]
        ys += [r.human_mean, r.ai_mean, None]
        texts += [hover(r)] * 2 + [None]
        colors += [SOURCE_COLORS["human"], SOURCE_COLORS["ai"], NEUTRAL]
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="lines+markers", name="pairs", connectgaps=False, text=texts,
        hovertemplate="%{text}<br>mean %{y:.2f}<extra></extra>",
        line=dict(color="rgba(85,85,85,0.45)", width=1.2), marker=dict(color=colors, size=7),
        meta={"role": "pairs", "n_pairs": int(len(each))},
    ))
    if not pooled.empty:
        r = next(pooled.itertuples())
        fig.add_trace(go.Scatter(
            x=["Human-made", "AI-generated"], y=[r.human_mean, r.ai_mean], mode="lines+markers",
            name="pooled", line=dict(color=POOLED, width=4), marker=dict(size=11, color=POOLED),
            text=[hover(r)] * 2,
            hovertemplate="%{text}<br>mean %{y:.2f}<extra></extra>", meta={"role": "pooled"},
        ))
    fig.update_layout(template=TEMPLATE, title=title, showlegend=True,
                      xaxis=dict(title="Source of the clip", categoryorder="array",
                                 categoryarray=["Human-made", "AI-generated"]),
                      yaxis=dict(title=f"{_pretty(outcome) if outcome else 'Rating'} (mean, scale points)"))
    return fig


def valence_arousal_plane(trials: pd.DataFrame, x: str = "valence", y: str = "arousal") -> go.Figure:
    """Each clip's mean valence against mean arousal with 95% CIs on both, coloured by source
    and labelled with the clip id. One trace per source; points = clips."""
    title = f"{_pretty(x)}-{_pretty(y).lower()} plane (clip means, 95% CI)"
    if not _has(trials, x, y, "stimulus_id", "source"):
        missing = [c for c in (x, y) if not _has(trials, c)]
        return not_measured(title, f"no {' or '.join(missing) or 'clip'} ratings")
    mx = clip_means(trials, x).set_index(["stimulus_id", "source"])
    my = clip_means(trials, y).set_index(["stimulus_id", "source"])
    both = mx.merge(my, left_index=True, right_index=True, suffixes=("_x", "_y")).reset_index()
    fig = go.Figure()
    for src in _sources_present(both):
        d = both[both["source"] == src]
        ex = d.rename(columns={"mean_x": "mean", "ci_low_x": "ci_low", "ci_high_x": "ci_high"})
        ey = d.rename(columns={"mean_y": "mean", "ci_low_y": "ci_low", "ci_high_y": "ci_high"})
        fig.add_trace(go.Scatter(
            x=d["mean_x"], y=d["mean_y"], mode="markers+text", name=_label(src),
            text=d["stimulus_id"], textposition="top center", textfont=dict(size=10, color=_color(src)),
            marker=dict(color=_color(src), symbol=SOURCE_SYMBOLS.get(src, "circle"), size=9),
            error_x=dict(_errors(ex), color=_color(src)), error_y=dict(_errors(ey), color=_color(src)),
            customdata=d[["n_x"]].to_numpy(),
            hovertemplate=(f"clip %{{text}}<br>{_pretty(x)} %{{x:.2f}}<br>{_pretty(y)} %{{y:.2f}}"
                           "<br>n = %{customdata[0]}<extra></extra>"),
            meta={"role": "clips", "source": src},
        ))
    fig.update_layout(template=TEMPLATE, title=title,
                      xaxis=dict(title=f"{_pretty(x)} (mean rating, scale points)"),
                      yaxis=dict(title=f"{_pretty(y)} (mean rating, scale points)"))
    return fig


def emotion_columns(trials: pd.DataFrame) -> list[str]:
    """The emo_<name> columns with data, known emotions first in their usual order."""
    present = [c for c in trials.columns if c.startswith("emo_") and trials[c].notna().any()]
    known = [f"emo_{e}" for e in EMOTIONS if f"emo_{e}" in present]
    return known + sorted(set(present) - set(known))


def emotion_profile(data: pd.DataFrame) -> go.Figure:
    """Mean intensity of each discrete emotion (emo_* columns) by source, grouped bars with 95% CIs.

    `data` is a trial table (each clip's mean is taken first, so the CI is across clips: the
    clips, not the ratings, are the sample the comparison generalises from) or a summary in
    `stats.describe_by_source` shape [outcome, source, mean, ci_low, ci_high], drawn as given
    (its CIs are then across ratings, whatever the title says about clips)."""
    title = "Emotions by source (mean, 95% CI across clips)"
    if {"outcome", "source", "mean", "ci_low", "ci_high"} <= set(data.columns):
        summary = data[data["outcome"].astype(str).str.startswith("emo_")].copy()
    else:
        cols = emotion_columns(data) if "source" in data.columns else []
        if not cols:
            return not_measured(title, "no discrete-emotion ratings (emo_*)")
        parts = []
        for c in cols:
            cm = clip_means(data.dropna(subset=[c]), c)
            s = summarise(cm, "mean", ["source"])
            s.insert(0, "outcome", c)
            parts.append(s)
        summary = pd.concat(parts, ignore_index=True)
    if summary.empty:
        return not_measured(title, "no discrete-emotion ratings (emo_*)")
    order = list(dict.fromkeys(summary["outcome"]))
    fig = go.Figure()
    for src in _sources_present(summary):
        d = summary[summary["source"] == src].set_index("outcome").reindex(order).reset_index()
        fig.add_trace(go.Bar(
            x=[_pretty(o) for o in d["outcome"]], y=d["mean"], name=_label(src),
            marker=dict(color=_color(src), pattern_shape="" if src == "human" else "/"),
            error_y=_errors(d), customdata=d[["ci_low", "ci_high"]].to_numpy(),
            hovertemplate="%{x}: %{y:.2f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}]<extra>"
                          + _label(src) + "</extra>",
            meta={"role": "emotions", "source": src},
        ))
    fig.update_layout(template=TEMPLATE, title=title, barmode="group",
                      xaxis=dict(title="Emotion"), yaxis=dict(title="Intensity (mean, 0-8)", rangemode="tozero"))
    return fig


def _means_by(trials: pd.DataFrame, outcome: str, by: str, title: str, xtitle: str,
              order: Sequence[str] | None = None) -> go.Figure:
    if not _has(trials, outcome, by, "source"):
        return not_measured(title, f"no {outcome} ratings with {by}")
    s = summarise(trials.dropna(subset=[outcome, by, "source"]), outcome, [by, "source"])
    if order is not None:
        # lines join points in data order, so the data must follow the axis order
        present = list(dict.fromkeys(s[by].astype(str)))
        cats = [c for c in order if c in present] + sorted(set(present) - set(order))
        s = s.assign(**{by: pd.Categorical(s[by].astype(str), categories=cats, ordered=True)}).sort_values([by])
        s[by] = s[by].astype(str)
    fig = go.Figure()
    for src in _sources_present(s):
        d = s[s["source"] == src]
        fig.add_trace(go.Scatter(
            x=d[by], y=d["mean"], mode="lines+markers", name=_label(src),
            line=dict(color=_color(src)), marker=dict(color=_color(src), symbol=SOURCE_SYMBOLS.get(src, "circle"), size=8),
            error_y=dict(_errors(d), color=_color(src)), customdata=d[["n"]].to_numpy(),
            hovertemplate=f"{by} %{{x}}<br>mean %{{y:.2f}} (n = %{{customdata[0]}})<extra>{_label(src)}</extra>",
            meta={"role": by, "source": src},
        ))
    fig.update_layout(template=TEMPLATE, title=title, xaxis=dict(title=xtitle),
                      yaxis=dict(title=f"{_pretty(outcome)} (mean rating, scale points, 95% CI)"))
    return fig


def ratings_by_position(trials: pd.DataFrame, outcome: str) -> go.Figure:
    """Mean rating at each clip position with 95% CI, one line per source: fatigue and order effects."""
    fig = _means_by(trials, outcome, "position", f"{_pretty(outcome)} by position in the session",
                    "Position of the clip in the session (1 = first)")
    fig.update_xaxes(dtick=1)
    return fig


def label_means(trials: pd.DataFrame, outcome: str) -> go.Figure:
    """Mean rating per label condition with 95% CI, one line per true source."""
    fig = _means_by(trials, outcome, "label_condition", f"{_pretty(outcome)} by label condition",
                    "Label shown to the participant (none / true / swapped)", order=LABEL_ORDER)
    fig.update_xaxes(type="category")
    return fig


# ---------------------------------------------------------------------------------------------
# results


def forest_plot(primary: pd.DataFrame, *, units: str = "d", sesoi: float | None = None) -> go.Figure:
    """Human-minus-AI effect for each outcome with its 95% CI (`stats.primary_test` output),
    first outcome on top; the hover gives the model used and the p-values present.

    units="d" plots the standardised effect (d, d_ci_low, d_ci_high); units="raw" the model
    estimate in scale points. `sesoi`, in the same units, draws the equivalence band."""
    cols = ("d", "d_ci_low", "d_ci_high") if units == "d" else ("estimate", "ci_low", "ci_high")
    xtitle = ("Human - AI, standardised (d; Westfall et al. 2014)" if units == "d"
              else "Difference, human - AI (scale points)")
    title = "Effect of source across outcomes (95% CI)"
    if not _has(primary, "outcome", *cols):
        return not_measured(title, "no primary-test results")
    d = primary.dropna(subset=[cols[0]]).iloc[::-1]  # first outcome on top
    # p-values are written out here (plotly's d3 formats would show p = 1e-10 as "0.0000").
    hover_cols = [c for c in ("model_used", "p", "p_holm", "p_bh", "tost_p") if c in d.columns]
    custom = np.array([[("model " + str(v) if pd.notna(v) else "") if c == "model_used" else p_equals(v, c)
                        for c, v in zip(hover_cols, row)] for row in d[hover_cols].itertuples(index=False)],
                      dtype=object).reshape(len(d), len(hover_cols)) if hover_cols else None
    parts = [f"%{{customdata[{i}]}}" for i in range(len(hover_cols))]
    fig = go.Figure()
    if sesoi is not None and np.isfinite(sesoi) and sesoi > 0:
        fig.add_vrect(x0=-sesoi, x1=sesoi, fillcolor="#009E73", opacity=0.12, line_width=0,
                      annotation_text=f"equivalence bounds ±{sesoi:g}", annotation_position="top left")
    fig.add_vline(x=0, line=dict(color=NEUTRAL, dash="dot"))
    frame = pd.DataFrame({"mean": d[cols[0]], "ci_low": d[cols[1]], "ci_high": d[cols[2]]})
    fig.add_trace(go.Scatter(
        x=d[cols[0]], y=[_pretty(o) for o in d["outcome"]], mode="markers", name="estimate",
        marker=dict(color=POOLED, size=10, symbol="square"),
        error_x=dict(_errors(frame), color=POOLED), customdata=custom,
        hovertemplate="%{y}: %{x:.3f}<br>" + "<br>".join(parts) + "<extra></extra>",
        meta={"role": "effects", "units": units},
    ))
    fig.update_layout(template=TEMPLATE, title=title, showlegend=False,
                      height=max(300, 120 + 40 * len(d)),
                      xaxis=dict(title=xtitle), yaxis=dict(title="Outcome", type="category", automargin=True))
    return fig


def dprime_distribution(sdt: pd.DataFrame, test: pd.DataFrame | None = None) -> go.Figure:
    """Histogram of participants' d' (sensitivity to a clip being AI-made), each participant as
    a point below it, 0 = chance; with `attribution.dprime_test` output, the mean and its CI."""
    title = "Telling AI from human clips: sensitivity d' per participant"
    if not _has(sdt, "dprime"):
        return not_measured(title, "no source judgments")
    d = sdt.dropna(subset=["dprime"])
    fig = go.Figure(go.Histogram(x=d["dprime"], name="participants", marker_color="#999999",
                                 opacity=0.7, hovertemplate="d' %{x}<br>%{y} participants<extra></extra>"))
    rng = np.random.default_rng(0)
    ids = d["participant_id"].astype(str) if "participant_id" in d.columns else pd.Series([""] * len(d))
    fig.add_trace(go.Scatter(
        x=d["dprime"], y=-0.5 - rng.uniform(0, 1, len(d)), mode="markers", name="each participant",
        marker=dict(color=NEUTRAL, size=6, opacity=0.7), text=ids, yaxis="y",
        hovertemplate="%{text}<br>d' %{x:.2f}<extra></extra>", meta={"role": "participants"},
    ))
    fig.add_vline(x=0, line=dict(color=NEUTRAL, dash="dot"), annotation_text="chance")
    if test is not None and _has(test, "mean_dprime", "ci_low", "ci_high"):
        t = test.iloc[0]
        fig.add_trace(go.Scatter(
            x=[t["mean_dprime"]], y=[-2.0], mode="markers", name="mean d' (95% CI)",
            marker=dict(color=POOLED, size=11, symbol="square"),
            error_x=_errors(pd.DataFrame({"mean": [t["mean_dprime"]], "ci_low": [t["ci_low"]],
                                          "ci_high": [t["ci_high"]]})),
            hovertemplate="mean d' %{x:.2f}<extra></extra>", meta={"role": "mean"},
        ))
    fig.update_layout(template=TEMPLATE, title=title, bargap=0.05,
                      xaxis=dict(title="d' (z(hit rate) - z(false-alarm rate); 0 = chance)"),
                      yaxis=dict(title="Participants (count)"))
    return fig


def accuracy_by_clip(acc: pd.DataFrame) -> go.Figure:
    """Share of participants who judged each clip's source correctly, with 95% CI, sorted, by
    source (`attribution.accuracy_by_clip` output). 0.5 is guessing."""
    title = "Source judged correctly, per clip (95% CI)"
    if not _has(acc, "stimulus_id", "accuracy"):
        return not_measured(title, "no source judgments")
    d = acc.dropna(subset=["accuracy"]).sort_values("accuracy").reset_index(drop=True)
    for c in ("ci_low", "ci_high"):
        if c not in d.columns:
            d[c] = d["accuracy"]
    fig = go.Figure()
    src_col = d["source"] if "source" in d.columns else pd.Series(["all"] * len(d))
    for src in [s for s in SOURCES if s in set(src_col)] + sorted(set(src_col) - set(SOURCES)):
        part = d[src_col == src]
        frame = part.rename(columns={"accuracy": "mean"})
        custom = part[[c for c in ("n", "mean_confidence") if c in part.columns]]
        fig.add_trace(go.Scatter(
            x=part["accuracy"], y=part["stimulus_id"].astype(str), mode="markers", name=_label(src),
            marker=dict(color=_color(src), symbol=SOURCE_SYMBOLS.get(src, "circle"), size=9),
            error_x=dict(_errors(frame), color=_color(src)), customdata=custom.to_numpy(),
            hovertemplate="clip %{y}<br>accuracy %{x:.2f}"
                          + ("<br>n = %{customdata[0]}" if "n" in custom else "") + "<extra></extra>",
            meta={"role": "clips", "source": src},
        ))
    fig.add_vline(x=0.5, line=dict(color=NEUTRAL, dash="dot"), annotation_text="guessing")
    fig.update_layout(template=TEMPLATE, title=title, height=max(320, 100 + 18 * len(d)),
                      xaxis=dict(title="Proportion judged correctly", range=[0, 1.02]),
                      yaxis=dict(title="Clip", type="category", categoryorder="array", automargin=True,
                                 categoryarray=list(d["stimulus_id"].astype(str)),
                                 tickmode="array", tickvals=list(d["stimulus_id"].astype(str))))
    return fig


def confidence_accuracy(conf: pd.DataFrame) -> go.Figure:
    """Accuracy of source judgments per confidence bin (`attribution.confidence_accuracy`)."""
    title = "Confidence and accuracy of source judgments"
    if not _has(conf, "confidence_bin", "accuracy"):
        return not_measured(title, "no confidence ratings")
    d = conf.dropna(subset=["accuracy"])
    custom = d[[c for c in ("n", "mean_confidence") if c in d.columns]].to_numpy()
    fig = go.Figure(go.Scatter(
        x=d["confidence_bin"].astype(str), y=d["accuracy"], mode="lines+markers", name="accuracy",
        marker=dict(color=POOLED, size=9), customdata=custom,
        hovertemplate="confidence %{x}<br>accuracy %{y:.2f}"
                      + ("<br>n = %{customdata[0]}" if "n" in d.columns else "") + "<extra></extra>",
    ))
    fig.add_hline(y=0.5, line=dict(color=NEUTRAL, dash="dot"), annotation_text="guessing")
    fig.update_layout(template=TEMPLATE, title=title, xaxis=dict(title="Confidence (bin, 50-100 %)", type="category"),
                      yaxis=dict(title="Proportion judged correctly", range=[0, 1.02]))
    return fig


def power_curve(power: pd.DataFrame, *, target: float = 0.8) -> go.Figure:
    """Power against number of participants with the simulation's 95% CI and a line at `target`
    (80% by default) (`power` output: n_participants, power, optional ci_low, ci_high)."""
    title = "Power by number of participants"
    if not _has(power, "n_participants", "power"):
        return not_measured(title, "no power simulation")
    d = power.dropna(subset=["power"]).sort_values("n_participants")
    # one curve per test (analysis.power: term source / label / pairs), else one curve
    groups = list(d.groupby("term", sort=False)) if "term" in d.columns else [("power", d)]
    colours = [POOLED, "#E69F00", "#009E73"]
    fig = go.Figure()
    for k, (name, g) in enumerate(groups):
        colour = colours[k % len(colours)]
        frame = g.rename(columns={"power": "mean"})
        error = dict(_errors(frame), color=colour) if {"ci_low", "ci_high"} <= set(g.columns) else None
        fig.add_trace(go.Scatter(
            x=g["n_participants"], y=g["power"], mode="lines+markers", name=str(name),
            marker=dict(color=colour, size=8), line=dict(color=colour), error_y=error,
            hovertemplate=f"{name}: " + "%{x} participants<br>power %{y:.2f}<extra></extra>",
        ))
    fig.add_hline(y=target, line=dict(color=SOURCE_COLORS["ai"], dash="dash"),
                  annotation_text=f"{target:.0%}", annotation_position="bottom right")
    fig.update_layout(template=TEMPLATE, title=title, showlegend=len(groups) > 1,
                      xaxis=dict(title="Participants (number)"),
                      yaxis=dict(title="Power (share of simulations with p < alpha)", range=[0, 1.02]))
    return fig
