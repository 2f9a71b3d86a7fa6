"""Synthetic continuous-rating traces and moment marks with known answers, for the tests and
the report's examples (and for `kuleshov simulate` to copy: study/ does not import analysis/).

Each clip has a shared signal, piecewise linear through known knots: a baseline, a rise to
the peak (at `peak_time`, height `peak_value`), a fall, then a ramp to the end value
(`end_value`), held over the last second. Each rater's trace of a clip is

    value(t) = signal(t) + source shift + rater offset + gain * (signal(t) - baseline)
               + end shift (over the final ramp) + AR(1) noise,

sampled at `rate_hz` with jittered, occasionally dropped samples, stamped with video time.
With gain_sd = end_sd = 0 the expected agreement is known: across the time points of a clip,
ICC(C,1) = var_t(signal) / (var_t(signal) + noise_sd^2) and ICC(A,1) adds the variance of the
rater offsets drawn to the denominator (`truth`). The post-clip rating follows each trial's true
(noise-free) peak and end with weights `w_peak`, `w_end` and its mean with `w_mean`, plus
participant, clip and residual noise. Marks: each participant marks each planted moment with
probability `mark_prob`, `mark_delay_s` later on average (sd `mark_sd_s`), plus uniform
background marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEMO_CLIPS = ("human_01", "human_02", "human_03", "ai_01", "ai_02", "ai_03")


@dataclass
class SyntheticStudy:
    traces: pd.DataFrame  # analysis.load.load_traces shape
    marks: pd.DataFrame  # analysis.load.load_marks shape
    trials: pd.DataFrame  # trial table: participant_id, stimulus_id, source, position, <rating>
    truth: pd.DataFrame  # per clip x dimension: the planted values and expected agreement
    true_trials: pd.DataFrame  # per trial: the noise-free peak, end and mean


def _knots(duration: float, peak_time: float, base: float, peak: float, end: float):
    w = min(1.5, peak_time * 0.8, (duration - peak_time) * 0.3)
    t = np.array([0.0, peak_time - w, peak_time, peak_time + w, duration - 1.0, duration])
    v = np.array([base, base, peak, base + 0.3 * (peak - base), end, end])
    if not np.all(np.diff(t) > 0):
        raise ValueError(f"peak at {peak_time} s does not fit a clip of {duration} s")
    return t, v


def _ar1(rng, n: int, dt: float, sd: float, tau: float) -> np.ndarray:
    phi = np.exp(-dt / tau) if tau > 0 else 0.0
    e = rng.normal(0, sd * np.sqrt(1 - phi**2), n)
    out = np.empty(n)
    out[0] = rng.normal(0, sd)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + e[i]
    return out


def _clip_table(clips, duration_s, dimensions) -> pd.DataFrame:
    rows = []
    for i, clip in enumerate(clips):
        source = "ai" if str(clip).startswith("ai") else ("human" if str(clip).startswith("human")
                                                          else ("human" if i % 2 == 0 else "ai"))
        for j, dim in enumerate(dimensions):
            frac = (i * 0.17 + j * 0.21) % 0.4
            rows.append({"clip": clip, "source": source, "dimension": dim, "duration": float(duration_s),
                         "peak_time": round(duration_s * (0.3 + frac) * 4) / 4,  # on the 0.25 s grid
                         "base": 4.5 + 0.3 * ((i + j) % 3), "peak": 7.5 + 0.4 * (i % 3),
                         "end": 5.0 + 0.5 * ((2 * i + j) % 4)})
    return pd.DataFrame(rows)


def synthetic_traces(n_participants: int = 30, clips: Sequence[str] = DEMO_CLIPS, *, duration_s: float = 8.0,
                     dimensions: Sequence[str] = ("rating",), rate_hz: float = 10.0, noise_sd: float = 0.4,
                     rater_sd: float = 0.3, noise_tau_s: float = 1.0, gain_sd: float = 0.3, end_sd: float = 0.5,
                     source_effect: float = 0.0,
                     partial_share: float = 0.0, drop_share: float = 0.05, jitter_s: float = 0.02,
                     w_peak: float = 0.5, w_end: float = 0.5, w_mean: float = 0.0, rating: str = "valence",
                     mark_prompt: str = "moved", mark_times: Sequence[float] | None = None,
                     mark_prob: float = 0.8, mark_delay_s: float = 0.0, mark_sd_s: float = 0.25,
                     background_rate: float = 0.02, seed: int = 1) -> SyntheticStudy:
    """A synthetic study; see the module's notes. source_effect shifts human traces up by half
    of it and AI traces down by half, so every summary differs by source_effect. mark_times:
    the planted moments (seconds, the same in every clip); default a third and two thirds."""
    rng = np.random.default_rng(seed)
    spec = _clip_table(list(clips), duration_s, list(dimensions))
    mark_times = list(mark_times) if mark_times is not None else [round(duration_s / 3, 2),
                                                                  round(2 * duration_s / 3, 2)]
    dt = 1.0 / rate_hz
    people = [f"P{j:03d}" for j in range(1, n_participants + 1)]
    offsets = {(p, d): rng.normal(0, rater_sd) for p in people for d in dimensions}
    p_eff = {p: rng.normal(0, 0.5) for p in people}
    c_eff = {c: rng.normal(0, 0.3) for c in clips}
    traces, marks, trials, true_rows = [], [], [], []
    rows_of = {c: [r for _, r in spec[spec["clip"] == c].iterrows()] for c in clips}
    source_of = dict(zip(spec["clip"], spec["source"]))
    fine = np.linspace(0, duration_s, 801)
    for p in people:
        order = rng.permutation(len(clips))
        for pos, ci in enumerate(order, start=1):
            clip = clips[ci]
            partial = bool(rng.random() < partial_share)
            cut = duration_s * rng.uniform(0.3, 0.7) if partial else duration_s
            t = np.arange(0.0, duration_s + 1e-9, dt) + rng.uniform(-jitter_s, jitter_s, int(duration_s * rate_hz) + 1)
            t = np.clip(t, 0.0, duration_s)
            keep = (rng.random(len(t)) >= drop_share) & (t <= cut)
            keep[0] = True
            t = t[keep]
            summary = {}
            for s in rows_of[clip]:
                dim = s["dimension"]
                kt, kv = _knots(duration_s, s["peak_time"], s["base"], s["peak"], s["end"])
                signal = np.interp(t, kt, kv)
                shift = source_effect / 2 * (1 if s["source"] == "human" else -1)
                gain = rng.normal(0, gain_sd)
                end_shift = rng.normal(0, end_sd)
                ramp = np.clip((t - kt[3]) / (kt[4] - kt[3]), 0, 1)
                clean = signal + shift + offsets[(p, dim)] + gain * (signal - s["base"]) + end_shift * ramp
                value = clean + _ar1(rng, len(t), dt, noise_sd, noise_tau_s)
                traces.append((p, pos, clip, s["source"], dim, np.round(t, 3), np.round(value, 4), partial))
                sig_f = np.interp(fine, kt, kv)
                ramp_f = np.clip((fine - kt[3]) / (kt[4] - kt[3]), 0, 1)
                clean_f = sig_f + shift + offsets[(p, dim)] + gain * (sig_f - s["base"]) + end_shift * ramp_f
                summary[dim] = (clean_f.max(), clean_f[fine >= duration_s - 1.0].mean(), clean_f.mean())
                true_rows.append({"participant": p, "clip": clip, "dimension": dim, "true_peak": clean_f.max(),
                                  "true_end": clean_f[fine >= duration_s - 1].mean(), "true_mean": clean_f.mean()})
            pk, en, mn = summary[dimensions[0]]
            rate = (1 + w_peak * pk + w_end * en + w_mean * mn + p_eff[p] + c_eff[clip] + rng.normal(0, 0.4))
            trials.append({"participant_id": p, "stimulus_id": clip,
                           "source": source_of[clip], "position": pos,
                           rating: round(float(rate), 3)})
            for mt in mark_times:
                if rng.random() < mark_prob:
                    marks.append((p, pos, clip, mt + rng.normal(mark_delay_s, mark_sd_s)))
            for _ in range(rng.poisson(background_rate * duration_s)):
                marks.append((p, pos, clip, rng.uniform(0, duration_s)))
    lens = [len(x[5]) for x in traces]
    tr = pd.DataFrame({name: np.repeat(np.array([x[i] for x in traces], dtype=object), lens)
                       for i, name in enumerate(["participant", "trial", "clip", "source", "dimension"])})
    tr["trial"] = tr["trial"].astype("int64")
    tr["video_time"] = np.concatenate([x[5] for x in traces])
    tr["value"] = np.concatenate([x[6] for x in traces])
    tr["clip_duration"] = float(duration_s)
    tr["partial"] = np.repeat(np.array([x[7] for x in traces], dtype=bool), lens)
    mk = pd.DataFrame(marks, columns=["participant", "trial", "clip", "video_time"])
    mk["video_time"] = mk["video_time"].clip(0, duration_s).round(3)
    mk.insert(3, "source", mk["clip"].map(source_of))
    mk.insert(4, "mark", mark_prompt)
    mk["clip_duration"] = duration_s
    # the offsets drawn, not their population SD, set the agreement these raters can reach
    drawn = {d: float(np.var([offsets[(p, d)] for p in people], ddof=1)) for d in dimensions}
    truth = _truth(spec, noise_sd, noise_tau_s, drawn, gain_sd, end_sd, source_effect, step_s=0.25)
    truth["mark_peak_times"] = [tuple(m + mark_delay_s for m in mark_times)] * len(truth)
    return SyntheticStudy(traces=tr, marks=mk, trials=pd.DataFrame(trials), truth=truth,
                          true_trials=pd.DataFrame(true_rows))


def _truth(spec: pd.DataFrame, noise_sd, tau, rater_var: dict, gain_sd, end_sd, source_effect, step_s) -> pd.DataFrame:
    """Planted values per clip and the ICCs expected on a `step_s` grid.

    With AR(1) noise of correlation R between grid points, the two-way mean squares have
    E[MSE] = s2 (n - 1'R1/n) / (n - 1) = s2e, E[MSB] = k var_t(signal) + s2e and
    E[MSJ] = n rater_var + s2 1'R1/n, so ICC(C,1) -> var / (var + s2e) and
    ICC(A,1) -> var / (var + s2e (1 - 1/n) + rater_var + s2 1'R1/n^2) (large k; rater_var is
    the variance of the offsets drawn; the interpolation between samples is ignored)."""
    rows = []
    for _, s in spec.iterrows():
        kt, kv = _knots(s["duration"], s["peak_time"], s["base"], s["peak"], s["end"])
        grid = np.arange(0, s["duration"] + 1e-9, step_s)
        n = len(grid)
        var_s = float(np.var(np.interp(grid, kt, kv), ddof=1))
        lag = np.abs(grid[:, None] - grid[None, :])
        R = np.exp(-lag / tau) if tau > 0 else np.eye(n)
        r_sum = float(R.sum())
        s2 = noise_sd**2
        s2e = s2 * (n - r_sum / n) / (n - 1)
        shift = source_effect / 2 * (1 if s["source"] == "human" else -1)
        exact = gain_sd == 0 and end_sd == 0
        rows.append({"clip": s["clip"], "source": s["source"], "dimension": s["dimension"],
                     "duration": s["duration"], "peak_time": s["peak_time"], "peak_value": s["peak"] + shift,
                     "end_value": s["end"] + shift, "signal_var": var_s,
                     "expected_icc_c1": var_s / (var_s + s2e) if exact else np.nan,
                     "expected_icc_a1": (var_s / (var_s + s2e * (1 - 1 / n) + rater_var[s["dimension"]]
                                                  + s2 * r_sum / n**2)
                                         if exact else np.nan)})
    return pd.DataFrame(rows)
