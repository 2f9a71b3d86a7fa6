"""Moments marked during playback: densities over clip time, their peaks, and still frames
of the clip at those moments.

Input is the long table of `analysis.load.load_marks` (MARK_COLUMNS): one row per mark,
stamped with the video time.

* Density (`mark_density`): a Gaussian kernel density with a fixed bandwidth of 0.5 s (a
  kernel SD; marks of one moment spread by a few tenths of a second of reaction time, and a
  bandwidth fixed in seconds keeps clips comparable, where Scott's or Silverman's rule would
  change it with the number of marks), reflected at 0 and at the clip's end so the edges are
  not biased down. It is scaled as a rate: marks per viewer per second, so its integral over
  the clip is the mean number of marks per viewer. Viewers are everyone who saw the clip
  (`viewers`), including those who marked nothing; without that table, everyone with a mark
  of the clip. The band is a pointwise 95% percentile bootstrap over viewers (resampling
  participants, 500 times by default): people, not marks, are the independent units.
* Peaks (`mark_peaks`): local maxima of the density with a prominence of at least a quarter
  of the clip's highest density, at least two bandwidths apart and with at least three marks
  within one bandwidth, listed with their times,
  the marks within one bandwidth and the share of viewers who made them.
* Stills (`still_frame`, `thumbnails`): the frame shown at a video time, decoded with PyAV
  and encoded as JPEG by FFmpeg's encoder (no image library needed), for the report to inline
  as data URIs.
"""

from __future__ import annotations

import base64
from fractions import Fraction
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal

from analysis.tables import require_columns
from study.errors import Problem, UserError

MARK_COLUMNS = ["participant", "trial", "clip", "source", "mark", "video_time", "clip_duration"]
BANDWIDTH_S = 0.5
STEP_S = 0.05
N_BOOT = 500
MIN_PROMINENCE = 0.25  # of the clip's highest density
MIN_MARKS = 3  # within one bandwidth of a peak
THUMB_WIDTH = 160


def check_marks(marks: pd.DataFrame) -> pd.DataFrame:
    """The marks table checked and typed; a UserError says what is wrong where."""
    if not isinstance(marks, pd.DataFrame):
        raise UserError("the marks must be a table (pandas DataFrame) in the shape of load.load_marks")
    require_columns(marks, MARK_COLUMNS, "the marks table misses columns (see analysis.load.load_marks)")
    d = marks[MARK_COLUMNS].copy()
    problems = []
    for col in ("video_time", "clip_duration"):
        num = pd.to_numeric(d[col], errors="coerce")
        bad = d[col].notna() & num.isna()
        if bad.any():
            i = d.index[bad][0]
            problems.append(Problem(f"column {col}", f"must be numeric; row {i} has {d.at[i, col]!r}"))
        d[col] = num.astype(float)
    if problems:
        raise UserError("the marks table has values that are not numbers", problems)
    bad = d["video_time"].isna() | ~np.isfinite(d["video_time"].fillna(0)) | (d["video_time"] < 0)
    if bad.any():
        i = d.index[bad][0]
        raise UserError("the marks table cannot be analysed",
                        [Problem("column video_time", f"row {i} is {float(d.at[i, 'video_time'])}: a mark needs "
                                 "a video time of 0 s or more")])
    return d


def _kernel_rows(times: np.ndarray, grid: np.ndarray, duration: float, bw: float) -> np.ndarray:
    """Sum of reflected Gaussian kernels of `times` at the grid (one viewer's contribution)."""
    if not len(times):
        return np.zeros_like(grid)
    t = np.concatenate([times, -times, 2 * duration - times])
    z = (grid[:, None] - t[None, :]) / bw
    return np.exp(-0.5 * z**2).sum(axis=1) / (bw * np.sqrt(2 * np.pi))


def _viewers_of(viewers: pd.DataFrame | None, marks: pd.DataFrame) -> dict[str, list[str]]:
    seen = {c: sorted(set(g["participant"].astype(str))) for c, g in marks.groupby("clip")}
    if viewers is None:
        return seen
    v = viewers.rename(columns={"participant_id": "participant", "stimulus_id": "clip"})
    require_columns(v, ["participant", "clip"], "the viewers table needs participant and clip columns")
    out = {c: sorted(set(g["participant"].astype(str))) for c, g in v.groupby("clip")}
    for c, people in seen.items():  # a mark from someone not listed as a viewer still counts
        out[c] = sorted(set(out.get(c, [])) | set(people))
    return out


def mark_density(marks: pd.DataFrame, *, viewers: pd.DataFrame | None = None, bandwidth_s: float = BANDWIDTH_S,
                 step_s: float = STEP_S, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0,
                 durations: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Density of marks over clip time, per clip and mark prompt, with a bootstrap band.

    Returns clip, source, mark, t (s), density (marks per viewer per second), ci_low, ci_high,
    n_viewers, n_marks. viewers: who saw each clip (participant + clip, or the trial table's
    participant_id + stimulus_id); durations: clip -> seconds (default: the marks' clip_duration)."""
    if not bandwidth_s > 0 or not step_s > 0:
        raise UserError(f"bandwidth_s and step_s must be positive; got {bandwidth_s!r} and {step_s!r}")
    if not 0 < level < 1:
        raise UserError(f"level must lie between 0 and 1; got {level!r}")
    d = check_marks(marks)
    d["participant"] = d["participant"].astype(str)
    who = _viewers_of(viewers, d)
    rng = np.random.default_rng(seed)
    out = []
    for (clip, mark), g in d.groupby(["clip", "mark"], sort=True):
        dur = (durations or {}).get(clip)
        dur = float(dur if dur is not None else (g["clip_duration"].max() if g["clip_duration"].notna().any()
                                                 else g["video_time"].max()))
        if not dur > 0:
            raise UserError(f"clip {clip} has no duration to draw its marks over")
        grid = np.arange(0.0, dur + 1e-9, step_s)
        people = who[clip]
        times = g[g["video_time"] <= dur].groupby("participant")["video_time"].apply(np.asarray)
        per = np.vstack([_kernel_rows(times.get(p, np.array([])), grid, dur, bandwidth_s) for p in people])
        dens = per.mean(axis=0)
        # each bootstrap draw as counts per viewer: (n_boot x viewers) @ (viewers x grid)
        k = len(people)
        draws = np.zeros((int(n_boot), k))
        np.add.at(draws, (np.repeat(np.arange(int(n_boot)), k), rng.integers(0, k, int(n_boot) * k)), 1.0)
        boots = draws @ per / k
        out.append(pd.DataFrame({"clip": clip, "source": g["source"].iloc[0], "mark": mark, "t": grid,
                                 "density": dens, "ci_low": np.quantile(boots, (1 - level) / 2, axis=0),
                                 "ci_high": np.quantile(boots, (1 + level) / 2, axis=0),
                                 "n_viewers": len(people), "n_marks": len(g)}))
    cols = ["clip", "source", "mark", "t", "density", "ci_low", "ci_high", "n_viewers", "n_marks"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def mark_peaks(density: pd.DataFrame, marks: pd.DataFrame, *, bandwidth_s: float = BANDWIDTH_S,
               min_prominence: float = MIN_PROMINENCE, min_marks: int = MIN_MARKS) -> pd.DataFrame:
    """The peaks of each clip's density: clip, source, mark, rank (1 = highest), time_s,
    density, ci_low, ci_high, n_marks (within one bandwidth of the peak), share_viewers (of the
    clip's viewers, those with a mark there). A peak needs `min_marks` marks within one
    bandwidth: two people pressing near the same second is not yet a shared moment."""
    d = check_marks(marks)
    rows = []
    for (clip, mark), g in density.groupby(["clip", "mark"], sort=True):
        y = g["density"].to_numpy(float)
        t = g["t"].to_numpy(float)
        if not len(y) or y.max() <= 0:
            continue
        step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        # pad with zeros so a peak at the clip's first or last point is found too
        found, props = signal.find_peaks(np.r_[0.0, y, 0.0], prominence=min_prominence * y.max(),
                                         distance=max(1, int(round(2 * bandwidth_s / step))))
        found = found - 1
        mk = d[(d["clip"] == clip) & (d["mark"] == mark)]
        n_viewers = int(g["n_viewers"].iloc[0])
        for i in found:
            near = mk[(mk["video_time"] - t[i]).abs() <= bandwidth_s]
            if len(near) < min_marks:
                continue
            rows.append({"clip": clip, "source": g["source"].iloc[0], "mark": mark, "time_s": float(t[i]),
                         "density": float(y[i]), "ci_low": float(g["ci_low"].iloc[i]),
                         "ci_high": float(g["ci_high"].iloc[i]), "n_marks": len(near),
                         "share_viewers": (near["participant"].astype(str).nunique() / n_viewers
                                           if n_viewers else np.nan)})
    cols = ["clip", "source", "mark", "rank", "time_s", "density", "ci_low", "ci_high", "n_marks", "share_viewers"]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows)
    out["rank"] = out.groupby(["clip", "mark"])["density"].rank(ascending=False, method="first").astype(int)
    return out.sort_values(["clip", "mark", "rank"]).reset_index(drop=True)[cols]


# ----------------------------------------------------------------------------- still frames


def encode_jpeg(frame, width: int) -> bytes:
    """A PyAV frame as JPEG bytes, scaled to `width` (height in proportion, both even)."""
    import av

    height = max(2, int(round(frame.height * width / frame.width / 2)) * 2)
    width = max(2, int(round(width / 2)) * 2)
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height = width, height
    enc.pix_fmt = "yuvj420p"
    enc.time_base = Fraction(1, 25)
    img = frame.reformat(width=width, height=height, format="yuvj420p")
    packets = list(enc.encode(img)) + list(enc.encode(None))
    return b"".join(bytes(p) for p in packets)


def frames_at(path: str | Path, times: Sequence[float]) -> list:
    """The decoded frames (PyAV VideoFrames) shown at each video time, in the order given (the
    last frame for a time past the end).

    One pass through the clip: the times are visited in order and each frame is decoded once.
    A file that is missing or not a video gives a UserError naming it."""
    import av

    path = Path(path)
    if not path.is_file():
        raise UserError(f"cannot take still frames: {path} is not a file")
    wanted = sorted((float(t), i) for i, t in enumerate(times))
    out: list = [None] * len(wanted)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"cannot take still frames: {path} has no video stream")
            stream = container.streams.video[0]
            j, last = 0, None
            for frame in container.decode(stream):
                ft = float(frame.time) if frame.time is not None else 0.0
                # the frame on screen at time t is the last one starting at or before t
                while j < len(wanted) and last is not None and ft > wanted[j][0] + 1e-6:
                    out[wanted[j][1]] = last
                    j += 1
                if j >= len(wanted):
                    break
                last = frame
            while j < len(wanted) and last is not None:
                out[wanted[j][1]] = last
                j += 1
    except av.error.FFmpegError as exc:
        raise UserError(f"cannot take still frames from {path}: {exc}") from None
    if any(o is None for o in out):
        raise UserError(f"cannot take still frames: no frame could be decoded from {path}")
    return out


def stills(path: str | Path, times: Sequence[float], *, width: int = THUMB_WIDTH) -> list[bytes]:
    """JPEG images (`width` pixels wide) of the frames shown at each video time."""
    return [encode_jpeg(f, width) for f in frames_at(path, times)]


def still_frame(path: str | Path, time_s: float, *, width: int = 320) -> bytes:
    """The frame shown at `time_s` as JPEG bytes."""
    return stills(path, [time_s], width=width)[0]


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def clip_files(engine, study_id: str) -> dict[str, Path]:
    """Clip id -> local file of a registered study (clips given only as URLs are left out)."""
    from study import store
    from study.stimuli import Stimulus, stimulus_path

    info = store.get_study(engine, study_id)
    if not info.manifest_dir:
        return {}
    out = {}
    for m in info.manifest:
        if m.get("file"):
            path = stimulus_path(info.manifest_dir, Stimulus.model_construct(id=m["id"], file=m["file"]))
            if path.is_file():
                out[m["id"]] = path
    return out
