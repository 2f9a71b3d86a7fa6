"""The study builder without a browser: zips in and out, the pairs table, and who may build.

study.builder's functions on real folders; the upload route (server.py /api/builder/upload)
through Starlette's test client with tickets of an editor, a viewer and an account locked or
deleted after its ticket was issued; the builder page through Streamlit's AppTest as a viewer.
The whole builder in Chromium is tests/test_browser_builder.py.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from study import builder, store
from study.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo"
PW = "correct horse battery"
SESSION_KEY = "_kuleshov_researcher"  # app_pages.auth.SESSION_KEY


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KULESHOV_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def demo_draft(n_clips: int = 2) -> builder.Draft:
    """A draft holding the demo's first pair (study file, manifest, clips)."""
    draft = builder.new_draft()
    rows = builder.read_manifest(DEMO / "manifest.csv")
    keep = [r for r in rows if r["id"] in ("human_01", "ai_01")][:n_clips]
    for row in keep:
        for col in ("file", "captions"):
            shutil.copyfile(DEMO / row[col], draft.folder / row[col])
    builder.write_manifest(draft, keep)
    builder.write_study(draft, builder.to_yaml({
        "id": "zip-study", "title": "Zipped", "consent": {"text": "Agree?"},
        "stimuli": {"manifest": "manifest.csv"}, "design": {"pairs": "one_per_participant"}}))
    return draft


def zip_of(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def drafts(data_dir: Path) -> list[Path]:
    base = data_dir / "builder" / "drafts"
    return sorted(p for p in base.iterdir()) if base.is_dir() else []


# --------------------------------------------------------------------------- zips


def test_download_then_open_gives_the_same_study_folder(data_dir):
    draft = demo_draft()
    assert builder.validate(draft) == [] or all(p.severity != "error" for p in builder.validate(draft))
    data = builder.folder_zip(draft.folder)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == sorted(["study.yaml", "manifest.csv", "human_01.mp4", "ai_01.mp4",
                                                "human_01.vtt", "ai_01.vtt"])
    opened = builder.open_zip(data)
    assert opened.folder != draft.folder
    for name in ("study.yaml", "manifest.csv", "human_01.mp4", "ai_01.vtt"):
        assert (opened.folder / name).read_bytes() == (draft.folder / name).read_bytes()
    assert [p for p in builder.validate(opened) if p.severity == "error"] == []


def test_a_study_folder_one_level_down_in_the_zip_opens(data_dir):
    data = zip_of({"my-study/study.yaml": b"id: x\ntitle: X\nconsent: {text: hi}\n", "my-study/manifest.csv": b"id\n"})
    opened = builder.open_zip(data)
    assert (opened.folder / "study.yaml").read_bytes().startswith(b"id: x")


@pytest.mark.parametrize("name", ["../evil.txt", "study/../../evil.txt", "/etc/evil.txt", "C:/evil.txt",
                                  "..\\evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(data_dir, name):
    data = zip_of({"study.yaml": b"id: x\n", name: b"owned"})
    with pytest.raises(UserError, match="points outside the study folder; refused") as exc:
        builder.open_zip(data)
    assert repr(name) in str(exc.value)  # the entry named as it is in the zip
    assert drafts(data_dir) == []  # no draft left half-made
    assert not list(data_dir.parent.rglob("evil.txt"))


def test_a_symbolic_link_in_the_zip_is_refused(data_dir):
    data = zip_of({"study.yaml": b"id: x\n"}, symlinks={"clip.mp4": "/etc/passwd"})
    with pytest.raises(UserError, match="'clip.mp4' is a symbolic link; refused"):
        builder.open_zip(data)
    assert drafts(data_dir) == []


def test_an_oversize_zip_is_refused_by_the_setting(data_dir, monkeypatch):
    monkeypatch.setenv("KULESHOV_MAX_STUDY_ZIP_MB", "0.001")  # about 1 kB
    big = zip_of({"study.yaml": b"id: x\n", "clip.mp4": os.urandom(10_000)})  # ~10 kB, incompressible
    with pytest.raises(UserError, match=r"the zip is larger than 0.001 MB \(KULESHOV_MAX_STUDY_ZIP_MB\); refused"):
        builder.open_zip(big)
    # small as a zip, large unpacked
    monkeypatch.setenv("KULESHOV_MAX_STUDY_ZIP_MB", "0.05")  # about 52 kB
    packed = zip_of({"study.yaml": b"id: x\n", "clip.mp4": b"\0" * 200_000})
    assert len(packed) < 52_000
    with pytest.raises(UserError, match=r"unpacks to more than 0.05 MB \(KULESHOV_MAX_STUDY_ZIP_MB\); refused"):
        builder.open_zip(packed)
    assert drafts(data_dir) == []


def test_a_zip_bomb_entry_is_refused(data_dir):
    bomb = zip_of({"study.yaml": b"id: x\n", "clip.mp4": b"\0" * (20 * 1024 * 1024)})
    with pytest.raises(UserError, match="refused as a zip bomb"):
        builder.open_zip(bomb)


@pytest.mark.parametrize("data, message", [
    (b"this is not a zip at all", "not a zip file"),
    (b"PK\x03\x04" + b"\0" * 40, "not a zip file"),
    (b"", "not a zip file"),
])
def test_a_bad_zip_is_refused_with_a_sentence(data_dir, data, message):
    with pytest.raises(UserError, match=message):
        builder.open_zip(data)


def test_a_truncated_zip_is_refused_with_a_sentence(data_dir):
    whole = builder.folder_zip(demo_draft().folder)
    before = drafts(data_dir)
    with pytest.raises(UserError, match="not a zip file|cannot be read"):
        builder.open_zip(whole[: len(whole) // 2])
    assert drafts(data_dir) == before


def test_a_zip_without_a_study_file_is_refused(data_dir):
    with pytest.raises(UserError, match="the zip holds no study.yaml"):
        builder.open_zip(zip_of({"manifest.csv": b"id\n"}))


# --------------------------------------------------------------------------- the manifest table's pairs


def test_the_pairs_table_shows_each_pair_and_its_duration_mismatch():
    rows = [
        {"id": "h1", "file": "h1.mp4", "source": "human", "pair_id": "p1"},
        {"id": "a1", "file": "a1.mp4", "source": "ai", "pair_id": "p1"},
        {"id": "h2", "file": "h2.mp4", "source": "human", "pair_id": "p2"},
        {"id": "a2", "file": "a2.mp4", "source": "ai", "pair_id": "p2"},
        {"id": "h3", "file": "h3.mp4", "source": "human", "pair_id": "p3"},
        {"id": "x3", "file": "x3.mp4", "source": "human", "pair_id": "p3"},
        {"id": "lone", "file": "lone.mp4", "source": "ai", "pair_id": "p4"},
        {"id": "free", "file": "free.mp4", "source": "human"},
    ]
    durations = {"h1.mp4": 8.0, "a1.mp4": 8.4, "h2.mp4": 6.0, "a2.mp4": 20.0, "h3.mp4": 5.0, "x3.mp4": 5.0,
                 "lone.mp4": 4.0}
    table = {r["pair"]: r for r in builder.pair_table(rows, durations)}
    assert set(table) == {"p1", "p2", "p3", "p4"}
    assert table["p1"]["difference (s)"] == 0.4 and table["p1"]["check"] == "ok"
    assert table["p1"]["durations (s)"] == "8.0, 8.4" and table["p1"]["clips"] == "h1 (human), a1 (ai)"
    assert table["p2"]["difference (s)"] == 14.0 and table["p2"]["check"] == "lengths differ a lot"
    assert table["p3"]["check"] == "needs one human and one ai clip"
    assert table["p4"]["check"] == "needs exactly 2 clips (has 1)"


def test_the_manifest_table_has_every_column_the_issue_names():
    for col in ("source", "pair_id", "title", "credit", "licence", "generator", "prompt", "seed", "captions"):
        assert col in builder.TABLE_COLUMNS


# --------------------------------------------------------------------------- who may build


@pytest.fixture
def team(sqlite_url):
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO / "study.yaml")
    people = {}
    for name, role in (("olga", "owner"), ("ed", "editor"), ("vic", "viewer")):
        people[name] = store.add_researcher(engine, name, PW, role)
        if role != "owner":
            store.grant(engine, name, study_id)
    yield engine, study_id, people
    engine.dispose()


@pytest.fixture
def client(team):
    import server

    engine, study_id, _ = team
    app = server.make_app(engine, {study_id: DEMO}, streamlit=False)
    with TestClient(app) as c:
        yield c


def _upload(client, token: str, path: Path, kind: str | None = None):
    query = f"ticket={token}&name={path.name}" + (f"&kind={kind}" if kind else "")
    return client.post(f"/api/builder/upload?{query}", content=path.read_bytes())


def test_the_upload_route_takes_an_editors_clip(team, client):
    engine, _, people = team
    draft = builder.new_draft()
    token = builder.TICKETS.issue(people["ed"], draft.folder)
    answer = _upload(client, token, DEMO / "human_01.mp4")
    assert answer.status_code == 200, answer.text
    assert answer.json()["size_bytes"] == (DEMO / "human_01.mp4").stat().st_size
    assert (draft.folder / "human_01.mp4").read_bytes() == (DEMO / "human_01.mp4").read_bytes()
    ((kind, name, received),) = builder.TICKETS.collect(token)
    assert kind == "clip" and received.sha256 == answer.json()["sha256"]


def test_the_upload_route_refuses_a_viewers_ticket(team, client):
    """A viewer's page never gets a ticket (actions.builder_upload_ticket refuses); one made by
    hand is refused by the route, which checks the account again."""
    engine, _, people = team
    draft = builder.new_draft()
    from app_pages import actions

    with pytest.raises(UserError, match="viewer 'vic' may not"):
        actions.builder_upload_ticket(engine, people["vic"], str(draft.folder))
    token = builder.TICKETS.issue(people["vic"], draft.folder)
    answer = _upload(client, token, DEMO / "human_01.mp4")
    assert answer.status_code == 403 and "viewer 'vic' may not" in answer.json()["error"]
    assert builder.clips(draft) == []


@pytest.mark.parametrize("change", ["locked", "deleted", "demoted"])
def test_the_upload_route_refuses_an_account_changed_since_its_ticket(team, client, change):
    engine, _, people = team
    draft = builder.new_draft()
    token = builder.TICKETS.issue(people["ed"], draft.folder)
    if change == "locked":
        store.set_locked(engine, "ed", True)
    elif change == "deleted":
        store.delete_researcher(engine, "ed")
    else:
        store.delete_researcher(engine, "ed")
        store.add_researcher(engine, "ed", PW, "viewer")
    answer = _upload(client, token, DEMO / "human_01.mp4")
    assert answer.status_code == 403, answer.text
    assert builder.clips(draft) == []


def test_the_upload_route_refuses_no_ticket_and_an_oversize_clip(team, client, monkeypatch):
    _, _, people = team
    answer = client.post("/api/builder/upload?ticket=made-up&name=a.mp4", content=b"x")
    assert answer.status_code == 403 and "no valid upload ticket" in answer.json()["error"]
    monkeypatch.setenv("KULESHOV_MAX_CLIP_MB", "0.01")  # about 10 kB; the demo clip is ~100 kB
    draft = builder.new_draft()
    token = builder.TICKETS.issue(people["ed"], draft.folder)
    answer = _upload(client, token, DEMO / "human_01.mp4")
    assert answer.status_code == 413
    assert "larger than the limit" in answer.json()["error"] and "KULESHOV_MAX_CLIP_MB" in answer.json()["error"]
    assert list(draft.folder.iterdir()) == []  # nothing of it kept, not even the temporary file


def test_the_upload_route_opens_a_zip_and_refuses_a_hostile_one(team, client, tmp_path, monkeypatch):
    _, _, people = team
    inbox = builder.new_draft()
    token = builder.TICKETS.issue(people["ed"], inbox.folder)
    good = tmp_path / "study.zip"
    good.write_bytes(builder.folder_zip(demo_draft().folder))
    answer = _upload(client, token, good, kind="zip")
    assert answer.status_code == 200, answer.text
    ((kind, _, folder),) = builder.TICKETS.collect(token)
    assert kind == "zip" and (Path(folder) / "human_01.mp4").is_file()

    for name, data, message in (
        ("slip.zip", zip_of({"study.yaml": b"id: x\n", "../../evil.txt": b"owned"}), "points outside the study folder"),
        ("bad.zip", b"not a zip", "not a zip file"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        answer = _upload(client, token, path, kind="zip")
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
        ((kind, got_name, text),) = builder.TICKETS.collect(token)
        assert kind == "error" and got_name == name and message in text
    monkeypatch.setenv("KULESHOV_MAX_STUDY_ZIP_MB", "0.01")
    answer = _upload(client, token, good, kind="zip")
    assert answer.status_code == 413 and "KULESHOV_MAX_STUDY_ZIP_MB" in answer.json()["error"]
    assert not list(tmp_path.rglob("evil.txt"))
    assert [p.name for p in inbox.folder.iterdir()] == []  # no upload left behind


def test_a_viewer_cannot_save_or_open_a_study_in_the_builder(team):
    from app_pages import actions

    engine, study_id, people = team
    draft = demo_draft()
    before = store.list_versions(engine, study_id)
    for call in (lambda: actions.builder_allowed(engine, people["vic"]),
                 lambda: actions.builder_open(engine, people["vic"], study_id),
                 lambda: actions.builder_save(engine, people["vic"], str(draft.folder))):
        with pytest.raises(UserError, match="viewer 'vic' may not"):
            call()
    assert store.list_versions(engine, study_id) == before
    assert [s["id"] for s in store.list_studies(engine)] == [study_id]  # zip-study was not registered
    # the editor may
    study, version, _ = actions.builder_save(engine, people["ed"], str(draft.folder))
    assert (study, version) == ("zip-study", "1")


def test_a_locked_or_deleted_account_cannot_log_in(team):
    engine, _, _ = team
    assert store.login(engine, "ed", PW).researcher is not None
    store.set_locked(engine, "ed", True)
    assert store.login(engine, "ed", PW).researcher is None
    store.delete_researcher(engine, "vic")
    assert store.login(engine, "vic", PW).researcher is None


def test_the_builder_page_refuses_a_viewer(team, sqlite_url, monkeypatch):
    """Through the page itself (AppTest): a viewer gets the refusal and no form, no upload, no Save."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    _, _, people = team
    monkeypatch.setenv("KULESHOV_DATABASE_URL", sqlite_url)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[SESSION_KEY] = people["vic"]
    at.run()
    at.switch_page("app_pages/builder.py").run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Not allowed" in errors and "viewer 'vic' may not" in errors
    assert [b.label for b in at.button] == [] or "New study" not in [b.label for b in at.button]
    assert not any(b.label.startswith("Save") for b in at.button)

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[SESSION_KEY] = people["ed"]
    at.run()
    at.switch_page("app_pages/builder.py").run()
    assert not at.exception, at.exception
    assert "New study" in [b.label for b in at.button]


def _new_study_as_editor(team, sqlite_url, monkeypatch):
    """The builder page through AppTest, logged in as the editor, after "New study"."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    _, _, people = team
    monkeypatch.setenv("KULESHOV_DATABASE_URL", sqlite_url)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state[SESSION_KEY] = people["ed"]
    at.run()
    at.switch_page("app_pages/builder.py").run()
    next(b for b in at.button if b.label == "New study").click().run()
    return at


def test_the_builder_page_as_an_editor_yaml_both_ways_and_a_bad_yaml(team, sqlite_url, monkeypatch):
    """AppTest: New study, a YAML edit re-fills the form, a YAML that does not parse is shown
    with its error, the form keeps its last good data and Save is disabled until it parses."""
    at = _new_study_as_editor(team, sqlite_url, monkeypatch)
    assert not at.exception, at.exception
    yaml_box = next(t for t in at.text_area if t.key == "b1|yaml")
    assert "title: New study" in yaml_box.value
    yaml_box.set_value(yaml_box.value.replace("title: New study", "title: From the YAML")).run()
    assert not at.exception, at.exception
    assert next(t for t in at.text_input if t.key == "b2|title").value == "From the YAML"

    save = next(b for b in at.button if b.label == "Save and register a new version")
    assert save.disabled  # consent.text is still empty
    next(t for t in at.text_area if t.key == "b2|yaml").set_value("title: [unclosed\n").run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "study.yaml line 2, column 1: YAML syntax error" in errors, errors
    assert next(t for t in at.text_input if t.key == "b2|title").value == "From the YAML"
    assert next(b for b in at.button if b.label == "Save and register a new version").disabled


def test_a_stale_yaml_sent_back_by_the_browser_is_not_taken_for_an_edit(team, sqlite_url, monkeypatch):
    """A click that interrupts the run drawing the YAML box leaves the browser holding the
    box's previous text, which it sends back with its next event. That text was the page's
    own, not the researcher's: it must not undo the change before it nor redraw the form
    (seen in Chromium under load: the form's keys moved from b1 to b2 mid-test)."""
    at = _new_study_as_editor(team, sqlite_url, monkeypatch)
    before = next(t for t in at.text_area if t.key == "b1|yaml").value
    next(t for t in at.text_input if t.key == "b1|title").set_value("Changed in the form").run()
    assert not at.exception, at.exception
    box = next(t for t in at.text_area if t.key == "b1|yaml")
    assert "title: Changed in the form" in box.value
    box.set_value(before).run()  # what a browser that missed the last redraw sends
    assert not at.exception, at.exception
    assert [t.key for t in at.text_area if t.key.endswith("|yaml")] == ["b1|yaml"]  # not redrawn
    assert next(t for t in at.text_input if t.key == "b1|title").value == "Changed in the form"
    # a real edit still re-fills the form
    box = next(t for t in at.text_area if t.key == "b1|yaml")
    box.set_value(box.value.replace("title: Changed in the form", "title: Typed")).run()
    assert next(t for t in at.text_input if t.key == "b2|title").value == "Typed"


def test_an_editor_cannot_open_or_overwrite_a_study_they_have_no_access_to(team, tmp_path):
    from app_pages import actions

    engine, _, people = team
    draft = demo_draft()
    assert store.register_study(engine, draft.study_file) == "zip-study"  # registered by the CLI; ed has no access
    before = store.list_versions(engine, "zip-study")
    with pytest.raises(UserError, match="'ed' has no access to study 'zip-study'"):
        actions.builder_open(engine, people["ed"], "zip-study")
    builder.write_study(draft, draft.study_file.read_text().replace("title: Zipped", "title: Taken over"))
    with pytest.raises(UserError, match="'ed' has no access to study 'zip-study'"):
        actions.builder_save(engine, people["ed"], str(draft.folder))
    assert store.list_versions(engine, "zip-study") == before
    # granted, the same save is a new version beside the first
    store.grant(engine, "ed", "zip-study")
    assert actions.builder_save(engine, people["ed"], str(draft.folder))[:2] == ("zip-study", "2")
