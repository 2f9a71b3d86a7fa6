"""Moments marked (analysis/marks.py): densities with bootstrap bands, their peaks at the
planted times, and still frames from the demo clips (stimuli/demo/*.mp4) with PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import trapezoid

from analysis import marks, trace_synthetic
from study.errors import UserError

DEMO = Path(__file__).resolve().parent.parent / "stimuli" / "demo"


def mark_rows(times, participants=None, clip="c1", duration=10.0, mark="moved") -> pd.DataFrame:
    participants = participants or [f"P{i}" for i in range(len(times))]
    return pd.DataFrame({"participant": participants, "trial": 1, "clip": clip, "source": "human", "mark": mark,
                         "video_time": times, "clip_duration": duration})


@pytest.fixture(scope="module")
def study():
    return trace_synthetic.synthetic_traces(30, seed=4, mark_times=[2.0, 6.0], mark_prob=0.8)


def test_density_peaks_at_the_planted_times(study):
    dens = marks.mark_density(study.marks, viewers=study.trials, n_boot=300)
    peaks = marks.mark_peaks(dens, study.marks)
    assert set(peaks["clip"]) == set(trace_synthetic.DEMO_CLIPS)
    for clip, g in peaks.groupby("clip"):
        assert len(g) == 2, g  # the two planted moments, no peak from the background marks
        assert sorted(g["time_s"]) == pytest.approx([2.0, 6.0], abs=0.2), clip
        assert sorted(g["rank"]) == [1, 2]
        assert ((g["ci_low"] < g["density"]) & (g["density"] < g["ci_high"])).all()
        assert g["share_viewers"].between(0.55, 0.95).all()  # planted: 80% of viewers mark each moment
    assert (dens["n_viewers"] == 30).all()


def test_density_is_a_rate_per_viewer_with_the_stated_bandwidth():
    one = marks.mark_density(mark_rows([5.0]), n_boot=50)
    # one mark of one viewer: a Gaussian with SD = the bandwidth, height 1 / (bw sqrt(2 pi))
    assert one["density"].max() == pytest.approx(1 / (marks.BANDWIDTH_S * np.sqrt(2 * np.pi)), rel=1e-6)
    assert one.loc[one["density"].idxmax(), "t"] == pytest.approx(5.0)
    # viewers who marked nothing count: the same mark among four viewers is a quarter of the rate
    viewers = pd.DataFrame({"participant": ["P0", "A", "B", "C"], "clip": "c1"})
    four = marks.mark_density(mark_rows([5.0]), viewers=viewers, n_boot=50)
    assert four["density"].to_numpy() == pytest.approx(one["density"].to_numpy() / 4)
    assert (four["n_viewers"] == 4).all()
    # reflected at the ends: a mark at 0 s keeps all its mass inside the clip
    edge = marks.mark_density(mark_rows([0.0, 9.9, 3.0]), n_boot=50)
    assert trapezoid(edge["density"], edge["t"]) == pytest.approx(1.0, rel=2e-3)  # 3 marks / 3 viewers


def test_bootstrap_band_resamples_viewers():
    d = mark_rows([5.0] * 10 + [2.0] * 10, participants=[f"P{i}" for i in range(20)])
    dens = marks.mark_density(d, n_boot=400, seed=1)
    at5 = dens.loc[(dens["t"] - 5.0).abs().idxmin()]
    # ten of twenty viewers marked at 5 s: the share's bootstrap SD is about sqrt(.25 / 20)
    height = 1 / (marks.BANDWIDTH_S * np.sqrt(2 * np.pi))
    assert at5["density"] == pytest.approx(0.5 * height, rel=1e-3)
    assert (at5["ci_high"] - at5["ci_low"]) / height == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 20), rel=0.3)
    again = marks.mark_density(d, n_boot=400, seed=1)
    pd.testing.assert_frame_equal(dens, again)


def test_bad_marks_give_clear_errors():
    with pytest.raises(UserError, match="misses columns"):
        marks.mark_density(mark_rows([1.0]).drop(columns=["mark"]))
    with pytest.raises(UserError) as e:
        marks.mark_density(mark_rows([1.0, -2.0]))
    assert "row 1 is -2.0" in str(e.value.problems[0])
    bad = mark_rows([1.0, 2.0]).astype({"video_time": object})
    bad.loc[0, "video_time"] = "soon"
    with pytest.raises(UserError, match="not numbers"):
        marks.mark_density(bad)
    with pytest.raises(UserError, match="positive"):
        marks.mark_density(mark_rows([1.0]), bandwidth_s=0)


def _decode(jpeg: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(jpeg), format="jpeg_pipe") as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)


def test_still_frames_from_the_demo_clips():
    clip = DEMO / "human_01.mp4"  # a dawn: the frame brightens over the clip's 8 s
    shots = marks.stills(clip, [6.0, 0.5, 4.0, 100.0], width=160)
    assert all(s[:2] == b"\xff\xd8" for s in shots)  # JPEG
    imgs = [_decode(s) for s in shots]
    assert imgs[0].shape == (90, 160, 3)  # 640 x 360 scaled to 160 wide
    frames = marks.frames_at(clip, [0.5, 4.0, 6.0, 100.0])
    assert [round(f.time, 3) for f in frames[:3]] == [0.5, 4.0, 6.0]
    assert frames[3].time == pytest.approx(8.0 - 1 / 24, abs=1e-6)  # past the end: the last frame
    for img, frame in zip([imgs[1], imgs[2], imgs[0]], frames[:3]):
        direct = frame.reformat(width=160, height=90, format="rgb24").to_ndarray().astype(float)
        assert np.abs(img.mean(axis=(0, 1)) - direct.mean(axis=(0, 1))).max() < 4  # JPEG error only
    assert np.abs(imgs[0] - imgs[1]).mean() > 10  # different moments, different pictures
    other = _decode(marks.still_frame(DEMO / "ai_02.mp4", 4.0, width=160))
    assert np.abs(other - imgs[2]).mean() > 10
    uri = marks.data_uri(shots[0])
    assert uri.startswith("data:image/jpeg;base64,/9j/")


def test_still_frames_refuse_missing_or_broken_files(tmp_path):
    with pytest.raises(UserError, match="is not a file"):
        marks.still_frame(tmp_path / "none.mp4", 1.0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(UserError, match="cannot take still frames from"):
        marks.still_frame(broken, 1.0)


def test_two_marks_are_not_a_peak():
    d = mark_rows([3.0, 3.1, 3.2, 8.0, 8.1], participants=["A", "B", "C", "D", "E"])
    dens = marks.mark_density(d, n_boot=50)
    peaks = marks.mark_peaks(dens, d)
    assert peaks["time_s"].tolist() == [pytest.approx(3.1, abs=0.05)]
    assert sorted(marks.mark_peaks(dens, d, min_marks=2)["time_s"]) == [pytest.approx(3.1, abs=0.05),
                                                                        pytest.approx(8.05, abs=0.06)]
