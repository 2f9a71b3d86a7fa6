"""Simulation-based power of the planned crossed analysis.

Each simulated dataset follows the model the primary test fits:

    y = mu + b x + u0_p + u1_p x + w_s + e,   x = +0.5 human / -0.5 AI,

with u0 ~ N(0, var_participant), u1 ~ N(0, var_slope) (independent), w ~ N(0, var_clip),
e ~ N(0, var_residual). The effect is given as Westfall's d (see analysis.stats:
difference over the square root of the summed variance components), so the raw
difference is b = d * sqrt(var_participant + var_slope + var_clip + var_residual).
Every dataset is analysed with the planned analysis itself (lmm.fit_crossed, including its
singular-fit rule), and power is the share of two-sided p < alpha, with a Wilson interval
for the simulation error.

Subset designs: with clips_per_participant = k < all clips, each participant rates k/2
clips of each source, taken in rotation so that every clip is rated equally often.
"""

from __future__ import annotations

import sys
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from analysis.lmm import fit_crossed
from study.config import check_writable
from study.errors import Problem, UserError

__all__ = ["simulate_power", "simulate_dataset", "variance_from_pilot", "cli_power", "POWER_COLUMNS"]

POWER_COLUMNS = ["n_participants", "power", "ci_low", "ci_high", "n_sims", "effect_raw", "n_failed"]


def _design(n_participants: int, clips_per_source: int, clips_per_participant: int | None):
    """(participant index, clip index, x) arrays of a balanced crossed or subset design."""
    n_clips = 2 * clips_per_source
    if clips_per_participant is None or clips_per_participant >= n_clips:
        p = np.repeat(np.arange(n_participants), n_clips)
        c = np.tile(np.arange(n_clips), n_participants)
    else:
        k = clips_per_participant // 2
        ps, cs = [], []
        for i in range(n_participants):
            start = (i * k) % clips_per_source
            idx = (start + np.arange(k)) % clips_per_source
            ps.append(np.full(2 * k, i))
            cs.append(np.concatenate([idx, clips_per_source + idx]))  # human clips, then AI clips
        p, c = np.concatenate(ps), np.concatenate(cs)
    x = np.where(c < clips_per_source, 0.5, -0.5)
    return p, c, x


def simulate_dataset(rng: np.random.Generator, n_participants: int, clips_per_source: int,
                     clips_per_participant: int | None, effect_raw: float, var_participant: float,
                     var_slope: float, var_clip: float, var_residual: float) -> pd.DataFrame:
    """One simulated trial table (participant_id, stimulus_id, source, y)."""
    p, c, x = _design(n_participants, clips_per_source, clips_per_participant)
    u0 = rng.normal(0, np.sqrt(var_participant), n_participants)
    u1 = rng.normal(0, np.sqrt(var_slope), n_participants)
    w = rng.normal(0, np.sqrt(var_clip), 2 * clips_per_source)
    y = effect_raw * x + u0[p] + u1[p] * x + w[c] + rng.normal(0, np.sqrt(var_residual), len(p))
    return pd.DataFrame({"participant_id": p, "stimulus_id": c,
                         "source": np.where(x > 0, "human", "ai"), "y": y})


def _check(n_participants, clips_per_source, clips_per_participant, variances, n_sims, alpha):
    problems = []
    if not n_participants or any(int(n) != n or n < 2 for n in n_participants):
        problems.append(Problem("participants", "give whole numbers of at least 2, e.g. 20,40,80"))
    if int(clips_per_source) != clips_per_source or clips_per_source < 2:
        problems.append(Problem("clips_per_source", "must be a whole number of at least 2"))
    if clips_per_participant is not None:
        if clips_per_participant < 2 or clips_per_participant % 2:
            problems.append(Problem("clips_per_participant", "must be an even number of at least 2 "
                                    "(half human, half AI)"))
        elif clips_per_participant > 2 * clips_per_source:
            problems.append(Problem("clips_per_participant", f"{clips_per_participant} is more than the "
                                    f"{2 * int(clips_per_source)} clips of the design (clips per source x 2)"))
    for name, v in variances.items():
        if not np.isfinite(v) or v < 0:
            problems.append(Problem(name, f"a variance must be zero or positive; got {v!r}"))
    if variances.get("var_residual", 1) <= 0:
        problems.append(Problem("var_residual", "must be positive"))
    if int(n_sims) != n_sims or n_sims < 1:
        problems.append(Problem("simulations", "must be a whole number of at least 1"))
    if not 0 < alpha < 1:
        problems.append(Problem("alpha", "must lie between 0 and 1"))
    if problems:
        raise UserError("the power simulation cannot run with these settings", problems)


def simulate_power(n_participants: list[int], clips_per_source: int, clips_per_participant: int | None,
                   effect_d: float, var_participant: float, var_slope: float, var_clip: float,
                   var_residual: float, n_sims: int = 200, alpha: float = 0.05, seed: int = 1,
                   progress: Callable[[int, int, int], None] | None = None) -> pd.DataFrame:
    """Power of the primary test against the number of participants.

    progress(done, total, n_participants) is called after each simulated dataset.
    A dataset whose model cannot be fitted counts as not significant and is counted in
    n_failed (so power is never overstated). Seeded: the same arguments give the same table.
    """
    variances = dict(var_participant=var_participant, var_slope=var_slope, var_clip=var_clip,
                     var_residual=var_residual)
    n_participants = [int(n) for n in n_participants]
    _check(n_participants, clips_per_source, clips_per_participant, variances, n_sims, alpha)
    effect_raw = float(effect_d) * float(np.sqrt(sum(variances.values())))
    rng = np.random.default_rng(seed)
    total, done = len(n_participants) * n_sims, 0
    rows = []
    for n in n_participants:
        hits = failed = 0
        for _ in range(n_sims):
            d = simulate_dataset(rng, n, clips_per_source, clips_per_participant, effect_raw, **variances)
            try:
                fit = fit_crossed(d, "y")
                p = float(fit.fixed.set_index("term").at["x", "p"])
                hits += bool(p < alpha)
            except (UserError, np.linalg.LinAlgError, ValueError, FloatingPointError):
                failed += 1
            done += 1
            if progress is not None:
                progress(done, total, n)
        lo, hi = proportion_confint(hits, n_sims, alpha=0.05, method="wilson")
        rows.append({"n_participants": n, "power": hits / n_sims, "ci_low": float(lo), "ci_high": float(hi),
                     "n_sims": n_sims, "effect_raw": effect_raw, "n_failed": failed})
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def variance_from_pilot(trials: pd.DataFrame, dv: str) -> dict:
    """Variance components of the primary model fitted to pilot data (lmm.fit_crossed).

    Returns var_participant, var_slope (0 when the singular-fit rule dropped the slope),
    var_clip, var_residual, model_used, n_participants, n_stimuli, and d_observed (the
    pilot's own Westfall d, for information only: pilot effect sizes are too noisy to plan on).
    """
    fit = fit_crossed(trials, dv)
    r = fit.random
    base = r["group"].astype(str).str.split(".").str[0]
    var_rows = r["var2"].isna()

    def pick(mask) -> float:
        v = r.loc[mask & var_rows, "variance_or_cov"]
        return float(v.sum()) if len(v) else 0.0

    intercept = r["var1"] == "(Intercept)"
    out = {
        "var_participant": pick((base == "participant_id") & intercept),
        "var_slope": pick((base == "participant_id") & ~intercept & r["var1"].notna()),
        "var_clip": pick((base == "stimulus_id") & intercept),
        "var_residual": pick(r["group"] == "Residual"),
        "model_used": fit.model_used,
        "n_participants": fit.ngroups.get("participant_id"),
        "n_stimuli": fit.ngroups.get("stimulus_id"),
    }
    total = out["var_participant"] + out["var_slope"] + out["var_clip"] + out["var_residual"]
    est = float(fit.fixed.set_index("term").at["x", "estimate"])
    out["d_observed"] = est / np.sqrt(total) if total > 0 else float("nan")
    return out


class _Bar:
    """Plain-text progress on stderr: one line rewritten with \\r."""

    def __init__(self, stream=None, width: int = 30):
        self.stream, self.width, self.last = stream or sys.stderr, width, -1

    def __call__(self, done: int, total: int, n: int) -> None:
        pct = int(100 * done / total)
        if pct == self.last and done != total:
            return
        if not getattr(self.stream, "isatty", lambda: False)():
            # A log file or CI output cannot rewrite a line: one line per tenth, not per percent.
            if pct // 10 == self.last // 10 and done != total:
                return
            self.last = pct
            self.stream.write(f"power {pct:3d}% ({done}/{total} datasets, N = {n})\n")
            self.stream.flush()
            return
        self.last = pct
        fill = int(self.width * done / total)
        self.stream.write(f"\rpower [{'#' * fill}{'.' * (self.width - fill)}] {pct:3d}% "
                          f"({done}/{total} datasets, N = {n})")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def _parse_participants(text) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"--participants must be comma-separated whole numbers, e.g. 20,40,80; got {text!r}") from None
    if not values:
        raise UserError("--participants is empty; give e.g. 20,40,80")
    return values


def cli_power(args) -> int:
    """`kuleshov power`: the power curve for a planned crossed design, printed and optionally saved."""
    variances = {k: float(getattr(args, k)) for k in ("var_participant", "var_slope", "var_clip", "var_residual")}
    if getattr(args, "out", None):
        check_writable(args.out, "power curve")
    source = "given on the command line"
    if getattr(args, "pilot", None):
        from analysis.load import load_trials

        data = load_trials(args.pilot)
        outcome = args.outcome
        if outcome not in data.trials.columns:
            raise UserError(f"the pilot data have no outcome column {outcome!r}",
                            [Problem("--outcome", "columns are: " + ", ".join(map(str, data.trials.columns)))])
        pilot = variance_from_pilot(data.trials, outcome)
        variances = {k: pilot[k] for k in variances}
        source = (f"from the pilot {args.pilot} ({outcome}, {pilot['n_participants']} participants x "
                  f"{pilot['n_stimuli']} clips, model {pilot['model_used']})")
    print("variance components " + source + ": "
          + ", ".join(f"{k.removeprefix('var_')} {v:.3g}" for k, v in variances.items()))
    per = args.clips_per_participant
    print(f"design: {args.clips_per_source} clips per source, "
          f"{'all' if per is None else per} clips per participant; effect d = {args.effect:g}; "
          f"alpha {args.alpha:g} (two-sided); {args.simulations} simulations per point; seed {args.seed}")
    table = simulate_power(_parse_participants(args.participants), args.clips_per_source, per, args.effect,
                           n_sims=args.simulations, alpha=args.alpha, seed=args.seed, progress=_Bar(),
                           **variances)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if getattr(args, "out", None):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
        try:  # the chart beside the CSV is a convenience; the CSV is the result
            from analysis.charts import power_curve

            html = str(args.out).rsplit(".", 1)[0] + ".html"
            power_curve(table).write_html(html, include_plotlyjs=True, full_html=True)
            print(f"wrote {html}")
        except ImportError:
            pass
    return 0
