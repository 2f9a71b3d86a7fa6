"""Plotly charts of the follow-up analysis (analysis.followup), in analysis.charts' style:
source colours and symbols, 95% intervals as error bars, a 'not measured' figure for empty input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.charts import (NEUTRAL, SOURCE_SYMBOLS, TEMPLATE, _color, _errors, _has, _label, _sources_present,
                             not_measured)
from analysis.formatting import format_number


def recall_chart(props: pd.DataFrame, model: pd.DataFrame | None, followup: str) -> go.Figure:
    """Proportion of seen clips recalled, per source, Wilson 95% CI; the model's odds ratio in
    the title."""
    title = f"Free recall at follow-up {followup}"
    if not _has(props, "source", "proportion"):
        return not_measured(title, "no recall answers")
    if model is not None and len(model):
        m = model.iloc[0]
        title += (f"<br><sub>odds ratio human/AI {format_number(m['odds_ratio'])} "
                  f"[{format_number(m['or_ci_low'])}, {format_number(m['or_ci_high'])}]</sub>")
    fig = go.Figure()
    for src in _sources_present(props):
        r = props[props["source"] == src]
        fig.add_trace(go.Bar(x=[_label(src)], y=r["proportion"], name=_label(src), marker_color=_color(src),
                             error_y=dict(_errors(r.rename(columns={"proportion": "mean"})), color="#222"),
                             customdata=r[["recalled", "n"]].to_numpy(),
                             hovertemplate="%{x}: %{y:.2f} (%{customdata[0]} of %{customdata[1]})<extra></extra>",
                             meta={"role": "recall", "source": src}))
    fig.update_layout(template=TEMPLATE, title=title, height=360, showlegend=False,
                      yaxis=dict(title="Proportion of seen clips recalled", range=[0, 1.02]))
    return fig


def recognition_chart(sdt: pd.DataFrame, summary: pd.DataFrame | None, followup: str) -> go.Figure:
    """Each participant's d' per source (jittered points) with the mean and its 95% CI."""
    title = f"Recognition at follow-up {followup}: d' by source"
    if not _has(sdt, "source", "dprime"):
        return not_measured(title, "no recognition answers")
    rng = np.random.default_rng(0)
    fig = go.Figure()
    for i, src in enumerate(_sources_present(sdt)):
        g = sdt[sdt["source"] == src]
        fig.add_trace(go.Scatter(x=i + rng.uniform(-0.15, 0.15, len(g)), y=g["dprime"], mode="markers",
                                 name=f"{_label(src)}: participants", opacity=0.5,
                                 marker=dict(color=_color(src), symbol=SOURCE_SYMBOLS.get(src, "circle"), size=6),
                                 text=g["participant_id"], hovertemplate="%{text}: d' %{y:.2f}<extra></extra>",
                                 meta={"role": "participants", "source": src}))
        if summary is not None and (summary["comparison"] == src).any():
            s = summary[summary["comparison"] == src]
            fig.add_trace(go.Scatter(x=[i + 0.3], y=s["mean_dprime"], mode="markers", name=f"{_label(src)}: mean",
                                     marker=dict(color="#222", size=10, symbol="line-ew-open", line=dict(width=3)),
                                     error_y=dict(_errors(s.rename(columns={"mean_dprime": "mean"})), color="#222"),
                                     meta={"role": "mean", "source": src}))
    fig.add_hline(y=0, line=dict(color=NEUTRAL, dash="dot"), annotation_text="chance")
    srcs = _sources_present(sdt)
    fig.update_layout(template=TEMPLATE, title=title, height=380,
                      xaxis=dict(tickmode="array", tickvals=list(range(len(srcs))), ticktext=[_label(s) for s in srcs]),
                      yaxis=dict(title="d' (seen vs foils)"))
    return fig


def feeling_chart(means: pd.DataFrame, models: pd.DataFrame | None, followup: str) -> go.Figure:
    """Mean felt valence and arousal in session 1 and at the follow-up, per source, 95% CI: the
    lines' different slopes are the session x source interaction."""
    title = f"Felt valence and arousal, session 1 and follow-up {followup}"
    if not _has(means, "outcome", "mean"):
        return not_measured(title, "no valence or arousal rated in both sessions")
    fig = go.Figure()
    outcomes = list(dict.fromkeys(means["outcome"]))
    for k, outcome in enumerate(outcomes):
        for src in _sources_present(means[means["outcome"] == outcome]):
            g = means[(means["outcome"] == outcome) & (means["source"] == src)].sort_values("session")
            x = [f"{outcome}: session 1" if s == 1 else f"{outcome}: follow-up" for s in g["session"]]
            fig.add_trace(go.Scatter(x=x, y=g["mean"], mode="lines+markers", name=f"{_label(src)} ({outcome})",
                                     line=dict(color=_color(src), dash="solid" if k == 0 else "dash"),
                                     marker=dict(symbol=SOURCE_SYMBOLS.get(src, "circle"), size=9),
                                     error_y=dict(_errors(g), color=_color(src)),
                                     meta={"role": "means", "source": src, "outcome": outcome}))
    if models is not None and len(models):
        sub = "; ".join(f"{m.outcome} interaction {format_number(m.interaction)} "
                        f"[{format_number(m.ci_low)}, {format_number(m.ci_high)}]" for m in models.itertuples())
        title += f"<br><sub>{sub}</sub>"
    fig.update_layout(template=TEMPLATE, title=title, height=400, yaxis=dict(title="Mean rating (1-9)"),
                      xaxis=dict(type="category"))
    return fig


def linger_chart(linger: pd.DataFrame, followup: str) -> go.Figure:
    """Per clip: recall rate against the change in felt arousal (or valence), by source."""
    title = f"What lingered, per clip (follow-up {followup})"
    ycol = "arousal_change" if _has(linger, "arousal_change") else (
        "valence_change" if _has(linger, "valence_change") else None)
    if not _has(linger, "recall_rate") or ycol is None:
        return not_measured(title, "needs recall and a valence or arousal rated in both sessions")
    fig = go.Figure()
    for src in _sources_present(linger):
        g = linger[linger["source"] == src]
        fig.add_trace(go.Scatter(x=g["recall_rate"], y=g[ycol], mode="markers+text", name=_label(src),
                                 text=g["stimulus_id"], textposition="top center", textfont=dict(size=10),
                                 marker=dict(color=_color(src), symbol=SOURCE_SYMBOLS.get(src, "circle"), size=10),
                                 customdata=g[["n"]].to_numpy(),
                                 hovertemplate="%{text}<br>recall %{x:.2f}<br>change %{y:.2f}<br>n = "
                                               "%{customdata[0]}<extra></extra>",
                                 meta={"role": "clips", "source": src}))
    fig.add_hline(y=0, line=dict(color=NEUTRAL, dash="dot"))
    fig.update_layout(template=TEMPLATE, title=title, height=420,
                      xaxis=dict(title="Recall rate", range=[-0.02, 1.02]),
                      yaxis=dict(title=f"Change in {ycol.split('_')[0]} (follow-up - session 1)"))
    return fig
