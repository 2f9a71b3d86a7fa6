"""Charts of continuous ratings and marked moments: tidy DataFrames in, Plotly figures out.

The clip's timeline is drawn under the x axis as a strip of thumbnails (stills at regular
times, given as data URIs by analysis.marks), so a reader sees what was on screen when the
curve rose or people marked. Colours and labels as analysis.charts (Okabe-Ito, human blue,
AI vermillion).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from analysis.charts import NEUTRAL, TEMPLATE, _color, _label, _sources_present, not_measured

THUMB_STRIP = 0.22  # share of the plot's height the thumbnail strip takes, below the x axis


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _band(fig: go.Figure, x, lo, hi, color: str, name: str) -> None:
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo)[::-1], fill="toself",
                             fillcolor=_rgba(color, 0.18), line=dict(width=0), hoverinfo="skip",
                             showlegend=False, name=f"{name} 95% CI"))


def _timeline(fig: go.Figure, thumbs: Sequence[tuple[float, str]], duration: float) -> None:
    """Thumbnails (time, data URI) centred on their times in a strip under the x axis."""
    if not thumbs:
        return
    width = duration / max(1, len(thumbs))
    for t, uri in thumbs:
        fig.add_layout_image(dict(source=uri, xref="x", yref="paper", x=t, y=-0.2, sizex=width * 0.95,
                                  sizey=THUMB_STRIP, xanchor="center", yanchor="top", sizing="contain",
                                  layer="above"))
    # the strip takes the legend's place under the axis; the title says what the lines are
    fig.update_layout(margin=dict(b=150), showlegend=False, xaxis_title_standoff=4,
                      meta={**(fig.layout.meta or {}), "thumbnails": len(thumbs)})


def mean_curves_by_source(curves: pd.DataFrame, dimension: str) -> go.Figure:
    """Mean trace per source over the normalised clip time, with its pointwise 95% band."""
    d = curves[curves["dimension"] == dimension] if len(curves) else curves
    title = f"{dimension.capitalize()} over the clip, by source"
    if d is None or not len(d) or d["mean"].notna().sum() == 0:
        return not_measured(title, "no usable traces")
    fig = go.Figure()
    for src in _sources_present(d):
        g = d[d["source"] == src].sort_values("t")
        ok = g["ci_low"].notna()
        _band(fig, g.loc[ok, "t"], g.loc[ok, "ci_low"], g.loc[ok, "ci_high"], _color(src), _label(src))
        fig.add_trace(go.Scatter(x=g["t"], y=g["mean"], mode="lines", line=dict(color=_color(src), width=2.5,
                                 dash="solid" if src == "human" else "dash"), name=_label(src),
                                 customdata=g["n"], hovertemplate="%{x:.0%} of the clip: %{y:.2f} (n = %{customdata})"
                                 "<extra>" + _label(src) + "</extra>"))
    fig.update_layout(template=TEMPLATE, title=title, height=380,
                      xaxis=dict(title="share of the clip", tickformat=".0%", range=[0, 1]),
                      yaxis=dict(title=f"mean {dimension} (95% CI across participants)"))
    return fig


def clip_curve(curves: pd.DataFrame, clip: str, dimension: str, thumbs: Sequence[tuple[float, str]] = (),
               peaks: pd.DataFrame | None = None) -> go.Figure:
    """One clip's mean trace over seconds with its 95% band, the timeline under it, and the
    planted or found peak times as markers when `peaks` (time_s, value) is given."""
    d = curves[(curves["clip"] == clip) & (curves["dimension"] == dimension)].sort_values("t")
    title = f"{clip}: {dimension} over time"
    if len(d):
        title += f"<br><sub>{_label(str(d['source'].iloc[0]))}: mean and 95% band</sub>"
    if not len(d) or d["mean"].notna().sum() == 0:
        return not_measured(title, "no usable traces of this clip")
    src = str(d["source"].iloc[0])
    fig = go.Figure()
    ok = d["ci_low"].notna()
    _band(fig, d.loc[ok, "t"], d.loc[ok, "ci_low"], d.loc[ok, "ci_high"], _color(src), _label(src))
    fig.add_trace(go.Scatter(x=d["t"], y=d["mean"], mode="lines", line=dict(color=_color(src), width=2.5),
                             name=f"{clip} ({_label(src)})", customdata=d["n"],
                             hovertemplate="%{x:.2f} s: %{y:.2f} (n = %{customdata})<extra></extra>"))
    if peaks is not None and len(peaks):
        fig.add_trace(go.Scatter(x=peaks["time_s"], y=peaks["value"], mode="markers", name="peak",
                                 marker=dict(symbol="triangle-down", size=11, color=NEUTRAL)))
    duration = float(d["t"].max())
    fig.update_layout(template=TEMPLATE, title=title, height=430, xaxis=dict(title="video time (s)",
                      range=[0, duration]), yaxis=dict(title=f"mean {dimension} (95% CI)"))
    _timeline(fig, thumbs, duration)
    return fig


def mark_density_chart(density: pd.DataFrame, peaks: pd.DataFrame, clip: str, mark: str,
                       thumbs: Sequence[tuple[float, str]] = ()) -> go.Figure:
    """Marks per viewer per second over the clip with its bootstrap band, peaks marked with
    their times, and the clip's timeline under the axis."""
    d = density[(density["clip"] == clip) & (density["mark"] == mark)].sort_values("t")
    title = f"{clip}: moments marked \"{mark}\""
    if not len(d):
        return not_measured(title, "nobody marked this clip")
    title += f"<br><sub>{int(d['n_viewers'].iloc[0])} viewers, {int(d['n_marks'].iloc[0])} marks</sub>"
    src = str(d["source"].iloc[0])
    fig = go.Figure()
    _band(fig, d["t"], d["ci_low"], d["ci_high"], _color(src), "density")
    fig.add_trace(go.Scatter(x=d["t"], y=d["density"], mode="lines", line=dict(color=_color(src), width=2.5),
                             name=f"marks per viewer per second (n = {int(d['n_viewers'].iloc[0])} viewers)",
                             hovertemplate="%{x:.2f} s: %{y:.3f}<extra></extra>"))
    p = peaks[(peaks["clip"] == clip) & (peaks["mark"] == mark)] if len(peaks) else peaks
    if len(p):
        fig.add_trace(go.Scatter(x=p["time_s"], y=p["density"], mode="markers+text", name="peak",
                                 text=[f"{t:.1f} s" for t in p["time_s"]], textposition="top center",
                                 marker=dict(symbol="triangle-down", size=12, color=NEUTRAL),
                                 customdata=p["share_viewers"],
                                 hovertemplate="peak at %{x:.2f} s: %{customdata:.0%} of viewers marked here"
                                 "<extra></extra>"))
    duration = float(d["t"].max())
    fig.update_layout(template=TEMPLATE, title=title, height=430,
                      xaxis=dict(title="video time (s)", range=[0, duration]),
                      yaxis=dict(title="marks per viewer per second", rangemode="tozero"),
                      meta={"peaks": [round(float(t), 2) for t in p["time_s"]] if len(p) else []})
    _timeline(fig, thumbs, duration)
    return fig
