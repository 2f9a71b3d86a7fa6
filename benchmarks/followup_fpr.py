"""False-positive rate and power of the follow-up tests (analysis/followup.py), by simulation.

Method: datasets from analysis/followup_synthetic.py (by default 60 participants, 8 human-made
and 8 AI-generated clips, each participant saw 4 of each; one follow-up at 24 h with 10%
dropout; participant and clip variance in recall, participant, clip and pair variance in the
felt ratings; see that module for the model). Null: no source effect on recall and no
session x source interaction. Planted: recall log odds ratio `--recall-log-or` (human/AI) and
arousal interaction `--arousal-linger` scale points. For each dataset the report's two tests
are run as the report runs them: the crossed logistic model on recall (analysis.glmm) and the
session x source mixed model on felt arousal and valence (analysis.lmm), and the paired t-test
of recognition d' (no recognition effect is planted, so it is a false-positive rate in both arms);
a test counts as
significant at two-sided p < .05. Rates with Wilson 95% intervals; datasets where a model was
not estimated (a message instead of a number) are counted and left out of the rate. Also:
coverage of the planted value by the 95% CIs.

    .venv/bin/python benchmarks/followup_fpr.py --null 300 --planted 100

Writes benchmarks/results/followup_fpr.json; the figures are quoted in the README
(Benchmarks). Runs on one core (about 1-2 s per dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from statsmodels.stats.proportion import proportion_confint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import followup  # noqa: E402
from analysis.followup_synthetic import make_followup  # noqa: E402


def one(seed: int, recall_log_or: float, arousal_linger: float, n: int) -> dict:
    fu, long = make_followup(n_participants=n, seed=seed, recall_log_or=recall_log_or, arousal_linger=arousal_linger)
    fu = followup.check_frame(fu)
    _, recall, _ = followup.recall_by_source(fu)
    _, models, _ = followup.feeling_change(fu, long)
    _, recog, _ = followup.recognition_by_source(fu)
    out = {"seed": seed}
    if recog is not None and (recog["comparison"] == "human - ai").any():
        # no recognition effect is planted in either arm: both arms measure its false-positive rate
        out["recognition_p"] = float(recog.loc[recog["comparison"] == "human - ai", "p"].iloc[0])
    if recall is not None:
        r = recall.iloc[0]
        out.update(recall_p=float(r["p"]), recall_p_z=float(r["p_z"]), recall_est=float(r["log_odds_ratio"]),
                   recall_covers=bool(np.log(r["or_ci_low"]) <= recall_log_or <= np.log(r["or_ci_high"])),
                   recall_singular=bool(r["singular"]))
    if models is not None:
        for m in models.itertuples():
            truth = arousal_linger if m.outcome == "arousal" else 0.0
            out.update({f"{m.outcome}_p": float(m.p), f"{m.outcome}_est": float(m.interaction),
                        f"{m.outcome}_covers": bool(m.ci_low <= truth <= m.ci_high)})
    return out


def rate(rows, key, alpha=0.05) -> dict:
    ps = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    k, n = sum(p < alpha for p in ps), len(ps)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson") if n else (np.nan, np.nan)
    return {"significant": k, "n": n, "rate": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi,
            "not_estimated": len(rows) - n}


def coverage(rows, key) -> dict:
    c = [r[key] for r in rows if key in r]
    k, n = sum(c), len(c)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson") if n else (np.nan, np.nan)
    return {"covered": k, "n": n, "rate": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--null", type=int, default=300)
    ap.add_argument("--planted", type=int, default=100)
    ap.add_argument("--participants", type=int, default=60)
    ap.add_argument("--recall-log-or", type=float, default=0.8)
    ap.add_argument("--arousal-linger", type=float, default=0.5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "followup_fpr.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    t0 = time.time()
    null = [one(1000 + i, 0.0, 0.0, args.participants) for i in range(args.null)]
    t_null = time.time() - t0
    planted = [one(5000 + i, args.recall_log_or, args.arousal_linger, args.participants) for i in range(args.planted)]
    wall = time.time() - t0
    res = {
        "design": {"participants": args.participants, "clips": "8 human + 8 AI, 4 of each seen", "followup": "24 h",
                   "planted": {"recall_log_or": args.recall_log_or, "arousal_linger": args.arousal_linger}},
        "null": {"recall": rate(null, "recall_p"), "recall_wald_z": rate(null, "recall_p_z"),
                 "lingering_arousal": rate(null, "arousal_p"),
                 "lingering_valence": rate(null, "valence_p"), "recognition": rate(null, "recognition_p"),
                 "coverage": {"recall": coverage(null, "recall_covers"), "arousal": coverage(null, "arousal_covers")},
                 "recall_singular": sum(r.get("recall_singular", False) for r in null)},
        "planted": {"recall_power": rate(planted, "recall_p"), "recall_power_wald_z": rate(planted, "recall_p_z"),
                    "lingering_arousal_power": rate(planted, "arousal_p"),
                    "lingering_valence_fpr": rate(planted, "valence_p"),
                    "recognition_fpr": rate(planted, "recognition_p"),
                    "coverage": {"recall": coverage(planted, "recall_covers"),
                                 "arousal": coverage(planted, "arousal_covers")},
                    "mean_estimates": {"recall_log_or": float(np.mean([r["recall_est"] for r in planted if "recall_est" in r] or [np.nan])),
                                       "arousal_interaction": float(np.mean([r["arousal_est"] for r in planted if "arousal_est" in r] or [np.nan]))}},
        "seconds": {"total": wall, "per_dataset": wall / max(1, args.null + args.planted), "null": t_null},
        "machine": {"load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
