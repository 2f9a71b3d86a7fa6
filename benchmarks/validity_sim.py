"""Validity of the primary test: false-positive rate under a null with clip variance, and power.

    .venv/bin/python benchmarks/validity_sim.py [--n 1000] [--power-n N] [--seed 2024]

Design: 80 participants, 16 human + 16 AI clips, every participant rates every clip.
Each null dataset has no source effect but real clip-to-clip variation, so clips differ
the way real films do. Every dataset is analysed twice:

  * the primary test, analysis.lmm.fit_crossed: outcome ~ x + (1 + x | participant) +
    (1 | stimulus) by REML, Satterthwaite df, with the singular-fit rule;
  * the common shortcut, a paired t-test on each participant's mean for human vs AI clips,
    which treats the 32 clips as the whole population of films.

Target (issue 4): the primary test's false-positive rate at alpha .05 within [0.03, 0.075]
(lme4 + lmerTest gave 0.062 on 500 such datasets); the paired t-test about 0.5.
Then the power of the primary test for a standardised effect of 0.3, where the standardised
effect is the difference over the square root of the summed variance components
(Westfall, Kenny and Judd 2014).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.lmm import fit_crossed  # noqa: E402

N_PARTICIPANTS = 80
CLIPS_PER_SOURCE = 16
# Variance components of the simulation: participant intercept, participant slope
# (how much the human-AI difference varies between people), clip intercept, residual.
# Clip variance 0.3 is large next to what 32 clips average out, which is what makes the
# paired t-test on participant means fail.
VC = {"participant": 0.5, "slope": 0.1, "clip": 0.3, "residual": 1.5}
CORRELATION = 0.0  # of participant intercepts and slopes
STANDARDISED_EFFECT = 0.3


def simulate(rng: np.random.Generator, difference: float) -> pd.DataFrame:
    n_clips = 2 * CLIPS_PER_SOURCE
    source = np.array(["human"] * CLIPS_PER_SOURCE + ["ai"] * CLIPS_PER_SOURCE)
    x_clip = np.where(source == "human", 0.5, -0.5)
    clip_eff = rng.normal(0.0, np.sqrt(VC["clip"]), n_clips)
    sd_i, sd_s = np.sqrt(VC["participant"]), np.sqrt(VC["slope"])
    cov = [[sd_i**2, CORRELATION * sd_i * sd_s], [CORRELATION * sd_i * sd_s, sd_s**2]]
    part = rng.multivariate_normal([0.0, 0.0], cov, N_PARTICIPANTS)
    p = np.repeat(np.arange(N_PARTICIPANTS), n_clips)
    c = np.tile(np.arange(n_clips), N_PARTICIPANTS)
    x = x_clip[c]
    y = (5.0 + difference * x + part[p, 0] + part[p, 1] * x + clip_eff[c]
         + rng.normal(0.0, np.sqrt(VC["residual"]), len(p)))
    return pd.DataFrame({"participant_id": p, "stimulus_id": c, "source": source[c],
                         "outcome": y})


def paired_t_p(d: pd.DataFrame) -> float:
    means = d.pivot_table(index="participant_id", columns="source", values="outcome")
    return float(stats.ttest_rel(means["human"], means["ai"]).pvalue)


def run(n: int, difference: float, seed: int, label: str, paired: bool) -> dict:
    rng = np.random.default_rng(seed)
    p_lmm, p_t, used, not_conv = [], [], Counter(), 0
    t0 = time.perf_counter()
    for i in range(n):
        d = simulate(rng, difference)
        fit = fit_crossed(d, "outcome")
        p_lmm.append(fit.fixed.set_index("term").loc["x", "p"])
        used[fit.model_used] += 1
        not_conv += not fit.converged
        if paired:
            p_t.append(paired_t_p(d))
        if (i + 1) % 100 == 0 or i + 1 == n:
            print(f"  {label}: {i + 1}/{n} datasets, {time.perf_counter() - t0:.0f} s, "
                  f"rejection rate so far {np.mean(np.array(p_lmm) < 0.05):.3f}", flush=True)
    return {"p_lmm": np.array(p_lmm), "p_t": np.array(p_t), "used": used,
            "not_converged": not_conv, "seconds": time.perf_counter() - t0}


def rate(p: np.ndarray) -> str:
    r = float(np.mean(p < 0.05))
    se = np.sqrt(r * (1 - r) / len(p))
    return f"{r:.3f} (Monte Carlo SE {se:.3f}, {int(np.sum(p < 0.05))}/{len(p)})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="null datasets (default 1000)")
    ap.add_argument("--power-n", type=int, default=None,
                    help="datasets for the power estimate (default: same as --n)")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    power_n = args.power_n if args.power_n is not None else args.n

    total_var = sum(VC.values())
    difference = STANDARDISED_EFFECT * np.sqrt(total_var)
    print(f"design: {N_PARTICIPANTS} participants x {2 * CLIPS_PER_SOURCE} clips "
          f"({CLIPS_PER_SOURCE} per source), all clips rated by everyone")
    print(f"variance components: {VC}, participant intercept-slope correlation {CORRELATION}")

    null = run(args.n, 0.0, args.seed, "null", paired=True)
    print(f"\nNULL ({args.n} datasets, no source effect, clip variance {VC['clip']}):")
    print(f"  primary test (crossed LMM, Satterthwaite) false-positive rate at .05: "
          f"{rate(null['p_lmm'])}")
    print(f"  paired t-test on participant means, false-positive rate at .05:      "
          f"{rate(null['p_t'])}")
    print(f"  models used: {dict(null['used'])}; not converged: {null['not_converged']}; "
          f"{null['seconds'] / args.n:.2f} s per dataset")
    lo, hi = 0.03, 0.075
    fpr = float(np.mean(null["p_lmm"] < 0.05))
    print(f"  within the target [{lo}, {hi}]: {lo <= fpr <= hi}")

    if power_n:
        pw = run(power_n, difference, args.seed + 1, "power", paired=False)
        print(f"\nPOWER ({power_n} datasets, standardised effect {STANDARDISED_EFFECT} = "
              f"difference {difference:.3f} / sqrt(summed variance components {total_var})):")
        print(f"  primary test power at .05: {rate(pw['p_lmm'])}")
        print(f"  models used: {dict(pw['used'])}; not converged: {pw['not_converged']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
