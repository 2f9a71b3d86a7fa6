"""`kuleshov report` on the many-clips design, timed as a whole process.

    .venv/bin/python benchmarks/bench_report_many.py [--runs 3] [--lme4]

The data are bench_lmm_many_clips.simulate_many() (3,000 raters x 1,100 clips, about 25
ratings each, 40% of the clips shown under both sources) written as a CSV with the columns
a study export has (participant_id, stimulus_id, valence, source: human where x = 0.5, else
ai). Source varies within 435 of the 1,099 rated clips, so the report's primary model is
valence ~ x + (1 + x | participant_id) + (1 + x | stimulus_id). Each run is a fresh process
(`kuleshov report many.csv --outcomes valence --out report.html`), so imports, loading, the
fit, the charts and writing the HTML all count; wall seconds, user + system CPU seconds and
peak RSS come from the child's rusage, with the 1-minute load average before each run.

--lme4 also fits the same model with lmerTest::lmer + summary() in Rscript once, after the
runs (about 40 minutes on a 2-core machine). Target: under 15 s per report.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_lmm_many_clips import simulate_many  # noqa: E402

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(lmerTest)})
d <- read.csv(commandArgs(trailingOnly = TRUE)[1])
d$x <- ifelse(d$source == "human", 0.5, -0.5)
t0 <- proc.time()
m <- lmerTest::lmer(valence ~ x + (1 + x | participant_id) + (1 + x | stimulus_id), data = d, REML = TRUE)
co <- summary(m)$coefficients
t1 <- proc.time()
cat(sprintf("lme4: %.1f s wall, %.1f s CPU; x %.8f se %.8f df %.3f; REML %.6f; %s\n",
            (t1 - t0)[["elapsed"]], (t1 - t0)[["user.self"]] + (t1 - t0)[["sys.self"]],
            co["x", "Estimate"], co["x", "Std. Error"], co["x", "df"], REMLcrit(m),
            paste(m@optinfo$conv$lme4$messages, collapse = "; ")))
"""


def write_csv(path: Path) -> int:
    d = simulate_many()
    d["source"] = ["human" if v == 0.5 else "ai" for v in d["x"]]
    d = d.rename(columns={"y": "valence"})[["participant_id", "stimulus_id", "valence", "source"]]
    d.to_csv(path, index=False)
    return len(d)


def run_report(csv: Path, out: Path) -> dict:
    kuleshov = Path(sys.executable).with_name("kuleshov")
    cmd = [str(kuleshov)] if kuleshov.exists() else [sys.executable, str(ROOT / "cli.py")]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, "report", str(csv), "--outcomes", "valence", "--out", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"kuleshov report failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024, "load": load}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lme4", action="store_true", help="also fit the model with lmerTest once (slow)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "many.csv"
        n = write_csv(csv)
        print(f"{os.cpu_count()} cores; {n:,} ratings in {csv.name}")
        walls = []
        for i in range(args.runs):
            r = run_report(csv, Path(tmp) / "report.html")
            walls.append(r["wall"])
            print(f"run {i + 1}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS "
                  f"{r['rss_mb']:.0f} MB (load {r['load']:.2f} before)", flush=True)
        print(f"report: median {sorted(walls)[len(walls) // 2]:.1f} s, min {min(walls):.1f}, "
              f"max {max(walls):.1f} (target < 15 s)")
        if args.lme4:
            script = Path(tmp) / "fit.R"
            script.write_text(R_SCRIPT)
            out = subprocess.run(["Rscript", str(script), str(csv)], capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
