"""The server's own routes (clips and events) through Starlette's TestClient, no browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from study import store

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
DEMO_DIR = DEMO.parent


@pytest.fixture
def setup(tmp_path, sqlite_url):
    import server

    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    study_id = store.register_study(engine, DEMO)
    state = store.enrol(engine, study_id)
    app = server.make_app(engine, {study_id: DEMO_DIR}, streamlit=False)
    with TestClient(app) as client:
        yield client, engine, study_id, state
    engine.dispose()


def test_clip_full_and_range(setup):
    client, _, study_id, _ = setup
    data = (DEMO_DIR / "human_01.mp4").read_bytes()
    full = client.get(f"/clips/{study_id}/human_01")
    assert full.status_code == 200
    assert full.content == data
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    assert "max-age" in full.headers["cache-control"]
    part = client.get(f"/clips/{study_id}/human_01", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/clips/{study_id}/human_01", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    bad = client.get(f"/clips/{study_id}/human_01", headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416


def test_clip_conditional_requests(setup):
    client, _, study_id, _ = setup
    first = client.get(f"/clips/{study_id}/ai_02")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = client.get(f"/clips/{study_id}/ai_02", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag and "max-age" in again.headers["cache-control"]
    assert client.get(f"/clips/{study_id}/ai_02", headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert client.get(f"/clips/{study_id}/ai_02", headers={"If-Modified-Since": modified}).status_code == 304
    changed = client.get(f"/clips/{study_id}/ai_02", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and len(changed.content) == (DEMO_DIR / "ai_02.mp4").stat().st_size
    old = client.get(f"/clips/{study_id}/ai_02", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert old.status_code == 200
    head = client.head(f"/clips/{study_id}/ai_02")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == (DEMO_DIR / "ai_02.mp4").stat().st_size


@pytest.mark.parametrize("path", [
    "/clips/{sid}/..%2Fstudy.yaml",
    "/clips/{sid}/..%2F..%2Fstudy%2Fstore.py",
    "/clips/{sid}/manifest.csv",
    "/clips/{sid}/study.yaml",
    "/clips/{sid}/%2Fetc%2Fpasswd",
    "/clips/{sid}/human_01.mp4",  # the file name is not an id
    "/clips/{sid}/nope",
    "/clips/no-such-study/human_01",
    "/clips/..%2F..%2F/human_01",
    "/clips/{sid}/../../server.py",
])
def test_clip_unknown_or_traversal_is_404(setup, path):
    client, _, study_id, _ = setup
    resp = client.get(path.format(sid=study_id))
    assert resp.status_code == 404, resp.text
    assert b"import" not in resp.content and b"id,file" not in resp.content


def test_clip_row_pointing_outside_folder_is_404(setup):
    """Even a database row tampered to point outside the stimulus folder serves nothing."""
    client, engine, study_id, _ = setup
    with engine.begin() as conn:
        conn.execute(store.stimuli.update().where(store.stimuli.c.study_id == study_id,
                                                  store.stimuli.c.stimulus_id == "ai_01")
                     .values(file="../../server.py"))
        conn.execute(store.stimuli.update().where(store.stimuli.c.study_id == study_id,
                                                  store.stimuli.c.stimulus_id == "ai_03")
                     .values(file="manifest.csv"))
    assert client.get(f"/clips/{study_id}/ai_01").status_code == 404
    assert client.get(f"/clips/{study_id}/ai_03").status_code == 404  # not a media type


def _events(n, position=1, start=0, kind="play"):
    return [{"seq": start + i, "position": position, "stimulus_id": "x", "event": kind,
             "media_time": i * 0.5, "client_time": 1.7e12 + i, "detail": {"watched_share": 0.1 * i}}
            for i in range(n)]


def _count(engine, table, participant_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)
                            .where(table.c.participant_id == participant_id)).scalar_one()


def test_events_recorded_once(setup):
    client, engine, _, state = setup
    body = {"token": state.token, "events": _events(5)}
    first = client.post("/api/events", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 5, "recorded": 5, "accepted": [0, 1, 2, 3, 4], "refused": []}
    again = client.post("/api/events", json=body)  # a retry after a lost answer
    assert again.json() == {"received": 5, "recorded": 0, "accepted": [0, 1, 2, 3, 4], "refused": []}
    samples = [{"seq": 7, "position": 1, "event": "sample", "value": 6.5, "media_time": 1.0}]
    assert client.post("/api/events", json={"token": state.token, "events": samples}).json()["recorded"] == 1
    assert _count(engine, store.playback_events, state.participant_id) == 5
    assert _count(engine, store.continuous_samples, state.participant_id) == 1
    with engine.connect() as conn:
        share = conn.execute(sa.select(store.trials.c.watched_share).where(
            store.trials.c.participant_id == state.participant_id, store.trials.c.position == 1)).scalar_one()
    assert share == pytest.approx(0.4)


def test_events_sendbeacon_content_type(setup):
    """sendBeacon posts a Blob; whatever content type it carries, the JSON body is read."""
    client, engine, _, state = setup
    raw = json.dumps({"token": state.token, "events": _events(2, start=100)})
    resp = client.post("/api/events", content=raw, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert resp.status_code == 200 and resp.json()["recorded"] == 2


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"events": []}', "'token'"),
    (b'{"token": "x", "events": {}}', "'events' must be a list"),
    (b'{"token": "x", "events": [{"seq": "1", "event": "play"}]}', "events[0]: seq must be an integer"),
    (b'{"token": "x", "events": [{"seq": 1}]}', "events[0]: event must be"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_events_bad_body_is_400_with_message(setup, body, fragment):
    client, *_ = setup
    resp = client.post("/api/events", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]


def test_events_unknown_token_refused(setup):
    client, engine, _, state = setup
    resp = client.post("/api/events", json={"token": "not-a-token", "events": _events(1)})
    assert resp.status_code == 403
    assert "not valid" in resp.json()["error"]
    assert _count(engine, store.playback_events, state.participant_id) == 0


def test_events_bad_event_refused_alone(setup):
    """One bad event is refused with its reason; the good ones of the same batch are stored."""
    client, engine, _, state = setup
    events = _events(2) + [{"seq": 9, "position": 99, "event": "play"}]
    resp = client.post("/api/events", json={"token": state.token, "events": events})
    assert resp.status_code == 400
    answer = resp.json()
    assert answer["accepted"] == [0, 1] and answer["recorded"] == 2
    assert answer["refused"] == [{"index": 2, "seq": 9,
                                  "reason": "events[2]: position 99 is not one of this participant's clips"}]
    assert "1 of 3 events refused" in answer["error"]
    assert _count(engine, store.playback_events, state.participant_id) == 2


def test_events_after_withdrawal_refused(setup):
    client, engine, _, state = setup
    store.withdraw(engine, state.token)
    resp = client.post("/api/events", json={"token": state.token, "events": _events(1)})
    assert resp.status_code == 403
    assert _count(engine, store.playback_events, state.participant_id) == 0


def test_events_size_limits(setup):
    import server

    client, _, _, state = setup
    big = b'{"token": "' + b"x" * (server.MAX_EVENTS_BYTES + 10) + b'", "events": []}'
    assert client.post("/api/events", content=big).status_code == 413
    many = {"token": state.token, "events": _events(server.MAX_EVENTS_PER_BATCH + 1)}
    resp = client.post("/api/events", json=many)
    assert resp.status_code in (400, 413)


def test_get_not_allowed_on_events(setup):
    client, *_ = setup
    assert client.get("/api/events").status_code == 405


def test_streamlit_app_keeps_routes(sqlite_url, tmp_path):
    """The real st.App accepts the routes (no clash with Streamlit's reserved prefixes)."""
    import server

    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    app = server.make_app(engine, {}, streamlit=True)
    paths = [getattr(r, "path", None) for r in app._user_routes]
    assert "/clips/{study_id}/{stimulus_id}" in paths and "/api/events" in paths
    engine.dispose()


def test_production_refuses_to_start_without_password(monkeypatch, tmp_path):
    import server
    from study.errors import UserError

    monkeypatch.setenv("KULESHOV_MODE", "production")
    monkeypatch.delenv("KULESHOV_RESEARCHER_PASSWORD", raising=False)
    monkeypatch.setenv("KULESHOV_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(UserError, match="no researcher password"):
        server.serve("127.0.0.1", 1, None)
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


def test_server_layers():
    """server.py imports nothing from the UI package and reads the database only through study.store."""
    import ast

    tree = ast.parse((ROOT / "server.py").read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in modules if m.split(".")[0] in ("app_pages", "sqlalchemy", "analysis")}, modules
