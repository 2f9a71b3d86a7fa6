"""Write the datasets of this folder (seeded; rerun gives the same files).

    .venv/bin/python tests/reference/traces/make_data.py
    Rscript tests/reference/traces/make_reference.R      # -> reference_traces.json

* icc_shrout_fleiss.csv: the 6 targets x 4 judges of Shrout & Fleiss (1979), Table 2.
* icc_trace.csv: one synthetic clip's traces on the 0.25 s grid (analysis.traces.resample of
  analysis.trace_synthetic.synthetic_traces): 33 time points (rows) x 12 raters (columns).
* icc_trace_rough.csv: the same design with large rater offsets and noise (low agreement).
* peak_end.csv: per-trial summaries (analysis.traces.trial_summaries) of 40 synthetic
  participants x 6 clips joined to their post-clip rating (valence): participant, clip,
  peak, end, mean, valence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from analysis import trace_synthetic, traces  # noqa: E402

SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def trace_matrix(seed: int, **kw) -> pd.DataFrame:
    st = trace_synthetic.synthetic_traces(12, clips=["human_01", "ai_01"], seed=seed, gain_sd=0, end_sd=0, **kw)
    res = traces.resample(st.traces[st.traces["clip"] == "human_01"], "seconds")
    wide = res.pivot_table(index="t", columns="participant", values="value").round(4)
    wide.columns = [f"r{i + 1:02d}" for i in range(wide.shape[1])]
    return wide.reset_index(drop=True)


def peak_end() -> pd.DataFrame:
    st = trace_synthetic.synthetic_traces(40, seed=11, partial_share=0.05)
    s = traces.trial_summaries(st.traces)
    j = traces.join_ratings(s, st.trials, ["valence"])
    j = j[j["used"]].dropna(subset=["peak", "end", "mean", "valence"])
    return j[["participant", "clip", "peak", "end", "mean", "valence"]].round(6)


if __name__ == "__main__":
    pd.DataFrame(SHROUT_FLEISS, columns=["j1", "j2", "j3", "j4"]).to_csv(HERE / "icc_shrout_fleiss.csv", index=False)
    trace_matrix(21).to_csv(HERE / "icc_trace.csv", index=False)
    trace_matrix(22, noise_sd=1.2, rater_sd=1.0).to_csv(HERE / "icc_trace_rough.csv", index=False)
    peak_end().to_csv(HERE / "peak_end.csv", index=False)
    print("wrote", *sorted(p.name for p in HERE.glob("*.csv")))
