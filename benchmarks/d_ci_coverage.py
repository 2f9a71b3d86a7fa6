"""Coverage of the two CIs of Westfall's d: the parametric bootstrap and the fixed denominator.

    .venv/bin/python benchmarks/d_ci_coverage.py [--datasets 100] [--boot 100] [--jobs 2] [--seed 13]

Each dataset follows the primary model with known values: P participants each rating every
one of C clips (C/2 per source), x = +-0.5, participant intercept variance 0.5, participant
slope variance 0.3, clip variance 0.3, residual 1.0, and a true d = 0.5 (Westfall's d, the
slope variance weighted by 0.25: analysis.stats.westfall_denominator). Each dataset is
analysed by stats.primary_test twice: with `bootstrap` samples (the percentile interval of d
over refits of data simulated from the fitted model) and without (the CI of the difference
divided by the estimated denominator). Coverage is the share of 95% intervals holding the
true d, with its binomial standard error. Two designs: few clips (12) and more clips (24).

Writes benchmarks/results/d_ci_coverage.json and docs/img/d_ci_coverage.svg (the figure in
the README: the intervals of the first 40 datasets of the few-clips design, and the coverage
of both designs).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import stats as S  # noqa: E402

V = dict(var_participant=0.5, var_slope=0.3, var_clip=0.3, var_residual=1.0)
TRUE_D = 0.5
DESIGNS = {"few clips: 30 participants x 12 clips": (30, 12), "more clips: 30 participants x 24 clips": (30, 24)}


def dataset(rng, n_part, n_clips):
    den = np.sqrt(V["var_participant"] + 0.25 * V["var_slope"] + V["var_clip"] + V["var_residual"])
    p = np.repeat(np.arange(n_part), n_clips)
    c = np.tile(np.arange(n_clips), n_part)
    x = np.where(c < n_clips // 2, 0.5, -0.5)
    u0 = rng.normal(0, np.sqrt(V["var_participant"]), n_part)
    u1 = rng.normal(0, np.sqrt(V["var_slope"]), n_part)
    w = rng.normal(0, np.sqrt(V["var_clip"]), n_clips)
    y = TRUE_D * den * x + u0[p] + u1[p] * x + w[c] + rng.normal(0, np.sqrt(V["var_residual"]), len(p))
    return pd.DataFrame({"participant_id": p, "stimulus_id": c, "source": np.where(x > 0, "human", "ai"), "y": y})


def one(job):
    design, i, boot, seed = job
    n_part, n_clips = DESIGNS[design]
    d = dataset(np.random.default_rng([seed, i, n_clips]), n_part, n_clips)
    fixed = S.primary_test(d, ["y"]).iloc[0]
    bs = S.primary_test(d, ["y"], bootstrap=boot, seed=seed + i).iloc[0]
    return {"design": design, "i": i, "d": float(fixed["d"]), "model": fixed["model_used"],
            "fixed_low": float(fixed["d_ci_low"]), "fixed_high": float(fixed["d_ci_high"]),
            "boot_low": float(bs["d_ci_low"]), "boot_high": float(bs["d_ci_high"])}


def svg(rows: pd.DataFrame, summary: dict, path: Path, shown: int = 40) -> None:
    """A plain SVG (no plotting dependency): intervals of the first datasets, both methods."""
    first = next(iter(DESIGNS))
    d = rows[rows["design"] == first].sort_values("i").head(shown)
    W, H, left, top, bottom = 760, 420, 60, 60, 60
    lo = min(d[["fixed_low", "boot_low"]].min().min(), 0.0) - 0.05
    hi = max(d[["fixed_high", "boot_high"]].max().max(), 1.0) + 0.05
    ys = lambda v: top + (hi - v) / (hi - lo) * (H - top - bottom)  # noqa: E731
    xs = lambda k: left + 10 + k * (W - left - 20) / len(d)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           'font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']
    cov = summary[first]
    out.append(f'<text x="{left}" y="22" font-size="14" font-weight="bold">95% CIs of d, {first} '
               f'(true d = {TRUE_D})</text>')
    lines = [f"{name}: coverage {v['boot']:.2f} bootstrap, {v['fixed']:.2f} fixed denominator "
             f"(+-{v['se']:.2f}, {v['n']} datasets)" for name, v in summary.items()]
    for k, text in enumerate(lines):
        out.append(f'<text x="{left}" y="{38 + 14 * k}" font-size="11">{text}</text>')
    for tick in np.arange(np.ceil(lo * 4) / 4, hi, 0.25):
        out.append(f'<line x1="{left}" x2="{W - 10}" y1="{ys(tick):.1f}" y2="{ys(tick):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 8}" y="{ys(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    out.append(f'<line x1="{left}" x2="{W - 10}" y1="{ys(TRUE_D):.1f}" y2="{ys(TRUE_D):.1f}" stroke="#D55E00" '
               'stroke-dasharray="5,4"/>')
    for k, r in enumerate(d.itertuples()):
        for off, (a, b), colour in ((-2.5, (r.boot_low, r.boot_high), "#0072B2"),
                                    (2.5, (r.fixed_low, r.fixed_high), "#999999")):
            miss = not (a <= TRUE_D <= b)
            out.append(f'<line x1="{xs(k) + off:.1f}" x2="{xs(k) + off:.1f}" y1="{ys(a):.1f}" y2="{ys(b):.1f}" '
                       f'stroke="{colour}" stroke-width="{3 if miss else 2}"/>')
        out.append(f'<circle cx="{xs(k):.1f}" cy="{ys(r.d):.1f}" r="2" fill="black"/>')
    out.append(f'<text x="{left}" y="{H - 30}" fill="#0072B2">| parametric bootstrap</text>'
               f'<text x="{left + 160}" y="{H - 30}" fill="#777">| fixed denominator</text>'
               f'<text x="{left + 310}" y="{H - 30}">. estimate</text>'
               f'<text x="{left + 390}" y="{H - 30}" fill="#D55E00">- - true d</text>'
               f'<text x="{left}" y="{H - 12}" fill="#555">datasets 1-{len(d)} (thick: interval misses the '
               'true d); y axis: d</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--boot", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    # interleaved, so that a run stopped early (SIGTERM, e.g. `timeout`) still has both designs
    jobs = [(name, i, args.boot, args.seed) for i in range(args.datasets) for name in DESIGNS]
    t0 = time.perf_counter()
    done = []

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    pool = ProcessPoolExecutor(max_workers=args.jobs, initializer=signal.signal,
                               initargs=(signal.SIGTERM, signal.SIG_DFL))  # workers just stop
    try:
        for r in pool.map(one, jobs, chunksize=1):
            done.append(r)
        pool.shutdown()
    except KeyboardInterrupt:
        print(f"stopped early: {len(done)} of {len(jobs)} datasets", file=sys.stderr)
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
    rows = pd.DataFrame(done)
    wall = time.perf_counter() - t0
    summary = {}
    for name, g in rows.groupby("design", sort=False):
        boot = float(((g["boot_low"] <= TRUE_D) & (TRUE_D <= g["boot_high"])).mean())
        fixed = float(((g["fixed_low"] <= TRUE_D) & (TRUE_D <= g["fixed_high"])).mean())
        summary[name] = {"boot": boot, "fixed": fixed, "n": len(g), "se": float(np.sqrt(0.95 * 0.05 / len(g))),
                         "mean_d": float(g["d"].mean()),
                         "boot_width": float((g["boot_high"] - g["boot_low"]).mean()),
                         "fixed_width": float((g["fixed_high"] - g["fixed_low"]).mean())}
    summary = {k: summary[k] for k in DESIGNS}
    out = {"true_d": TRUE_D, "variances": V, "bootstrap_samples": args.boot, "seed": args.seed,
           "wall_s": round(wall, 1), "summary": summary}
    res = ROOT / "benchmarks" / "results" / "d_ci_coverage.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(out, indent=2) + "\n")
    svg(rows, summary, ROOT / "docs" / "img" / "d_ci_coverage.svg")
    print(json.dumps(out, indent=2))
    print(f"wall {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
