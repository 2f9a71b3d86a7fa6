"""Stimulus manifest and media checks: every kind of bad input gives a located Problem.

Media fixtures are made on the fly with the imageio-ffmpeg binary (1 s, tiny frames), so no
broken files are committed.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest

import cli
from study.errors import UserError
from study.stimuli import (
    COLUMNS,
    Stimulus,
    browser_playable,
    check_manifest,
    load_manifest,
    probe_media,
    stimulus_path,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo"


# ---------------------------------------------------------------- helpers


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, capture_output=True)


def make_clip(path: Path, seconds: float = 1.0, vcodec: list[str] | None = None,
              acodec: list[str] | None = None, extra: list[str] | None = None, size: str = "64x36") -> Path:
    vcodec = vcodec or ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"]
    acodec = acodec if acodec is not None else ["-c:a", "aac", "-b:a", "32k"]
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={size}:r=10:d={seconds}",
           "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:d={seconds}",
           *vcodec, *acodec, *(extra or []), "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """One small file per kind of media the checks must recognise."""
    d = tmp_path_factory.mktemp("media")
    out = {
        "good": make_clip(d / "good.mp4", extra=["-movflags", "+faststart"]),
        "long": make_clip(d / "long.mp4", seconds=8.0, extra=["-movflags", "+faststart"]),
        "no_faststart": make_clip(d / "no_faststart.mp4"),
        "hevc": make_clip(d / "hevc.mp4", vcodec=["-c:v", "libx265", "-preset", "ultrafast",
                                                  "-x265-params", "log-level=none"]),
        "avi": make_clip(d / "divx.avi", vcodec=["-c:v", "mpeg4"], acodec=["-c:a", "libmp3lame"]),
        "wmv": make_clip(d / "clip.wmv", vcodec=["-c:v", "wmv2"], acodec=["-c:a", "wmav2"]),
        "prores": make_clip(d / "prores.mov", vcodec=["-c:v", "prores_ks", "-profile:v", "0"],
                            acodec=["-c:a", "pcm_s16le"]),
        "high10": make_clip(d / "high10.mp4", vcodec=["-c:v", "libx264", "-pix_fmt", "yuv420p10le",
                                                      "-preset", "ultrafast"]),
        "vp9": make_clip(d / "clip.webm", vcodec=["-c:v", "libvpx-vp9", "-deadline", "realtime"],
                         acodec=["-c:a", "libopus"]),
    }
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 64)  # deterministic garbage
    out["corrupt"] = corrupt
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    out["empty"] = empty
    truncated = d / "truncated.mp4"
    truncated.write_bytes(out["no_faststart"].read_bytes()[:2000])  # moov (at the end) is cut off
    out["truncated"] = truncated
    return out


def write_manifest(folder: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(id: str, file: str | None = None, source: str = "human", **kw) -> dict:
    r = {"id": id, "file": file if file is not None else f"{id}.mp4", "source": source,
         "title": id, "credit": "test", "licence": "CC0-1.0"}
    if source == "ai":
        r.update(generator="gen", generator_version="1", prompt="a scene", seed="1")
    r.update(kw)
    return r


def link(media_file: Path, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(media_file.read_bytes())
    return name


def errors(problems):
    return [p for p in problems if p.severity == "error"]


def warnings(problems):
    return [p for p in problems if p.severity == "warning"]


def only_error(problems, contains: str):
    errs = errors(problems)
    assert len(errs) == 1, [str(p) for p in problems]
    assert contains.lower() in errs[0].message.lower(), str(errs[0])
    return errs[0]


@pytest.fixture
def good_pair(tmp_path, media):
    """A folder with two good clips, h.mp4 and a.mp4."""
    link(media["good"], tmp_path, "h.mp4")
    link(media["good"], tmp_path, "a.mp4")
    return tmp_path


# ---------------------------------------------------------------- manifest content


def test_valid_manifest_loads(good_pair):
    path = write_manifest(good_pair, [row("h", "h.mp4", pair_id="p1"),
                                      row("a", "a.mp4", "ai", pair_id="p1")])
    stimuli, problems = load_manifest(good_pair)  # a folder works as well as the CSV
    assert problems == []
    assert [s.id for s in stimuli] == ["h", "a"]
    assert stimuli[1].seed == 1 and stimuli[1].source == "ai" and stimuli[1].pair_id == "p1"
    assert stimuli[0].line == 2 and stimuli[1].line == 3
    assert load_manifest(path)[0] == stimuli


def test_missing_manifest_file(tmp_path):
    stimuli, problems = load_manifest(tmp_path / "nope.csv")
    assert stimuli == []
    p = only_error(problems, "does not exist")
    assert "nope.csv" in p.where
    _, problems = load_manifest(tmp_path)  # a folder without manifest.csv
    only_error(problems, "no manifest.csv")


def test_missing_clip_file(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4"), row("x", "clips/missing.mp4")])
    stimuli, problems = load_manifest(good_pair)
    p = only_error(problems, "does not exist")
    assert p.where == "manifest.csv line 3, column file"
    assert "clips/missing.mp4" in p.message
    assert [s.id for s in stimuli] == ["h"]


def test_duplicate_id(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4"), row("a", "a.mp4"), row("h", "a.mp4")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "duplicate id 'h'")
    assert p.where == "manifest.csv line 4, column id"
    assert "line 2" in p.message


def test_empty_id(good_pair):
    write_manifest(good_pair, [row("", "h.mp4")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "id is empty")
    assert p.where == "manifest.csv line 2, column id"


@pytest.mark.parametrize("bad_path", ["../x.mp4", "sub/../../x.mp4", "/etc/passwd", "C:\\clips\\x.mp4",
                                      "..\\x.mp4"])
def test_path_traversal(good_pair, bad_path):
    (good_pair.parent / "x.mp4").write_bytes(b"outside")
    write_manifest(good_pair, [row("h", "h.mp4"), row("evil", bad_path)])
    stimuli, problems = load_manifest(good_pair)
    p = only_error(problems, "traversal")
    assert p.where == "manifest.csv line 3, column file"
    assert [s.id for s in stimuli] == ["h"]


def test_symlink_leaving_the_folder(good_pair, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.mp4"
    outside.write_bytes(b"secret")
    os.symlink(outside, good_pair / "innocent.mp4")
    os.symlink(good_pair / "h.mp4", good_pair / "inside_link.mp4")  # links inside are fine
    write_manifest(good_pair, [row("s", "innocent.mp4"), row("i", "inside_link.mp4")])
    stimuli, problems = load_manifest(good_pair)
    p = only_error(problems, "outside the stimulus folder")
    assert p.where == "manifest.csv line 2, column file"
    assert [s.id for s in stimuli] == ["i"]


def test_stimulus_path_is_safe(good_pair):
    ok = Stimulus(id="h", file="h.mp4", source="human")
    assert stimulus_path(good_pair, ok) == (good_pair / "h.mp4").resolve()
    sneaky = Stimulus.model_construct(id="x", file="../../etc/passwd", source="human", url=None)
    with pytest.raises(UserError, match="traversal"):
        stimulus_path(good_pair, sneaky)
    with pytest.raises(UserError, match="traversal"):
        stimulus_path(good_pair, Stimulus.model_construct(id="x", file="/etc/passwd", source="human"))
    with pytest.raises(UserError, match="does not exist"):
        stimulus_path(good_pair, Stimulus(id="m", file="missing.mp4", source="human"))
    (good_pair / "sub").mkdir()
    with pytest.raises(UserError, match="folder"):
        stimulus_path(good_pair, Stimulus(id="d", file="sub", source="human"))


@pytest.mark.parametrize("value", ["robot", "", "Human-made"])
def test_bad_source(good_pair, value):
    write_manifest(good_pair, [row("h", "h.mp4", source=value)])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "must be 'human' or 'ai'")
    assert p.where == "manifest.csv line 2, column source"


def test_source_is_case_insensitive(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", source=" Human "), row("a", "a.mp4", source="AI",
                                                                         generator="g", prompt="p")])
    stimuli, problems = load_manifest(good_pair)
    assert errors(problems) == []
    assert [s.source for s in stimuli] == ["human", "ai"]


def test_both_file_and_url(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", url="https://example.org/h.mp4")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "both file and url")
    assert p.where == "manifest.csv line 2, column file/url"


def test_neither_file_nor_url(good_pair):
    write_manifest(good_pair, [row("h", "")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "neither file nor url")
    assert p.where == "manifest.csv line 2, column file/url"


@pytest.mark.parametrize("url", ["http://example.org/a.mp4", "ftp://example.org/a.mp4", "example.org/a.mp4"])
def test_url_must_be_https(good_pair, url):
    write_manifest(good_pair, [row("u", "", url=url)])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "not https")
    assert p.where == "manifest.csv line 2, column url"


def test_https_url_is_accepted_but_not_probed(good_pair):
    write_manifest(good_pair, [row("u", "", url="https://example.org/a.mp4")])
    table, problems = check_manifest(good_pair)
    assert errors(problems) == []
    assert table.set_index("id").loc["u", "status"] == "url (not probed)"
    assert any("not checked" in p.message and p.where.endswith("column url") for p in warnings(problems))


def test_bad_seed(good_pair):
    write_manifest(good_pair, [row("a", "a.mp4", "ai", seed="forty-two")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "whole number")
    assert p.where == "manifest.csv line 2, column seed"


def test_ai_clip_without_generator_or_prompt_warns(good_pair):
    write_manifest(good_pair, [row("a", "a.mp4", "ai", generator="", prompt="")])
    stimuli, problems = load_manifest(good_pair)
    assert errors(problems) == [] and len(stimuli) == 1
    where = sorted(p.where for p in warnings(problems))
    assert where == ["manifest.csv line 2, column generator", "manifest.csv line 2, column prompt"]


# ---------------------------------------------------------------- pairs


def test_pair_of_two_humans(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", pair_id="p1"), row("h2", "a.mp4", pair_id="p1")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "two human clips")
    assert p.where == "manifest.csv: pair p1"
    assert "h (line 2, human)" in p.message and "h2 (line 3, human)" in p.message


def test_pair_with_one_member(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", pair_id="lonely"), row("a", "a.mp4", "ai")])
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "only one clip")
    assert p.where == "manifest.csv: pair lonely"


def test_pair_with_three_members(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", pair_id="p"), row("a", "a.mp4", "ai", pair_id="p"),
                               row("a2", "a.mp4", "ai", pair_id="p")])
    _, problems = load_manifest(good_pair)
    only_error(problems, "has 3 clips")


def test_very_different_durations_in_a_pair_warn(tmp_path, media):
    link(media["good"], tmp_path, "short.mp4")
    link(media["long"], tmp_path, "long.mp4")
    write_manifest(tmp_path, [row("h", "short.mp4", pair_id="p1"), row("a", "long.mp4", "ai", pair_id="p1")])
    table, problems = check_manifest(tmp_path)
    assert errors(problems) == []
    (w,) = warnings(problems)
    assert w.where == "manifest.csv: pair p1"
    assert "differ a lot in length" in w.message and "h 1.0 s" in w.message and "a 8.0 s" in w.message
    assert set(table["status"]) == {"warning"}


def test_similar_durations_in_a_pair_are_fine(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", pair_id="p1"), row("a", "a.mp4", "ai", pair_id="p1")])
    table, problems = check_manifest(good_pair)
    assert problems == []
    assert list(table["status"]) == ["ok", "ok"]


# ---------------------------------------------------------------- the CSV itself


def test_missing_required_column(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4")], columns=["id", "file", "title"])
    stimuli, problems = load_manifest(good_pair)
    assert stimuli == []
    p = only_error(problems, "missing required column(s): source")
    assert p.where == "manifest.csv line 1"


def test_missing_file_and_url_columns(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4")], columns=["id", "source"])
    _, problems = load_manifest(good_pair)
    only_error(problems, "file (or url)")


def test_unknown_column_warns(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", director="x")], columns=[*COLUMNS, "director"])
    stimuli, problems = load_manifest(good_pair)
    assert len(stimuli) == 1
    (w,) = problems
    assert w.severity == "warning" and w.where == "manifest.csv line 1, column director"


def test_license_spelling_is_accepted(good_pair):
    write_manifest(good_pair, [{"id": "h", "file": "h.mp4", "source": "human", "license": "CC-BY-4.0"}],
                   columns=["id", "file", "source", "license"])
    stimuli, problems = load_manifest(good_pair)
    assert problems == [] and stimuli[0].licence == "CC-BY-4.0"


def test_unreadable_csv_binary(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(b"\x00\x01\x02PK\x03\x04" * 10)
    stimuli, problems = load_manifest(tmp_path)
    assert stimuli == []
    only_error(problems, "not a CSV text file")


def test_unreadable_csv_encoding(tmp_path):
    (tmp_path / "manifest.csv").write_bytes("id,file,source\nh,caf\xe9.mp4,human\n".encode("latin-1"))
    _, problems = load_manifest(tmp_path)
    only_error(problems, "not UTF-8")


def test_unreadable_csv_unclosed_quote(good_pair):
    (good_pair / "manifest.csv").write_text('id,file,source\nh,h.mp4,human\na,"a.mp4,ai\n')
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "cannot be read as CSV")
    assert p.where.startswith("manifest.csv line ")


def test_row_with_too_many_values(good_pair):
    (good_pair / "manifest.csv").write_text("id,file,source\nh,h.mp4,human,extra, values\n")
    _, problems = load_manifest(good_pair)
    p = only_error(problems, "needs quotes")
    assert p.where == "manifest.csv line 2"


def test_empty_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("")
    _, problems = load_manifest(tmp_path)
    only_error(problems, "empty")
    (tmp_path / "manifest.csv").write_text("id,file,source\n")
    _, problems = load_manifest(tmp_path)
    only_error(problems, "lists no clips")


def test_utf8_bom_and_multiline_notes(good_pair):
    text = 'id,file,source,notes\nh,h.mp4,human,"two\nlines"\na,a.mp4,human,x\n'
    (good_pair / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    stimuli, problems = load_manifest(good_pair)
    assert [p.severity for p in problems] == ["warning", "warning"]  # no licence column
    assert [(s.id, s.line) for s in stimuli] == [("h", 2), ("a", 4)]
    assert stimuli[0].notes == "two\nlines"


# ---------------------------------------------------------------- media


def test_probe_good_clip(media):
    info = probe_media(media["good"])
    assert info["error"] is None
    assert (info["container"], info["video_codec"], info["audio_codec"]) == ("mp4", "h264", "aac")
    assert (info["width"], info["height"], info["fps"]) == (64, 36, 10.0)
    assert info["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert info["size_bytes"] == media["good"].stat().st_size
    import hashlib

    assert info["sha256"] == hashlib.sha256(media["good"].read_bytes()).hexdigest()
    assert info["faststart"] is True
    assert browser_playable(info) == (True, "plays in current browsers")
    assert probe_media(media["good"], hash=False)["sha256"] is None


@pytest.mark.parametrize("kind, expected", [
    ("hevc", "HEVC"),
    ("avi", "avi container"),
    ("wmv", "asf container"),
    ("prores", "ProRes"),
    ("high10", "High 10"),
    ("corrupt", "not a readable video file"),
    ("empty", "empty"),
    ("truncated", "not a readable video file"),
])
def test_unplayable_media_is_an_error(tmp_path, media, kind, expected):
    info = probe_media(media[kind])
    ok, reason = browser_playable(info)
    assert ok is False
    assert expected.lower() in reason.lower(), reason
    # and located in the manifest
    name = link(media[kind], tmp_path, media[kind].name)
    write_manifest(tmp_path, [row("x", name)])
    table, problems = check_manifest(tmp_path)
    errs = errors(problems)
    assert errs and all(p.where == "manifest.csv line 2, column file" for p in errs)
    assert any(expected.lower() in p.message.lower() for p in errs)
    assert table.loc[0, "status"] == "error"


def test_wmv_and_avi_codecs_are_named(media):
    _, reason = browser_playable(probe_media(media["wmv"]))
    assert "Windows Media Video 8" in reason and "wmav2" in reason
    _, reason = browser_playable(probe_media(media["avi"]))
    assert "MPEG-4 Part 2" in reason


def test_mov_with_prores_reports_pcm_audio_too(media):
    info = probe_media(media["prores"])
    assert info["container"] == "mov" and info["video_codec"] == "prores"
    assert "pcm_s16le audio" in browser_playable(info)[1]


def test_missing_faststart_is_a_warning(tmp_path, media):
    info = probe_media(media["no_faststart"])
    assert info["faststart"] is False
    ok, reason = browser_playable(info)
    assert ok is True and "faststart" in reason
    link(media["no_faststart"], tmp_path, "slow.mp4")
    write_manifest(tmp_path, [row("x", "slow.mp4")])
    table, problems = check_manifest(tmp_path)
    (w,) = problems
    assert w.severity == "warning" and w.where == "manifest.csv line 2, column file"
    assert table.loc[0, "status"] == "warning"


def test_webm_vp9_opus_plays(media):
    info = probe_media(media["vp9"])
    assert (info["container"], info["video_codec"], info["audio_codec"]) == ("webm", "vp9", "opus")
    assert browser_playable(info)[0] is True


def test_mkv_warns(tmp_path, media):
    mkv = tmp_path / "clip.mkv"
    ffmpeg("-i", str(media["good"]), "-c", "copy", str(mkv))
    info = probe_media(mkv)
    assert info["container"] == "matroska"
    ok, reason = browser_playable(info)
    assert ok is True and "Matroska" in reason


def test_check_fills_probe_columns_and_no_hash(good_pair):
    write_manifest(good_pair, [row("h", "h.mp4", pair_id="p1"), row("a", "a.mp4", "ai", pair_id="p1")])
    table, _ = check_manifest(good_pair)
    assert table["sha256"].str.len().tolist() == [64, 64]
    assert table["size_bytes"].tolist() == [(good_pair / "h.mp4").stat().st_size] * 2
    table, _ = check_manifest(good_pair, hash=False)
    assert table["sha256"].isna().all()
    assert table["video_codec"].tolist() == ["h264", "h264"]


# ---------------------------------------------------------------- the demo clips


def _demo_rows() -> list[dict]:
    with (DEMO / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_demo_manifest_checks_clean():
    table, problems = check_manifest(DEMO)
    assert problems == [], [str(p) for p in problems]
    assert list(table["id"]) == ["practice", "human_01", "ai_01", "human_02", "ai_02", "human_03", "ai_03"]
    assert set(table["status"]) == {"ok"}


def test_demo_manifest_and_disk_agree():
    rows = _demo_rows()
    assert list(rows[0].keys()) == [*COLUMNS, "title_de"]  # the German titles for the debrief
    listed = {r["file"] for r in rows}
    on_disk = {p.name for p in DEMO.glob("*.mp4")}
    assert listed == on_disk
    stimuli, _ = load_manifest(DEMO)
    pairs = {}
    for s in stimuli:
        if s.pair_id:
            pairs.setdefault(s.pair_id, []).append(s.source)
    assert {k: sorted(v) for k, v in pairs.items()} == {f"pair_0{i}": ["ai", "human"] for i in (1, 2, 3)}


def test_demo_clips_are_small_browser_playable_h264_aac():
    total = 0
    for r in _demo_rows():
        info = probe_media(DEMO / r["file"])
        assert (info["container"], info["video_codec"], info["audio_codec"]) == ("mp4", "h264", "aac"), r["id"]
        assert info["pix_fmt"] == "yuv420p" and info["video_profile"] in ("Main", "High", "Constrained Baseline")
        assert info["faststart"] is True
        assert info["width"] <= 640 and info["height"] <= 360
        assert 6.0 <= info["duration_s"] <= 10.0
        assert info["size_bytes"] < 400 * 1024
        total += info["size_bytes"]
        assert browser_playable(info)[0]
    assert total < 3 * 1024 * 1024


def test_demo_manifest_is_honest():
    for r in _demo_rows():
        assert r["licence"] == "CC0-1.0"
        assert "make_demo_clips.py" in r["credit"]
        assert "demonstration" in r["title"].lower()
        assert "not a real film" in r["notes"] and "not made by a real AI video model" in r["notes"]
        if r["source"] == "ai":
            assert r["generator"] == "kuleshov demo generator (ffmpeg lavfi)"
            assert r["generator_version"] and r["prompt"] and r["seed"].isdigit()
        else:
            assert r["generator"] == r["prompt"] == r["seed"] == ""
    practice = next(r for r in _demo_rows() if r["id"] == "practice")
    assert practice["pair_id"] == "" and "practice" in practice["notes"].lower()


# ---------------------------------------------------------------- command line


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["stimuli", "check", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out + err


def test_cli_demo_passes(capsys):
    code, out = run_cli(capsys, str(DEMO))
    assert code == 0
    assert "7 clips (4 human, 3 ai), 3 pairs" in out and "No errors" in out
    assert "human_01" in out and "h264" in out


def test_cli_via_study_file(capsys, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(f"id: t\nstimuli:\n  manifest: {os.path.relpath(DEMO / 'manifest.csv', tmp_path)}\n")
    code, out = run_cli(capsys, str(study), "--no-hash")
    assert code == 0 and "ai_03" in out


def test_cli_study_file_problems(capsys, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("id: t\n")  # no stimuli.manifest: the schema's default manifest.csv is looked for
    code, out = run_cli(capsys, str(study))
    assert code == 1 and "manifest.csv" in out and "does not exist" in out
    study.write_text("id: t\nstimuli:\n  manifest: 3\n")
    code, out = run_cli(capsys, str(study))
    assert code == 1 and "stimuli.manifest" in out
    study.write_text("id: [unclosed\n")
    code, out = run_cli(capsys, str(study))
    assert code == 1 and "not valid YAML" in out
    code, out = run_cli(capsys, str(tmp_path / "missing.yaml"))
    assert code == 1 and "does not exist" in out


def test_cli_bad_manifest_exits_1_and_lists_every_problem(capsys, tmp_path, media):
    link(media["wmv"], tmp_path, "old.wmv")
    link(media["corrupt"], tmp_path, "broken.mp4")
    write_manifest(tmp_path, [row("a", "old.wmv"), row("b", "broken.mp4"), row("a", "x.mp4"),
                              row("c", "../etc.mp4"), row("d", "old.wmv", source="alien")])
    code, out = run_cli(capsys, str(tmp_path / "manifest.csv"))
    assert code == 1
    for expected in ["manifest.csv line 2, column file", "Windows Media Video 8",
                     "manifest.csv line 3, column file", "not a readable video file",
                     "manifest.csv line 4, column id", "duplicate id",
                     "manifest.csv line 5, column file", "traversal",
                     "manifest.csv line 6, column source"]:
        assert expected in out, expected
    assert "7 error(s)" in out  # the .wmv has three: asf container, wmv2 video, wmav2 audio


def test_cli_missing_manifest_exits_1(capsys, tmp_path):
    code, out = run_cli(capsys, str(tmp_path / "nothing.csv"))
    assert code == 1 and "does not exist" in out


def test_cli_warnings_only_exit_0(capsys, tmp_path, media):
    link(media["no_faststart"], tmp_path, "slow.mp4")
    write_manifest(tmp_path, [row("x", "slow.mp4")])
    code, out = run_cli(capsys, str(tmp_path))
    assert code == 0 and "warning:" in out and "faststart" in out


def test_every_problem_of_a_row_is_reported(good_pair):
    write_manifest(good_pair, [row("x", "", source="robot", seed="many")])
    _, problems = load_manifest(good_pair)
    assert sorted(p.where for p in errors(problems)) == [
        "manifest.csv line 2, column file/url", "manifest.csv line 2, column seed",
        "manifest.csv line 2, column source"]


def test_problems_come_in_manifest_order(tmp_path, media):
    link(media["corrupt"], tmp_path, "broken.mp4")
    write_manifest(tmp_path, [row("a", "broken.mp4", pair_id="p"), row("b", "../x.mp4")],
                   columns=[*COLUMNS, "extra"])
    _, problems = check_manifest(tmp_path)
    assert [p.where for p in problems] == ["manifest.csv line 1, column extra",
                                           "manifest.csv line 2, column file",
                                           "manifest.csv line 3, column file",
                                           "manifest.csv: pair p"]


def test_probe_columns_stay_whole_numbers_beside_a_url_clip(good_pair, capsys):
    # A URL clip has no width: the column must not turn into floats ("320.0x240.0").
    write_manifest(good_pair, [row("h", "h.mp4"), row("u", "", source="ai", url="https://example.org/a.mp4")])
    table, _ = check_manifest(good_pair, hash=False)
    h = table.set_index("id").loc["h"]
    assert str(h["width"]) == str(int(h["width"])) and str(h["size_bytes"]).isdigit()
    code, out = run_cli(capsys, str(good_pair), "--no-hash")
    assert code == 0
    assert ".0x" not in out and re.search(r"\b\d+x\d+\b", out), out
