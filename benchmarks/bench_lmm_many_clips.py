"""Kuleshov's crossed model against lme4 + lmerTest, timed in the same run.

    .venv/bin/python benchmarks/bench_lmm_many_clips.py [--no-r] [--designs many,full]
        [--models full,intercepts,clip_slope]

Designs (simulated, seeded):
  many: 3,000 raters x 1,100 clips, each rater rating about 25 clips (12 to 50), clips of
        uneven popularity, 40% of the clips shown under both sources (to different
        raters), the rest under one: about 75,000 ratings, items partly crossed with the
        binary factor, like the public data set of issue 13.
  lists: 6,000 raters x 5,000 clips in 200 lists of 25; each rater rates about 12 clips of
        one list (6 to 24, at most the list), 40% of clips under both sources: about 70,000
        ratings, where the clip block is 5,000 x 5,000 but its factor stays sparse.
  full: 2,000 participants x 60 clips, everyone rating everything (benchmarks/bench_lmm.py).
Models: full, y ~ x + (1 + x | participant) + (1 | clip); intercepts,
y ~ x + (1 | participant) + (1 | clip); and, where source varies within clips (many, lists),
clip_slope, y ~ x + (1 + x | participant) + (1 + x | clip), the model fit_crossed fits there.
Each is fitted by analysis.lmm.fit_lmm and by lmerTest::lmer (REML) + summary() (Satterthwaite
df), both including the df and p-values; R runs as a child process on the same data (CSV
written before either clock starts). Times are wall seconds; the 1-minute load average is
printed before each fit because the machine is shared, and so is each engine's CPU time
(user + system of its process), which depends less on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.lmm import RandomTerm, fit_lmm  # noqa: E402
from benchmarks.bench_lmm import simulate as simulate_full  # noqa: E402

VC = {"participant": 0.5, "slope": 0.1, "clip": 0.3, "residual": 1.5, "effect": 0.3}

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
forms <- list(full = y ~ x + (1 + x | participant_id) + (1 | stimulus_id),
              intercepts = y ~ x + (1 | participant_id) + (1 | stimulus_id),
              clip_slope = y ~ x + (1 + x | participant_id) + (1 + x | stimulus_id))
out <- list()
for (name in strsplit(args[2], ",")[[1]]) {
  load <- as.numeric(strsplit(readLines("/proc/loadavg"), " ")[[1]][1])
  t0 <- proc.time()
  m <- lmerTest::lmer(forms[[name]], data = d, REML = TRUE)
  t1 <- proc.time()[["elapsed"]]
  co <- summary(m)$coefficients
  t2 <- proc.time()
  el <- t2[["elapsed"]] - t0[["elapsed"]]
  cpu <- (t2[["user.self"]] + t2[["sys.self"]]) - (t0[["user.self"]] + t0[["sys.self"]])
  out[[name]] <- list(seconds = el, cpu_seconds = cpu, fit_seconds = t1 - t0[["elapsed"]],
                      load = load,
                      estimate = co["x", "Estimate"],
                      se = co["x", "Std. Error"], df = co["x", "df"],
                      reml = as.numeric(REMLcrit(m)))
}
cat(toJSON(out, auto_unbox = TRUE, digits = NA))
"""


def simulate_many(n_raters: int = 3000, n_clips: int = 1100, per_rater: int = 25,
                  both_share: float = 0.4, seed: int = 13, list_size: int | None = None
                  ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = np.where(rng.random(n_clips) < 0.5, 0.5, -0.5)
    both = rng.random(n_clips) < both_share
    popularity = rng.gamma(2.0, 1.0, n_clips)
    popularity /= popularity.sum()
    clip_eff = rng.normal(0, np.sqrt(VC["clip"]), n_clips)
    cov = np.array([[VC["participant"], 0.0], [0.0, VC["slope"]]])
    pe = rng.multivariate_normal([0, 0], cov, n_raters)
    rows_p, rows_c = [], []
    for j in range(n_raters):
        m = int(np.clip(rng.poisson(per_rater), per_rater // 2, 2 * per_rater))
        if list_size:  # the rater's clips come from one list of list_size clips
            lst = rng.integers(0, n_clips // list_size)
            span = lst * list_size + np.arange(list_size)
            pp = popularity[span] / popularity[span].sum()
            clips = rng.choice(span, size=min(m, list_size), replace=False, p=pp)
        else:
            clips = rng.choice(n_clips, size=m, replace=False, p=popularity)
        m = len(clips)
        rows_p.append(np.full(m, j))
        rows_c.append(clips)
    p = np.concatenate(rows_p)
    c = np.concatenate(rows_c)
    x = np.where(both[c], np.where(rng.random(len(c)) < 0.5, 0.5, -0.5), base[c])
    y = (5 + VC["effect"] * x + pe[p, 0] + pe[p, 1] * x + clip_eff[c]
         + rng.normal(0, np.sqrt(VC["residual"]), len(p)))
    return pd.DataFrame({"participant_id": p, "stimulus_id": c, "x": x, "y": y})


MODELS = {
    "full": [RandomTerm("participant_id", ("x",), True), RandomTerm("stimulus_id")],
    "intercepts": [RandomTerm("participant_id"), RandomTerm("stimulus_id")],
    "clip_slope": [RandomTerm("participant_id", ("x",), True), RandomTerm("stimulus_id", ("x",), True)],
}


def time_kuleshov(data: pd.DataFrame, model: str) -> dict:
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_lmm(data, "y", ["x"], MODELS[model])
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    x = fit.fixed.set_index("term").loc["x"]
    return {"seconds": el, "cpu_seconds": cpu, "load": load, "estimate": x.estimate, "se": x.se,
            "df": x.df, "reml": fit.reml_criterion, "solver": fit.solver,
            "converged": fit.converged}


def time_lme4(csv: Path, models: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_SCRIPT)
    try:
        out = subprocess.run(["Rscript", fh.name, str(csv), ",".join(models)],
                             capture_output=True, text=True, check=True)
    finally:
        os.unlink(fh.name)
    return json.loads(out.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-r", action="store_true", help="time Kuleshov only")
    ap.add_argument("--designs", default="many,lists,full")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args(argv)
    designs = {"many": lambda: simulate_many(),
               "lists": lambda: simulate_many(6000, 5000, 12, list_size=25, seed=15),
               "full": lambda: simulate_full(2000, 60).rename(columns={"outcome": "y"})}
    print(f"{os.cpu_count()} cores; simulation variance components {VC}")
    print("| design | ratings | model | lmerTest::lmer + summary s (load) | Kuleshov s (load, "
          "solver) | ratio | CPU s: lme4 / Kuleshov (ratio) |"
          " x: lme4 / Kuleshov |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.designs.split(","):
        data = designs[name]()
        label = (f"{data.participant_id.nunique():,} x {data.stimulus_id.nunique():,}"
                 f" ({name})")
        within = bool((data.groupby("stimulus_id")["x"].nunique() > 1).any())
        models = [m for m in args.models.split(",") if m != "clip_slope" or within]
        ours = {m: time_kuleshov(data, m) for m in models}
        theirs = {}
        if not args.no_r:
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "d.csv"
                data.to_csv(csv, index=False)
                theirs = time_lme4(csv, models)
        for m in models:
            k = ours[m]
            r = theirs.get(m)
            rt = f"{r['seconds']:.1f} (load {r['load']:.1f})" if r else "-"
            ratio = f"{r['seconds'] / k['seconds']:.1f}x" if r else "-"
            cpu = (f"{r['cpu_seconds']:.1f} / {k['cpu_seconds']:.1f} "
                   f"({r['cpu_seconds'] / k['cpu_seconds']:.1f}x)" if r else
                   f"- / {k['cpu_seconds']:.1f}")
            agree = (f"{r['estimate']:.5f} / {k['estimate']:.5f}, se {r['se']:.5f} / "
                     f"{k['se']:.5f}, df {r['df']:.1f} / {k['df']:.1f}" if r else
                     f"{k['estimate']:.5f}, se {k['se']:.5f}, df {k['df']:.1f}")
            print(f"| {label} | {len(data):,} | {m} | {rt} | {k['seconds']:.1f} "
                  f"({k['load']:.1f}, {k['solver']}) | {ratio} | {cpu} | {agree} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
