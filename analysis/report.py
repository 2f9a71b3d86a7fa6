"""The self-contained HTML report (`kuleshov report`, the dashboard's interim report).

`build_report` turns the result tables of analysis.results (and charts) into ONE HTML file that
opens offline: plotly.js is inlined once in <head>, and nothing is fetched from the network.
The methods paragraph comes from analysis.methods. Tables sit in a horizontally scrolling box
so they fit a laptop and a phone; the summary opens with the decision on the primary outcome.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import charts, followup as fup, load, trace_report
from analysis.formatting import format_number, p_equals, plain_number, plural
from analysis.methods import exclusion_sentence, methods_html, single_label_note, software_versions
from analysis.results import (CORRECTIONS, Plan, analyze, bootstrap_arg, clips_phrase, counts, decision_p,
                              enrolment_sentence, exclusion_counts, load_source, main_outcomes,
                              nothing_left_error, outcomes_arg, with_decisions)
from study.config import check_writable

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
# The primary table as read: the effect, its decision and the p-values; the model's details
# (sample sizes, SE, df, t ...) in a second table, so the first one fits a laptop's width.
PRIMARY_MAIN = ["outcome", "estimate", "ci_low", "ci_high", "d", "d_ci_low", "d_ci_high", "p", "p_holm", "p_bh",
                "tost_p", "decision"]
PRIMARY_DETAILS = ["outcome", "model_used", "n_participants", "n_stimuli", "nobs", "se", "df", "t", "sesoi_raw",
                   "singular", "d_ci_method", "n_boot"]  # p_sided and the TOST's verdict are said in the methods and the decision
DECISION_LABELS = {"difference": "difference", "negligible_difference": "difference within SESOI",
                   "equivalence": "equivalent", "inconclusive": "inconclusive", "not_estimated": "not estimated"}

CSS = """
*,*::before,*::after{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1100px;margin:0 auto;padding:1rem 1.5rem;line-height:1.45;overflow-wrap:break-word}
h1{font-size:1.7rem;margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
nav ol{columns:3;font-size:.9rem} .banner{background:#fff3cd;border:2px solid #b8860b;padding:.8rem 1rem;font-weight:600;margin:1rem 0}
p.decision{font-size:1.05rem;border-left:4px solid #0072B2;padding:.4rem .8rem;background:#f3f8fc}
.overflow{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch;margin:.2rem 0 1rem;
 background:linear-gradient(to right,#fff 30%,#fff0) left/40px 100% no-repeat local,linear-gradient(to left,#fff 30%,#fff0) right/40px 100% no-repeat local,
 radial-gradient(farthest-side at 0 50%,#0003,#0000) left/12px 100% no-repeat scroll,radial-gradient(farthest-side at 100% 50%,#0003,#0000) right/12px 100% no-repeat scroll}
table.results{border-collapse:collapse;font-size:.85rem;font-variant-numeric:tabular-nums}
table.results th,table.results td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
table.results th{background:#f4f4f4;white-space:nowrap} table.results .num{text-align:right;white-space:nowrap}
details summary{cursor:pointer;color:#0072B2;margin:.4rem 0}
p.caption{font-weight:600;margin:.8rem 0 .2rem;font-size:.9rem}
.note{color:#555;font-style:italic} section.skipped h2{color:#777} figure.chart{margin:0 0 1rem;max-width:100%}
img.still{max-width:240px;height:auto;display:block}
code{background:#f4f4f4;padding:0 .2rem;overflow-wrap:anywhere} .muted{color:#666;font-size:.85rem}
@media (max-width:700px){body{padding:.6rem .8rem} h1{font-size:1.35rem} h2{font-size:1.2rem}
 nav ol{columns:1;padding-left:1.2rem} table.results{font-size:.78rem} table.results th,table.results td{padding:.2rem .4rem}
 .js-plotly-plot .gtitle{font-size:13px !important} .js-plotly-plot .xtitle,.js-plotly-plot .ytitle{font-size:11px !important}}
"""

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
            text = format_number(v, c)
            cells.append(f'<td{" class=num" if numeric[c] else ""}>{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    # The caption sits outside the scrolling box, so a phone shows it whole above a wide table.
    cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
    out = (f'{cap}<div class="overflow"><table class="results"{ident}><thead><tr>{head}</tr></thead>'
           f'<tbody>{"".join(rows)}</tbody></table></div>')
    if more > 0:
        out += f'<p class="note">{more} more rows in the CSV tables (kuleshov analyze).</p>'
    if len(d) > collapse_after:
        label = html.escape(caption or "Table")
        out = f"<details><summary>{label} ({len(d)} rows)</summary>{out}</details>"
    return out


def chart_html(fig, div_id: str) -> str:
    """A figure as a div + script, without plotly.js (inlined once in <head>).

    The legend goes below the plot, in rows: beside it, it took half of a phone's width."""
    if fig.layout.showlegend is not False:
        fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top"))
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})
    return f'<figure class="chart" data-chart="{div_id}">{body}</figure>'


def _section(sid: str, heading: str, body: str, *, skipped: str | None = None) -> str:
    if skipped is not None:
        return (f'<section id="{sid}" class="skipped" data-status="skipped"><h2>{html.escape(heading)}</h2>'
                f'<p class="note">Not shown: {html.escape(skipped)}.</p></section>')
    return f'<section id="{sid}" data-status="shown"><h2>{html.escape(heading)}</h2>\n{body}\n</section>'


def _effect(r: Any) -> str:
    """'human &minus; AI = 0.412 scale points [0.201, 0.623], d = 0.350' of a primary-table row."""
    return (f"human &minus; AI = {format_number(r['estimate'])} scale points "
            f"[{format_number(r['ci_low'])}, {format_number(r['ci_high'])}], d = {format_number(r['d'])}")


def decision_sentence(r: Any, plan: Plan, primary: bool) -> str:
    """One sentence saying what the numbers say about one outcome (analysis.results.DECISIONS),
    naming the smallest effect of interest (SESOI) the equivalence test used."""
    name = f"<b>{html.escape(str(r['outcome']))}</b>" + (" (primary outcome)" if primary else "")
    decision = r["decision"]
    if decision == "not_estimated":
        why = r.get("messages")
        return f"{name}: not estimated" + (f" ({html.escape(str(why))})." if isinstance(why, str) and why else ".")
    p_used = decision_p(r, plan, primary)
    p_text = html.escape(p_equals(p_used) if primary or CORRECTIONS[plan.correction][0] == "p"
                         else p_equals(p_used, "adjusted p"))
    sesoi = (f"the smallest effect of interest (d = &plusmn;{plain_number(plan.sesoi)}; "
             f"{html.escape(p_equals(r.get('tost_p'), 'TOST p'))})")
    higher, lower = ("human-made", "AI-generated") if r["estimate"] > 0 else ("AI-generated", "human-made")
    if not primary:  # one line each, the same verdicts; the SESOI is named in the first sentence
        verdict = {"difference": f"a difference, {higher} higher",
                   "negligible_difference": f"{higher} higher, by less than the smallest effect of interest",
                   "equivalence": "equivalent within the smallest effect of interest",
                   "inconclusive": "inconclusive"}[decision]
        tost = html.escape(p_equals(r.get("tost_p"), "TOST p"))
        return f"{name}: {verdict} ({p_text}; {tost}): {_effect(r)}."
    if decision == "difference":
        return (f"{name}: a difference &mdash; {higher} clips were rated higher than {lower} clips, {_effect(r)}, "
                f"{p_text}; the effect is not shown to lie within {sesoi}.")
    if decision == "negligible_difference":
        return (f"{name}: a difference too small to matter &mdash; {higher} clips were rated higher, {_effect(r)}, "
                f"{p_text}, but by less than {sesoi}.")
    if decision == "equivalence":
        return (f"{name}: equivalent &mdash; the difference lies within {sesoi}: {_effect(r)}; "
                f"no difference shown ({p_text}).")
    return (f"{name}: inconclusive &mdash; neither a difference ({p_text}) nor equivalence within {sesoi} "
            f"was shown: {_effect(r)}.")


def _summary_html(trials: pd.DataFrame, results: Mapping[str, pd.DataFrame], plan: Plan,
                  participants: pd.DataFrame | None = None) -> str:
    n = counts(trials)
    roles = results.get("outcomes")
    prim = results["primary"]
    primary_names = list(roles.loc[roles["role"] == "primary", "outcome"]) if roles is not None else []
    if "decision" not in prim.columns:
        prim = with_decisions(prim, plan, primary_names)
    rows = [r for _, r in prim.iterrows()]
    first = [r for r in rows if r["outcome"] in primary_names] or rows[:1]
    lead = "".join(f'<p class="decision" id="decision">{decision_sentence(r, plan, True)}</p>' for r in first)
    some_dropped = prim["messages"].astype(str).str.contains("rows dropped for missing values").any() \
        if "messages" in prim.columns else False
    items = [f"<li>{plural(n['participants'], 'participant')}, {clips_phrase(n)}, {n['ratings']} ratings after "
             "exclusions" + (" (the rows a model could not use are counted in the methods)" if some_dropped else "")
             + f". {html.escape(enrolment_sentence(participants))}</li>"]
    if single_label_note(trials):
        items.append(f"<li>{single_label_note(trials)}</li>")
    for r in rows:
        if r["outcome"] in primary_names or (not primary_names and r is rows[0]):
            continue
        items.append(f"<li>{decision_sentence(r, plan, False)}</li>")
    if "dprime" in results and len(results["dprime"]):
        dp = results["dprime"].iloc[0]
        items.append(f"<li>Telling AI from human clips: mean d' = {format_number(dp['mean_dprime'])} "
                     f"[{format_number(dp['ci_low'])}, {format_number(dp['ci_high'])}], {html.escape(p_equals(dp['p']))}.</li>")
    return lead + f"<ul>{''.join(items)}</ul>"


def _primary_tables(prim: pd.DataFrame) -> str:
    shown = prim.assign(decision=prim["decision"].map(DECISION_LABELS)) if "decision" in prim else prim
    return (table_html(shown, columns=PRIMARY_MAIN, table_id="primary-table",
                       caption="Human minus AI: estimate in scale points, d, p-values and the decision")
            + table_html(prim, columns=PRIMARY_DETAILS, table_id="primary-details",
                         caption="Models: sample sizes, standard errors and Satterthwaite df"))


def build_report(trials: pd.DataFrame, *, study: Any = None, participants: pd.DataFrame | None = None,
                 excluded: pd.DataFrame | None = None, outcomes: list[str] | None = None, plan: Any = None,
                 title: str | None = None, interim: bool = False, results: Mapping[str, pd.DataFrame] | None = None,
                 scales: Mapping[str, Any] | None = None, codebook: pd.DataFrame | None = None,
                 include_pilot: bool | None = None,
                 data_source: str | None = None, traces: pd.DataFrame | None = None,
                 marks: pd.DataFrame | None = None, clip_files: Mapping[str, Path] | None = None,
                 bootstrap: int = 0, seed: int = 1, progress=None, followup: pd.DataFrame | None = None,
                 session1: pd.DataFrame | None = None, load_notes: list[str] | None = None) -> str:
    """The whole report as one self-contained HTML string (plotly.js inlined once, no network).

    Pass `results` from `analyze` to avoid computing twice. `interim=True` adds a banner saying
    the data collection is still running. Every section in SECTIONS is present, by its id; a
    section whose data were not collected says so instead of showing a chart. With `traces`
    (analysis.load.load_traces) or `marks` (load_marks), the sections of analysis.trace_report
    follow the emotions; `clip_files` (clip id -> file) gives them their still frames. With `followup`
    (analysis.load.load_followup) holding rows, the section of analysis.followup ("Does it linger?")
    comes before the software, compared with `session1` (the long frame, load_long; by default the
    valence and arousal of `trials`, so session 1's exclusions apply); without follow-up rows the
    report says nothing about follow-ups. `load_notes` (analysis.load.LoadedData.notes: how a CSV
    was read, what loading left out) are said in the methods."""
    import plotly.offline

    if isinstance(trials, pd.DataFrame) and trials.empty:
        raise nothing_left_error(excluded, participants)
    trials = load.check_trial_table(trials)
    p = Plan.from_any(plan, study)
    if results is None:
        results = analyze(trials, outcomes=outcomes, plan=p, study=study, excluded=excluded, scales=scales,
                          codebook=codebook, bootstrap=bootstrap, seed=seed, progress=progress)
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
    body["methods"] = methods_html(trials, results, p, include_pilot=include_pilot, load_notes=load_notes)
    ex = results.get("exclusions")
    body["exclusions"] = "<p>" + exclusion_sentence(ex) + "</p>" + (
        table_html(exclusion_counts(ex), caption="Exclusions by rule")
        + table_html(ex, caption="Every excluded participant and trial") if ex is not None and len(ex) else "")
    body["descriptives"] = ('<p class="muted">Means over all ratings; these intervals treat ratings as independent '
                            'and describe the data, they do not test.</p>' + table_html(results["descriptives"]))
    body["primary"] = _primary_tables(prim)
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

    extra = trace_report.sections(trials, traces, marks, table_html=table_html, chart_html=chart_html,
                                  clip_files=clip_files, primary=p.primary_outcome, neutral=trace_report.tr.neutral_point(study))
    body.update(extra)
    order = list(SECTIONS)
    if extra:
        at = [sid for sid, _ in order].index(trace_report.AFTER) + 1
        order[at:at] = [(sid, h) for sid, h in trace_report.SECTIONS if sid in extra]
    linger = fup.section_html(followup, session1, table_html=table_html, chart_html=chart_html, trials=trials)
    if linger is not None:
        body[fup.SECTION[0]] = linger
        order.insert([sid for sid, _ in order].index("software"), fup.SECTION)
    sections = []
    for sid, heading in order:
        if sid in body:
            sections.append(_section(sid, heading, body[sid]))
        else:
            sections.append(_section(sid, heading, "", skipped=skipped.get(sid, "not measured in this study")))
    nav = "".join(f'<li><a href="#{sid}">{html.escape(h)}</a></li>' for sid, h in order)
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
# the CLI


def cli_report(args: Any) -> int:
    include_pilot = bool(getattr(args, "include_pilot", False))
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give the path of the HTML file to write, e.g. {out / 'report.html'}")
    check_writable(out, "report")
    data = load_source(args)
    traces, marks, files = trace_report.time_courses_for_source(args.study, getattr(args, "url", None))
    followup = fup.followup_for_source(args.study, getattr(args, "url", None), include_pilot=include_pilot)
    page = build_report(data.trials, study=data.study, participants=data.participants, excluded=data.excluded,
                        codebook=data.codebook, include_pilot=include_pilot if data.pilot_known else None,
                        data_source=str(args.study), outcomes=outcomes_arg(args),
                        interim=bool(getattr(args, "interim", False)), traces=traces, marks=marks,
                        clip_files=files, followup=followup, load_notes=data.notes,
                        **bootstrap_arg(args, data.trials))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0

