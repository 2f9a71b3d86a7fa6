"""Does it linger? The analysis of follow-up sessions (issue 14).

Input: the follow-up frame of analysis.load.load_followup (one row per per-clip answer in a
follow-up session; `measure` names the answer) and the session-1 long frame (load_long), from
which the SAM valence and arousal of each clip are taken. Each follow-up (1 day, 7 days, ...)
is analysed on its own, against session 1:

* recall by source: recalled ~ x + (1 | participant) + (1 | clip), logistic, by Laplace
  approximation (analysis.glmm, pinned to lme4's glmer), x = +0.5 human, -0.5 AI; the odds
  ratio human/AI with its 95% Wald CI, and the raw proportions with Wilson intervals;
* recognition by source: signal detection per participant and source with the log-linear
  correction of analysis.attribution.sdt_per_participant (a hit is "old" to a still of a clip
  the participant saw, a false alarm "old" to a foil of that source); d' compared between the
  sources by a paired t-test over participants who have both;
* change in felt valence and arousal: value ~ x * s + (1 | participant) + (1 | clip)
  + (1 | participant:clip), s = -0.5 session 1, +0.5 follow-up (REML, Satterthwaite df,
  analysis.lmm); the x:s interaction is the lingering test: how much more the human-made
  clips' ratings rose (or the less they fell) from session 1 to the follow-up than the
  AI-generated clips'. Only clips the participant saw, rated in both sessions;
* a per-clip "linger" table: recall rate, hit rate and false-alarm rate (as a foil), mean
  change in valence and arousal, intrusions, vividness, watch-more, n.

What cannot be estimated is said in `messages`, never raised: every function here returns
its tables, with a note in place of a model the data do not support.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from analysis import attribution, glmm, lmm
from analysis.load import FOLLOWUP_COLUMNS
from analysis.lmm import RandomTerm, source_code
from study.errors import UserError

MEASURES = ("recalled", "recognised", "recognition_confidence", "vividness", "intrusions", "valence_now",
            "arousal_now", "watch_more")
FEELINGS = {"valence": "valence_now", "arousal": "arousal_now"}  # session-1 item -> follow-up measure
SECTION = ("followup", "Does it linger? Follow-up sessions")
# measured by benchmarks/followup_fpr.py (results/followup_fpr.json), 400 null datasets
RECALL_WALD_NOTE = ("The recall model's p and CI refer its Wald statistic to t with clips &minus; 2 degrees of "
                    "freedom (source is a property of the clip); glmer's Wald z (p_z in the table) is "
                    "anti-conservative when clips are few. On simulated null data with 16 clips (60 participants) "
                    "the t version gave p &lt; .05 in 5.5% of datasets [3.7%, 8.2%] and CIs covering the true "
                    "value 94% of the time; the z version 9.1% [6.6%, 12.3%] (benchmarks/followup_fpr.py).")


@dataclass
class FollowupResult:
    """The analysis of one follow-up against session 1."""

    followup: str
    session_number: int
    n_participants: int
    delay_hours: pd.DataFrame  # median, min, max, late count
    recall_proportions: pd.DataFrame | None = None
    recall_model: pd.DataFrame | None = None
    recognition_sdt: pd.DataFrame | None = None
    recognition_summary: pd.DataFrame | None = None
    feeling_means: pd.DataFrame | None = None
    feeling_models: pd.DataFrame | None = None
    linger: pd.DataFrame | None = None
    messages: list[str] = field(default_factory=list)


def check_frame(fu: pd.DataFrame) -> pd.DataFrame:
    """The follow-up frame with its types normalised; UserError naming what is wrong."""
    if not isinstance(fu, pd.DataFrame):
        raise UserError("the follow-up analysis needs the follow-up table (a pandas DataFrame)")
    missing = [c for c in FOLLOWUP_COLUMNS if c not in fu.columns]
    if missing:
        raise UserError(f"the follow-up table lacks the columns {', '.join(missing)} "
                        f"(expected: {', '.join(FOLLOWUP_COLUMNS)})")
    d = fu[FOLLOWUP_COLUMNS].copy()
    d["participant_id"] = d["participant_id"].astype(str)
    d["stimulus_id"] = d["stimulus_id"].astype(str)
    d["followup"] = d["followup"].astype(str)
    d["measure"] = d["measure"].astype(str)
    d["source"] = d["source"].astype("string").str.strip().str.lower()
    for c in ("session_number", "delay_hours", "value"):
        d[c] = pd.to_numeric(d[c], errors="coerce")
    d["seen"] = d["seen"].fillna(False).astype(bool)
    d["late"] = d["late"].fillna(False).astype(bool)
    return d


def followup_names(fu: pd.DataFrame) -> list[str]:
    """The follow-ups in session order."""
    if not len(fu):
        return []
    order = fu.groupby("followup")["session_number"].min().sort_values(kind="stable")
    return list(order.index)


def _measure(fu: pd.DataFrame, name: str, seen: bool | None = True) -> pd.DataFrame:
    d = fu[(fu["measure"] == name) & fu["value"].notna()]
    if seen is not None:
        d = d[d["seen"] == seen]
    return d


def recall_by_source(fu1: pd.DataFrame) -> tuple[pd.DataFrame | None, pd.DataFrame | None, list[str]]:
    """(proportions, model, messages) of `recalled` on seen clips of one follow-up."""
    d = _measure(fu1, "recalled")
    if d.empty:
        return None, None, ["recall: not asked in this follow-up (no 'recalled' answers)"]
    notes = []
    rows = []
    for src, g in d.groupby("source"):
        k, n = int(g["value"].sum()), len(g)
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        rows.append({"source": src, "n": n, "recalled": k, "proportion": k / n, "ci_low": lo, "ci_high": hi,
                     "participants": g["participant_id"].nunique(), "clips": g["stimulus_id"].nunique()})
    props = pd.DataFrame(rows)
    try:
        fit = glmm.fit_crossed_logistic(d.rename(columns={"value": "recalled"}), "recalled")
    except UserError as exc:
        return props, None, [f"recall model not estimated: {exc}"]
    r = fit.fixed.set_index("term").loc["x"]
    random = fit.random.set_index("group")["variance"]
    # Source is a property of the clip, so its test has the clips' degrees of freedom, not the
    # ratings': glmer's Wald z (kept as p_z) treats the SE as known and, with 16 clips, gave
    # p < .05 on 9.1% of null datasets (benchmarks/followup_fpr.py). The p and CI used here
    # refer z to t with clips - 2 df (the "between-within" df of SAS GLIMMIX for a between-clip
    # term), measured at 6.2% on the same null datasets.
    n_clips = fit.ngroups.get("stimulus_id") or 0
    df = max(n_clips - 2, 1)
    q = stats.t.ppf(0.975, df)
    beta, se = float(r["estimate"]), float(r["se"])
    model = pd.DataFrame([{
        "log_odds_ratio": beta, "se": se, "z": r["z"], "df": df, "p": float(2 * stats.t.sf(abs(beta / se), df)),
        "p_z": r["p"],
        "odds_ratio": np.exp(beta), "or_ci_low": np.exp(beta - q * se), "or_ci_high": np.exp(beta + q * se),
        "var_participant": random.get("participant_id", np.nan), "var_clip": random.get("stimulus_id", np.nan),
        "nobs": fit.nobs, "n_participants": fit.ngroups.get("participant_id"),
        "n_clips": fit.ngroups.get("stimulus_id"), "singular": fit.singular, "converged": fit.converged,
        "formula": fit.formula,
    }])
    notes += [f"recall model: {m}" for m in fit.messages]
    return props, model, notes


def recognition_by_source(fu1: pd.DataFrame) -> tuple[pd.DataFrame | None, pd.DataFrame | None, list[str]]:
    """(per participant x source signal detection, summary with the paired test, messages)."""
    d = _measure(fu1, "recognised", seen=None)
    if d.empty:
        return None, None, ["recognition: not asked in this follow-up (no 'recognised' answers)"]
    parts = []
    for src, g in d.groupby("source"):
        if not (g["seen"].any() and (~g["seen"]).any()):
            continue
        # attribution's signal detection with 'ai' as the signal: here the signal is a seen
        # clip and the answer 'old'
        trials = pd.DataFrame({"participant_id": g["participant_id"], "stimulus_id": g["stimulus_id"],
                               "source": np.where(g["seen"], "ai", "human"),
                               "judged_source": np.where(g["value"] > 0.5, "ai", "human")})
        sdt = attribution.sdt_per_participant(trials).rename(columns={"n_ai": "n_seen", "n_human": "n_foils"})
        sdt = sdt[(sdt["n_seen"] > 0) & (sdt["n_foils"] > 0)]
        parts.append(sdt.assign(source=src))
    if not parts:
        return None, None, ["recognition: no participant saw both stills of clips they watched and foils of "
                            "the same source, so d' cannot be computed"]
    sdt = pd.concat(parts, ignore_index=True)[["participant_id", "source", "hits", "false_alarms", "n_seen",
                                               "n_foils", "hit_rate", "fa_rate", "dprime", "criterion"]]
    rows = []
    for src, g in sdt.groupby("source"):
        v = g["dprime"].to_numpy(float)
        n = len(v)
        m = float(v.mean())
        se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        q = stats.t.ppf(0.975, n - 1) if n > 1 else np.nan
        rows.append({"comparison": src, "n": n, "mean_dprime": m, "se": se, "ci_low": m - q * se,
                     "ci_high": m + q * se, "t": np.nan, "df": np.nan, "p": np.nan,
                     "mean_hit_rate": g["hit_rate"].mean(), "mean_fa_rate": g["fa_rate"].mean()})
    notes = []
    wide = sdt.pivot(index="participant_id", columns="source", values="dprime").dropna()
    if {"human", "ai"} <= set(wide.columns) and len(wide) >= 2:
        diff = (wide["human"] - wide["ai"]).to_numpy(float)
        if np.ptp(diff) == 0:
            notes.append("recognition: d' differs between the sources by the same amount for every participant; "
                         "no test")
        else:
            res = stats.ttest_1samp(diff, 0.0)
            ci = res.confidence_interval(0.95)
            rows.append({"comparison": "human - ai", "n": len(diff), "mean_dprime": float(diff.mean()),
                         "se": float(diff.std(ddof=1) / np.sqrt(len(diff))), "ci_low": float(ci.low),
                         "ci_high": float(ci.high), "t": float(res.statistic), "df": float(len(diff) - 1),
                         "p": float(res.pvalue), "mean_hit_rate": np.nan, "mean_fa_rate": np.nan})
    else:
        notes.append("recognition: fewer than 2 participants have d' for both sources; no paired test")
    return sdt, pd.DataFrame(rows), notes


def _feeling_pairs(fu1: pd.DataFrame, long: pd.DataFrame | None, item: str) -> pd.DataFrame:
    """Session-1 and follow-up ratings of `item` on the clips each participant saw, long:
    participant_id, stimulus_id, source, session (1 or the follow-up's), value."""
    now = _measure(fu1, FEELINGS[item])
    if now.empty or long is None or not len(long):
        return pd.DataFrame(columns=["participant_id", "stimulus_id", "source", "session", "value"])
    s1 = long[(long["item_id"].astype(str) == item) & pd.to_numeric(long["value"], errors="coerce").notna()]
    if "instrument_id" in s1.columns and (s1["instrument_id"].astype(str) == "sam").any():
        s1 = s1[s1["instrument_id"].astype(str) == "sam"]
    s1 = (s1.assign(participant_id=s1["participant_id"].astype(str), stimulus_id=s1["stimulus_id"].astype(str),
                    value=pd.to_numeric(s1["value"], errors="coerce"))
          .groupby(["participant_id", "stimulus_id"], as_index=False)["value"].mean())
    fu_part = now[["participant_id", "stimulus_id", "source", "value"]]
    both = fu_part.merge(s1, on=["participant_id", "stimulus_id"], suffixes=("_now", "_s1"))
    out = pd.concat([
        both[["participant_id", "stimulus_id", "source"]].assign(session=1, value=both["value_s1"]),
        both[["participant_id", "stimulus_id", "source"]].assign(session=int(fu1["session_number"].min()),
                                                                  value=both["value_now"]),
    ], ignore_index=True)
    return out


def feeling_change(fu1: pd.DataFrame, long: pd.DataFrame | None):
    """(means by source and session, interaction models, messages) for valence and arousal."""
    means, models, notes = [], [], []
    for item in FEELINGS:
        d = _feeling_pairs(fu1, long, item)
        if d.empty:
            notes.append(f"{item}: no clip rated both in session 1 and at this follow-up "
                         f"({FEELINGS[item]} answers matched to session-1 {item})")
            continue
        d["s"] = np.where(d["session"] == 1, -0.5, 0.5)
        d["pair"] = d["participant_id"] + "\x1f" + d["stimulus_id"]
        for (src, sess), g in d.groupby(["source", "session"]):
            v = g["value"].to_numpy(float)
            n = len(v)
            se = v.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
            q = stats.t.ppf(0.975, n - 1) if n > 1 else np.nan
            means.append({"outcome": item, "source": src, "session": int(sess), "n": n, "mean": v.mean(),
                          "ci_low": v.mean() - q * se, "ci_high": v.mean() + q * se})
        terms = [RandomTerm("participant_id"), RandomTerm("stimulus_id"), RandomTerm("pair")]
        try:
            d["x"] = source_code(d["source"])
            d["xs"] = d["x"] * d["s"]
            if d["x"].nunique() < 2:
                raise UserError("clips of only one source were rated in both sessions")
            counts = lmm.clip_counts(d)
            if min(counts["human"], counts["ai"]) < 2:
                raise UserError(f"it needs at least two clips of each source rated in both sessions; found "
                                f"{counts['human']} human-made and {counts['ai']} AI-generated")
            fit = lmm.fit_lmm(d, "value", ["x", "s", "xs"], terms)
        except UserError as exc:
            notes.append(f"{item}: session x source model not estimated: {exc}")
            continue
        fx = fit.fixed.set_index("term")
        r = fx.loc["xs"]
        change = {src: fx.loc["s", "estimate"] + (0.5 if src == "human" else -0.5) * r["estimate"]
                  for src in ("human", "ai")}
        models.append({"outcome": item, "interaction": r["estimate"], "se": r["se"], "df": r["df"], "t": r["t"],
                       "p": r["p"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                       "change_human": change["human"], "change_ai": change["ai"],
                       "source_in_session1": fx.loc["x", "estimate"] - 0.5 * r["estimate"],
                       "nobs": fit.nobs, "n_participants": fit.ngroups["participant_id"],
                       "n_clips": fit.ngroups["stimulus_id"], "singular": fit.singular,
                       "converged": fit.converged, "formula": "value ~ x * s + (1 | participant_id) + "
                                                                "(1 | stimulus_id) + (1 | participant_id:stimulus_id)"})
        notes += [f"{item} model: {m}" for m in fit.messages if not m.startswith("model used")]
    return (pd.DataFrame(means) if means else None), (pd.DataFrame(models) if models else None), notes


def linger_table(fu1: pd.DataFrame, long: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per clip: n (participants who saw it and answered), recall rate, hit rate, false-alarm
    rate as a foil, mean change in valence and arousal (follow-up minus session 1), mean
    intrusions, vividness and watch-more; sorted by source, then recall rate."""
    if fu1.empty:
        return None
    seen = fu1[fu1["seen"]]
    clips = fu1[["stimulus_id", "source"]].drop_duplicates("stimulus_id").set_index("stimulus_id")
    out = clips.copy()
    out["n"] = seen.groupby("stimulus_id")["participant_id"].nunique()
    for name, measure, seen_flag in (("recall_rate", "recalled", True), ("hit_rate", "recognised", True),
                                     ("fa_rate_as_foil", "recognised", False), ("intrusions", "intrusions", True),
                                     ("vividness", "vividness", True), ("watch_more", "watch_more", True)):
        m = _measure(fu1, measure, seen=seen_flag)
        if len(m):
            out[name] = m.groupby("stimulus_id")["value"].mean()
    for item in FEELINGS:
        d = _feeling_pairs(fu1, long, item)
        if len(d):
            w = d.pivot_table(index=["participant_id", "stimulus_id"], columns="session", values="value")
            if w.shape[1] == 2:
                ch = (w.iloc[:, 1] - w.iloc[:, 0]).groupby(level="stimulus_id").mean()
                out[f"{item}_change"] = ch
    out = out.reset_index()
    out["n"] = out["n"].fillna(0).astype(int)
    sort = ["source"] + (["recall_rate"] if "recall_rate" in out else [])
    return out.sort_values(sort, ascending=[False] + [False] * (len(sort) - 1), kind="stable").reset_index(drop=True)


def analyse(fu: pd.DataFrame, long: pd.DataFrame | None) -> list[FollowupResult]:
    """One FollowupResult per follow-up, in session order; [] without follow-up rows."""
    fu = check_frame(fu)
    results = []
    for name in followup_names(fu):
        fu1 = fu[fu["followup"] == name]
        per = fu1.groupby("participant_id").agg(delay=("delay_hours", "first"), late=("late", "any"))
        delay = pd.DataFrame([{"participants": len(per), "median_delay_h": per["delay"].median(),
                               "min_delay_h": per["delay"].min(), "max_delay_h": per["delay"].max(),
                               "late": int(per["late"].sum())}])
        res = FollowupResult(name, int(fu1["session_number"].min()), len(per), delay)
        known = set(fu1["measure"])
        unknown = sorted(known - set(MEASURES))
        if unknown:
            res.messages.append(f"measures not analysed here: {', '.join(unknown)}")
        res.recall_proportions, res.recall_model, notes = recall_by_source(fu1)
        res.messages += notes
        res.recognition_sdt, res.recognition_summary, notes = recognition_by_source(fu1)
        res.messages += notes
        res.feeling_means, res.feeling_models, notes = feeling_change(fu1, long)
        res.messages += notes
        res.linger = linger_table(fu1, long)
        results.append(res)
    return results


# --------------------------------------------------------------------------------------------
# the report section


def _fmt(v, digits=3) -> str:
    from analysis.formatting import format_number

    return html.escape(format_number(v))


def _p(v) -> str:
    from analysis.formatting import p_equals

    return html.escape(p_equals(v))


def _summary_lines(r: FollowupResult) -> list[str]:
    lines = []
    if r.recall_model is not None:
        m = r.recall_model.iloc[0]
        lines.append(f"Recall: odds ratio human/AI = {_fmt(m['odds_ratio'])} [{_fmt(m['or_ci_low'])}, "
                     f"{_fmt(m['or_ci_high'])}], {_p(m['p'])} (crossed logistic model, t with {int(m['df'])} df).")
    if r.recognition_summary is not None:
        t = r.recognition_summary[r.recognition_summary["comparison"] == "human - ai"]
        if len(t):
            t = t.iloc[0]
            lines.append(f"Recognition: d' human &minus; AI = {_fmt(t['mean_dprime'])} [{_fmt(t['ci_low'])}, "
                         f"{_fmt(t['ci_high'])}], {_p(t['p'])} (paired t-test, n = {int(t['n'])}).")
    if r.feeling_models is not None:
        for m in r.feeling_models.itertuples():
            lines.append(
                f"Felt {m.outcome}: change from session 1, human {_fmt(m.change_human)} vs AI {_fmt(m.change_ai)} "
                f"scale points; lingering (session &times; source) = {_fmt(m.interaction)} "
                f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}], {_p(m.p)}.")
    return lines


def session1_from_trials(trials: pd.DataFrame | None) -> pd.DataFrame | None:
    """Session-1 valence and arousal of a trial table (one row per participant x clip) in the
    long frame's shape (participant_id, stimulus_id, instrument_id, item_id, value)."""
    if not isinstance(trials, pd.DataFrame) or not {"participant_id", "stimulus_id"} <= set(trials.columns):
        return None
    items = [c for c in FEELINGS if c in trials.columns]
    if not items:
        return None
    d = trials[["participant_id", "stimulus_id", *items]].melt(
        id_vars=["participant_id", "stimulus_id"], var_name="item_id", value_name="value")
    return d.assign(instrument_id="sam", value=pd.to_numeric(d["value"], errors="coerce"))


def section_html(fu: pd.DataFrame | None, long: pd.DataFrame | None, *, table_html: Callable,
                 chart_html: Callable, trials: pd.DataFrame | None = None) -> str | None:
    """The report's follow-up section (HTML), or None when there are no follow-up rows, so the
    report is silent about follow-ups in studies without them. `long`: session 1's answers
    (load_long); without it, the valence and arousal columns of `trials`. With `trials`, only
    participants in it (session 1 after exclusions) are analysed. Never raises for the data's
    sake: what cannot be computed is said in the section."""
    from analysis import followup_charts as fc

    if fu is None or not isinstance(fu, pd.DataFrame) or fu.empty:
        return None
    notes = []
    try:
        fu = check_frame(fu)
        if isinstance(trials, pd.DataFrame) and "participant_id" in trials.columns:
            kept = set(trials["participant_id"].astype(str))
            out = sorted(set(fu["participant_id"]) - kept)
            if out:
                notes.append(f"{len(out)} follow-up participant(s) not in the session-1 data after exclusions "
                             f"left out (e.g. {', '.join(out[:3])})")
                fu = fu[fu["participant_id"].isin(kept)]
        if long is None:
            long = session1_from_trials(trials)
        results = analyse(fu, long)
    except UserError as exc:
        return f'<p class="note">The follow-up data could not be analysed: {html.escape(str(exc))}</p>'
    if not results:
        return ('<p class="note">' + "<br>".join(html.escape(n) for n in notes)
                + ("<br>" if notes else "") + "No follow-up answers left to analyse.</p>")
    parts = ['<p>Each follow-up is compared with session 1 on its own. Recall: <code>recalled ~ x + '
             '(1 | participant) + (1 | clip)</code>, logistic, Laplace approximation (as lme4\'s glmer), '
             'x = +0.5 human, &minus;0.5 AI; the odds ratio is human over AI. Recognition: d\' per participant '
             'and source (hits: "seen" to stills of watched clips; false alarms: to foils of the same source; '
             'log-linear correction), compared by a paired t-test. Felt valence and arousal: <code>value ~ '
             'x * session + (1 | participant) + (1 | clip) + (1 | participant:clip)</code> (REML, '
             'Satterthwaite df) on the clips rated in both sessions; the session &times; source interaction '
             'is the lingering test (positive: the human-made clips\' ratings rose more, or fell less, than '
             'the AI-generated clips\').</p>']
    if notes:
        parts.append('<p class="note">' + "<br>".join(html.escape(n) for n in notes) + "</p>")
    for r in results:
        slug = "".join(ch if ch.isalnum() else "-" for ch in r.followup)
        parts.append(f'<h3 id="followup-{html.escape(slug)}">Follow-up {html.escape(r.followup)} '
                     f'(session {r.session_number})</h3>')
        parts.append(table_html(r.delay_hours, caption="Who came back, and after how long (hours)"))
        lines = _summary_lines(r)
        if lines:
            parts.append("<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")
        if r.messages:
            parts.append('<p class="note">' + "<br>".join(html.escape(m) for m in r.messages) + "</p>")
        if r.recall_proportions is not None:
            parts.append(chart_html(fc.recall_chart(r.recall_proportions, r.recall_model, r.followup),
                                    f"chart-followup-recall-{slug}"))
            parts.append(table_html(r.recall_proportions, caption="Recalled, by source (Wilson 95% CI)"))
        if r.recall_model is not None:
            parts.append(table_html(r.recall_model, caption="Recall: crossed logistic model (log odds ratio "
                                                            "human/AI; p and CI from t with clips - 2 df)"))
            parts.append(f'<p class="note">{RECALL_WALD_NOTE}</p>')
        if r.recognition_sdt is not None:
            parts.append(chart_html(fc.recognition_chart(r.recognition_sdt, r.recognition_summary, r.followup),
                                    f"chart-followup-recognition-{slug}"))
            parts.append(table_html(r.recognition_summary, caption="Recognition d' by source and the paired "
                                                                   "difference"))
        if r.feeling_means is not None:
            parts.append(chart_html(fc.feeling_chart(r.feeling_means, r.feeling_models, r.followup),
                                    f"chart-followup-feeling-{slug}"))
        if r.feeling_models is not None:
            parts.append(table_html(r.feeling_models, caption="Felt valence and arousal: session x source "
                                                              "(the lingering test)"))
        if r.linger is not None and len(r.linger):
            parts.append(chart_html(fc.linger_chart(r.linger, r.followup), f"chart-followup-linger-{slug}"))
            parts.append(table_html(r.linger, caption="Per clip: what lingered"))
    return "\n".join(parts)


def followup_for_source(source, url: str | None = None, include_pilot: bool = False) -> pd.DataFrame | None:
    """The follow-up frame for a `kuleshov report` source in the database (None for a folder or
    a CSV, or when the loader finds no follow-up rows)."""
    from pathlib import Path

    from analysis import load
    from study import store

    fn = getattr(load, "load_followup", None)
    text = str(source)
    path = Path(text)
    if fn is None or path.is_dir() or path.suffix.lower() == ".csv":
        return None
    if "://" in text:
        engine, study_id = load._engine_for(text), None
    else:
        engine = load._engine_for(url)
        study_id = store.resolve_study_id(text) if path.suffix.lower() in (".yaml", ".yml") else text
    try:
        study_id = study_id or load._only_study(engine)
        frame = fn(engine, study_id, include_pilot=include_pilot)
        return frame if isinstance(frame, pd.DataFrame) and len(frame) else None
    finally:
        engine.dispose()
