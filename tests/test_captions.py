"""Captions: the manifest's `captions` column, `kuleshov stimuli check` on WebVTT files, and
the server's /captions route (text/vtt, the same containment as clips). The player's track and
toggle are checked in Chromium in tests/test_browser_keyboard.py."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

import cli
from study import store
from study.captions import vtt_problems
from study.stimuli import captions_path, check_manifest, load_manifest

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "stimuli" / "demo"
DEMO = DEMO_DIR / "study.yaml"

GOOD = "WEBVTT\n\n1\n00:00.500 --> 00:03.000\n[a low drone hums]\n\n00:03.500 --> 00:05.000 line:70%\nand fades\n"


def folder_with(tmp_path: Path, vtt: str | bytes | None, name: str = "clip.vtt") -> Path:
    """A copy of the demo's practice clip (6 s) with a manifest naming `name` as its captions."""
    shutil.copy(DEMO_DIR / "practice.mp4", tmp_path / "clip.mp4")
    if vtt is not None:
        target = tmp_path / name
        target.write_bytes(vtt if isinstance(vtt, bytes) else vtt.encode())
    (tmp_path / "manifest.csv").write_text(
        f"id,file,source,licence,captions\nc1,clip.mp4,human,CC0-1.0,{name}\n", encoding="utf-8")
    return tmp_path


def errors(folder: Path) -> list[tuple[str, str]]:
    _, problems = check_manifest(folder, hash=False)
    return [(p.where, p.message) for p in problems if p.severity == "error"]


def test_demo_clips_all_have_valid_captions():
    table, problems = check_manifest(DEMO_DIR, hash=False)
    assert [p for p in problems if p.severity == "error"] == []
    assert list(table["captions"]) == [f"{cid}.vtt" for cid in table["id"]]
    stims, _ = load_manifest(DEMO_DIR)
    assert captions_path(DEMO_DIR, stims[0]) == (DEMO_DIR / "practice.vtt").resolve()


def test_a_good_caption_file_passes(tmp_path):
    folder = folder_with(tmp_path, GOOD)
    table, problems = check_manifest(folder, hash=False)
    assert problems == []
    assert table.loc[0, "status"] == "ok" and table.loc[0, "captions"] == "clip.vtt"
    assert vtt_problems(folder / "clip.vtt", 6.0) == []


@pytest.mark.parametrize("content, words", [
    ("1\n00:00.500 --> 00:03.000\nno header\n", "not a WebVTT file"),
    ("WEBVTT\n\n00:00.500 --> 00:09.000\ntoo long\n",
     "cue 1 (00:00:00.500 --> 00:00:09.000) ends after the clip, which lasts 00:06.000 (6 s)"),
    ("WEBVTT\n\n00:02.000 --> 00:01.000\nbackwards\n", "cue 1 (00:00:02.000 --> 00:00:01.000) ends before it starts"),
    ("WEBVTT\n\n00:00.5 --> 00:01.000\nsloppy timestamp\n", "not valid WebVTT"),
    ("WEBVTT\n", "holds no cues"),
    (b"WEBVTT\n\n00:00.500 --> 00:01.000\n\xff\xfe bad bytes\n", "not UTF-8"),
    (b"\x00\x01\x02\x03", "binary data"),
])
def test_bad_caption_files_are_errors_with_their_place(tmp_path, content, words):
    folder = folder_with(tmp_path, content)
    found = errors(folder)
    assert len(found) == 1, found
    where, message = found[0]
    assert where == "manifest.csv line 2, column captions"
    assert message.startswith("clip.vtt: ") and words in message, message


@pytest.mark.parametrize("name, words", [
    ("missing.vtt", "does not exist"),
    ("../outside.vtt", "leaves the manifest's folder"),
    ("/etc/passwd.vtt", "is absolute"),
    ("clip.srt", "does not end in .vtt"),
])
def test_caption_paths_are_checked_like_clip_paths(tmp_path, name, words):
    sub = tmp_path / "study"
    sub.mkdir()
    folder = folder_with(sub, None, name)
    found = errors(folder)
    assert [w for w, _ in found] == ["manifest.csv line 2, column captions"], found
    assert words in found[0][1]


def test_a_caption_symlink_leaving_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.vtt"
    outside.write_text(GOOD)
    sub = tmp_path / "study"
    sub.mkdir()
    folder = folder_with(sub, None)
    (folder / "clip.vtt").symlink_to(outside)
    assert "outside the stimulus folder" in errors(folder)[0][1]


def test_stimuli_check_command_reports_a_bad_caption_file(tmp_path, capsys):
    folder = folder_with(tmp_path, "WEBVTT\n\n00:00.500 --> 00:30.000\nfar too long\n")
    code = cli.main(["stimuli", "check", str(folder), "--no-hash"])
    out = capsys.readouterr().out
    assert code == 1
    assert "error: manifest.csv line 2, column captions: clip.vtt: cue 1" in out and "ends after the clip" in out


# --------------------------------------------------------------------------- the route


@pytest.fixture
def served(tmp_path, db_url):
    """The route on SQLite and PostgreSQL (the caption file is read from a JSON column)."""
    import server

    folder = tmp_path / "study"
    shutil.copytree(DEMO_DIR, folder)
    engine = store.make_engine(db_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, folder / "study.yaml")
    app = server.make_app(engine, {study_id: folder}, streamlit=False)
    with TestClient(app) as client:
        yield client, study_id, folder, engine
    engine.dispose()


def test_captions_are_served_as_text_vtt(served):
    client, study_id, folder, _ = served
    resp = client.get(f"/captions/{study_id}/human_01")
    assert resp.status_code == 200
    assert resp.content == (folder / "human_01.vtt").read_bytes()
    assert resp.headers["content-type"].startswith("text/vtt")
    assert resp.headers["x-content-type-options"] == "nosniff"
    again = client.get(f"/captions/{study_id}/human_01", headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304
    assert client.get(f"/captions/{study_id}/nope").status_code == 404
    assert client.get("/captions/no-such-study/human_01").status_code == 404
    assert client.get(f"/captions/{study_id}/..%2Fstudy.yaml").status_code == 404


def test_caption_file_swapped_for_an_outside_link_is_refused(served, tmp_path):
    client, study_id, folder, _ = served
    assert client.get(f"/captions/{study_id}/ai_01").status_code == 200
    secret = tmp_path / "secret.vtt"
    secret.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\nsecret\n")
    (folder / "ai_01.vtt").unlink()
    (folder / "ai_01.vtt").symlink_to(secret)
    assert client.get(f"/captions/{study_id}/ai_01").status_code == 404


def test_a_caption_file_that_is_not_vtt_is_not_served(served):
    """Registered with good captions, then the stored name is pointed at another file type:
    the captions route serves text/vtt only, not even the clips beside it."""
    client, study_id, folder, engine = served
    # (not requested before: the route caches the manifest entry, not the file, for 30 s)
    s = store.stimuli.c
    with engine.begin() as conn:
        prov = conn.execute(sa.select(s.provenance).where(s.stimulus_id == "human_02")).scalar()
        conn.execute(store.stimuli.update().where(s.stimulus_id == "human_02")
                     .values(provenance={**prov, "captions": "human_02.mp4"}))
    assert client.get(f"/captions/{study_id}/human_02").status_code == 404


def test_registering_an_unchanged_caption_free_manifest_is_no_change(tmp_path, sqlite_url):
    """The snapshot of a manifest without captions has no `captions` key, as before the column."""
    folder = tmp_path / "study"
    shutil.copytree(DEMO_DIR, folder)
    manifest = folder / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(newline="")))
    fields = [f for f in rows[0] if f != "captions"]
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, folder / "study.yaml")
    snapshot = store.get_study(engine, study_id).manifest
    assert all("captions" not in row for row in snapshot)
    assert store.stimulus_captions(engine, study_id, "human_01") is None
    engine.dispose()
