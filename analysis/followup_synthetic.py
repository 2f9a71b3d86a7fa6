"""Synthetic follow-up data with known answers: a follow-up frame (analysis.load.load_followup's
columns) and the session-1 long frame (load_long's columns, SAM valence and arousal only), for
the tests, the false-positive benchmark (benchmarks/followup_fpr.py) and the report's examples.

Design: `n_human` + `n_ai` clips; each participant watched `seen_per_source` clips of each
source in session 1; at each follow-up the recognition test shows the stills of the clips
they saw and of up to `foils_per_source` clips of each source they did not see.

Generative model (x = +0.5 human, -0.5 AI; b_p, b_c participant and clip effects):

* recalled ~ Bernoulli(logit^-1(recall_logit + recall_log_or x - delay_slope days + b_p + b_c)),
  b_p ~ N(0, recall_sd_participant^2), b_c ~ N(0, recall_sd_clip^2): the model that
  analysis.followup's recall test fits, so its log odds ratio is `recall_log_or` exactly;
* recognised ~ Bernoulli(logit^-1(hit_logit)) on seen clips, logit^-1(fa_logit) on foils;
* felt valence and arousal: each participant x clip pair has a level
  L = clip mean + participant offset + pair effect; session 1 is L + noise, a follow-up is
  L + fade + linger x + noise, with `fade` the same for both sources and `linger` the planted
  session x source interaction (`arousal_linger`, `valence_linger`): with linger > 0 the
  human-made clips' ratings fall less (arousal: they are still felt more strongly). Values are
  continuous (not rounded to the 1-9 scale), so the interaction estimates the planted value
  without the attenuation of rounding and clipping;
* vividness (1-7), intrusions (0, 1, 2, ...: Poisson), watch_more (0/1) and
  recognition_confidence (1-5), loosely tied to recall, without a planted source effect.

Participants drop out of each follow-up with probability `dropout`; a share `late_share` of
those who come back come after the window (late = True, delay 1.5 x the nominal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.load import FOLLOWUP_COLUMNS, LONG_COLUMNS


@dataclass
class FollowupSpec:
    n_participants: int = 60
    n_human: int = 8
    n_ai: int = 8
    seen_per_source: int = 4
    foils_per_source: int = 4
    followups: tuple = (("day1", 24.0),)  # (name, nominal delay in hours), session numbers 2, 3, ...
    recall_logit: float = 0.3
    recall_log_or: float = 0.0
    delay_slope: float = 0.1  # per day
    recall_sd_participant: float = 0.8
    recall_sd_clip: float = 0.5
    hit_logit: float = 1.2
    fa_logit: float = -1.5
    sd_clip_mean: float = 1.0
    sd_participant: float = 0.7
    sd_pair: float = 0.6
    sd_noise: float = 0.8
    arousal_fade: float = -1.0
    valence_fade: float = 0.3
    arousal_linger: float = 0.0
    valence_linger: float = 0.0
    dropout: float = 0.1
    late_share: float = 0.1
    seed: int = 0
    truth: dict = field(default_factory=dict)


def make_followup(spec: FollowupSpec | None = None, **overrides) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(follow-up frame, session-1 long frame) drawn from `spec` (FollowupSpec fields as keywords)."""
    s = spec or FollowupSpec()
    for k, v in overrides.items():
        if not hasattr(s, k):
            raise TypeError(f"unknown setting {k!r}")
        setattr(s, k, v)
    rng = np.random.default_rng(s.seed)
    clips = [f"human_{i + 1:02d}" for i in range(s.n_human)] + [f"ai_{i + 1:02d}" for i in range(s.n_ai)]
    source = {c: ("human" if c.startswith("human") else "ai") for c in clips}
    x_of = {"human": 0.5, "ai": -0.5}
    b_clip = dict(zip(clips, rng.normal(0, s.recall_sd_clip, len(clips))))
    val_mean = dict(zip(clips, 5 + rng.normal(0, s.sd_clip_mean, len(clips))))
    aro_mean = dict(zip(clips, 5 + rng.normal(0, s.sd_clip_mean, len(clips))))
    by_source = {"human": clips[:s.n_human], "ai": clips[s.n_human:]}
    long_rows, fu_rows = [], []
    for i in range(s.n_participants):
        pid = f"P{i + 1:03d}"
        b_p = rng.normal(0, s.recall_sd_participant)
        off_v, off_a = rng.normal(0, s.sd_participant, 2)
        seen, foils = [], []
        for src, cs in by_source.items():
            order = list(rng.permutation(cs))
            seen += order[:s.seen_per_source]
            foils += order[s.seen_per_source:s.seen_per_source + s.foils_per_source]
        level = {}
        for pos, c in enumerate(rng.permutation(seen), start=1):
            lv = val_mean[c] + off_v + rng.normal(0, s.sd_pair)
            la = aro_mean[c] + off_a + rng.normal(0, s.sd_pair)
            level[c] = (lv, la)
            for item, lvl in (("valence", lv), ("arousal", la)):
                long_rows.append((pid, c, source[c], "", "none", pos, "rating", "sam", item,
                                  lvl + rng.normal(0, s.sd_noise), None, False, None, None, 1.0, False, "completed"))
        for k, (name, hours) in enumerate(s.followups):
            if rng.random() < s.dropout:
                continue
            late = bool(rng.random() < s.late_share)
            delay = float(hours * (1.5 if late else 1.0) + rng.uniform(0, 2))
            days = delay / 24.0

            def row(c, measure, value, seen_flag=True):
                fu_rows.append((pid, name, k + 2, delay, late, c, source[c], seen_flag, measure, float(value)))

            for c in seen:
                x = x_of[source[c]]
                eta = s.recall_logit + s.recall_log_or * x - s.delay_slope * days + b_p + b_clip[c]
                rec = int(rng.random() < 1 / (1 + np.exp(-eta)))
                row(c, "recalled", rec)
                hit = int(rng.random() < 1 / (1 + np.exp(-s.hit_logit)))
                row(c, "recognised", hit)
                row(c, "recognition_confidence", int(np.clip(round(3 + hit + rng.normal(0, 0.8)), 1, 5)))
                row(c, "vividness", int(np.clip(round(3 + 1.5 * rec + rng.normal(0, 1.2)), 1, 7)))
                row(c, "intrusions", int(rng.poisson(0.5 + 0.8 * rec)))
                lv, la = level[c]
                row(c, "valence_now", lv + s.valence_fade + s.valence_linger * x + rng.normal(0, s.sd_noise))
                row(c, "arousal_now", la + s.arousal_fade + s.arousal_linger * x + rng.normal(0, s.sd_noise))
                row(c, "watch_more", int(rng.random() < 0.4))
            for c in foils:
                fa = int(rng.random() < 1 / (1 + np.exp(-s.fa_logit)))
                row(c, "recognised", fa, seen_flag=False)
                row(c, "recognition_confidence", int(np.clip(round(3 - 0.5 + fa + rng.normal(0, 0.8)), 1, 5)),
                    seen_flag=False)
    fu = pd.DataFrame(fu_rows, columns=FOLLOWUP_COLUMNS)
    fu = fu.astype({"session_number": "int64", "delay_hours": "float64", "late": "bool", "seen": "bool",
                    "value": "float64"})
    long = pd.DataFrame(long_rows, columns=LONG_COLUMNS)
    long["value"] = long["value"].astype("float64")
    s.truth = {"recall_log_or": s.recall_log_or, "arousal_linger": s.arousal_linger,
               "valence_linger": s.valence_linger}
    return fu, long


def session1_trials(long: pd.DataFrame) -> pd.DataFrame:
    """The session-1 long frame as a trial table (one row per participant x clip, columns
    valence and arousal), the shape analysis.report.build_report takes."""
    wide = long.pivot_table(index=["participant_id", "stimulus_id", "source", "position"], columns="item_id",
                            values="value").reset_index()
    wide.columns.name = None
    return wide
