"""Write the datasets of this folder (seeded; rerun gives the same files).

    .venv/bin/python tests/reference/lme4_cases/make_data.py
    Rscript tests/reference/lme4_cases/make_reference.R   # -> reference_lme4_cases.json

Every file has participant_id, stimulus_id, source ('human'/'ai') and valence. Variance
components as benchmarks/bench_lmm.py: participant 0.5, slope 0.1, clip 0.3, residual 1.5,
source effect 0.3 (human minus AI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
VC = {"participant": 0.5, "slope": 0.1, "clip": 0.3, "clip_slope": 0.2, "residual": 1.5,
      "effect": 0.3}


def _outcome(rng, p, c, x, n_part, n_clips, clip_slope=False):
    pe = rng.multivariate_normal([0, 0], np.diag([VC["participant"], VC["slope"]]), n_part)
    ce = rng.normal(0, np.sqrt(VC["clip"]), n_clips)
    cs = rng.normal(0, np.sqrt(VC["clip_slope"]), n_clips) if clip_slope else np.zeros(n_clips)
    y = (5 + VC["effect"] * x + pe[p, 0] + pe[p, 1] * x + ce[c] + cs[c] * x
         + rng.normal(0, np.sqrt(VC["residual"]), len(p)))
    return np.round(y, 4)


def _frame(p, c, x, y, prefix="c"):
    return pd.DataFrame({"participant_id": [f"p{j:03d}" for j in p],
                         "stimulus_id": [f"{prefix}{k:03d}" for k in c],
                         "source": np.where(x > 0, "human", "ai"), "valence": y})


def many_clips(seed=101, n_part=400, n_clips=200, per=25):
    """400 raters x 200 clips, each rater about 25 clips of uneven popularity; source
    fixed per clip (half human)."""
    rng = np.random.default_rng(seed)
    src = np.where(np.arange(n_clips) % 2 == 0, 0.5, -0.5)
    pop = rng.gamma(2.0, 1.0, n_clips)
    pop /= pop.sum()
    p, c = [], []
    for j in range(n_part):
        m = int(np.clip(rng.poisson(per), 10, 40))
        p.append(np.full(m, j))
        c.append(rng.choice(n_clips, m, replace=False, p=pop))
    p, c = np.concatenate(p), np.concatenate(c)
    x = src[c]
    return _frame(p, c, x, _outcome(rng, p, c, x, n_part, n_clips))


def partly_crossed(seed=102):
    """3 cohorts of 30 participants; each cohort rates its own 12 clips plus 6 clips shared
    by all (clips partly crossed with participants), about 10% of ratings missing."""
    rng = np.random.default_rng(seed)
    n_part, own, shared = 90, 12, 6
    n_clips = 3 * own + shared
    src = np.where(np.arange(n_clips) % 2 == 0, 0.5, -0.5)
    p, c = [], []
    for j in range(n_part):
        cohort = j // 30
        clips = np.concatenate([cohort * own + np.arange(own), 3 * own + np.arange(shared)])
        clips = clips[rng.random(len(clips)) > 0.1]
        p.append(np.full(len(clips), j))
        c.append(clips)
    p, c = np.concatenate(p), np.concatenate(c)
    x = src[c]
    return _frame(p, c, x, _outcome(rng, p, c, x, n_part, n_clips))


def within_clip(seed=103):
    """80 participants x 30 clips. Clips 0-19 are shown as human-made to one half of the
    participants and as AI-generated to the other (the label varies within the clip);
    clips 20-24 only as human-made, 25-29 only as AI-generated. Clips have a random
    source effect (variance 0.2)."""
    rng = np.random.default_rng(seed)
    n_part, n_clips = 80, 30
    p = np.repeat(np.arange(n_part), n_clips)
    c = np.tile(np.arange(n_clips), n_part)
    half = (p % 2 == 0)
    flip = (c % 2 == 0)
    x = np.where(c < 20, np.where(half ^ flip, 0.5, -0.5), np.where(c < 25, 0.5, -0.5))
    return _frame(p, c, x, _outcome(rng, p, c, x, n_part, n_clips, clip_slope=True))


def one_clip_per_source(seed=104):
    """40 participants rate one human-made and one AI-generated clip, three times each."""
    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(40), 6)
    c = np.tile([0, 0, 0, 1, 1, 1], 40)
    x = np.where(c == 0, 0.5, -0.5)
    return _frame(p, c, x, _outcome(rng, p, c, x, 40, 2))


def clip_is_source(seed=105):
    """40 participants x 20 clips (10 per source), but the clip column holds the source:
    every 'clip' is a whole source."""
    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(40), 20)
    c = np.tile(np.arange(20), 40)
    x = np.where(c % 2 == 0, 0.5, -0.5)
    d = _frame(p, c, x, _outcome(rng, p, c, x, 40, 20))
    d["stimulus_id"] = d["source"]
    return d


def between_participants(seed=106):
    """60 participants, each rating the 10 clips of one source only (20 clips): the
    source slope does not vary within any participant."""
    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(60), 10)
    c = np.tile(np.arange(10), 60) * 2 + (p % 2)
    x = np.where(c % 2 == 0, 0.5, -0.5)
    return _frame(p, c, x, _outcome(rng, p, c, x, 60, 20))


def lists(seed=107):
    """Clips assigned in lists: 8 lists of 8 to 15 clips (90 clips), 200 participants, each
    rating 6 to 12 clips of one list, so the participant x clip graph falls into 8
    connected components of different sizes (the clip block is block diagonal, the
    "blocks" path of analysis/lmm_sparse.py). 40% of the clips are shown as human-made to
    some raters and as AI-generated to others; clips have a random source effect."""
    rng = np.random.default_rng(seed)
    sizes = [8, 9, 10, 11, 12, 12, 13, 15]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n_part, n_clips = 200, int(starts[-1])
    base = np.where(np.arange(n_clips) % 2 == 0, 0.5, -0.5)
    both = rng.random(n_clips) < 0.4
    p, c = [], []
    for j in range(n_part):
        lst = j % len(sizes)
        m = min(int(rng.integers(6, 13)), sizes[lst])
        p.append(np.full(m, j))
        c.append(starts[lst] + rng.choice(sizes[lst], m, replace=False))
    p, c = np.concatenate(p), np.concatenate(c)
    x = np.where(both[c], np.where(rng.random(len(c)) < 0.5, 0.5, -0.5), base[c])
    return _frame(p, c, x, _outcome(rng, p, c, x, n_part, n_clips, clip_slope=True))


DATASETS = {"many_clips.csv": many_clips, "partly_crossed.csv": partly_crossed,
            "within_clip.csv": within_clip, "one_clip_per_source.csv": one_clip_per_source,
            "clip_is_source.csv": clip_is_source,
            "between_participants.csv": between_participants, "lists.csv": lists}

if __name__ == "__main__":
    for name, make in DATASETS.items():
        d = make()
        d.to_csv(HERE / name, index=False)
        print(f"{name}: {len(d)} rows, {d.participant_id.nunique()} participants, "
              f"{d.stimulus_id.nunique()} clips")
