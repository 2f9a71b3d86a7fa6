"""Hostile input to the server's own routes, on SQLite and PostgreSQL: every answer is a 4xx
with a message, never a 500, and one bad event never costs the good ones beside it.

Each test here was checked to fail with its protection removed (the depth pre-scan, the
number hooks, the NUL checks, the per-event judgement, the per-request clip check).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from study import store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"


@pytest.fixture
def route(engine):
    import server

    study_id = store.register_study(engine, DEMO)
    state = store.enrol(engine, study_id)
    app = server.make_app(engine, {study_id: DEMO.parent}, streamlit=False)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client, engine, state


def good(seq: int) -> dict:
    return {"seq": seq, "position": 1, "event": "play", "media_time": 0.5, "client_time": 1.7e12,
            "detail": {"note": "fine"}}


def stored_seqs(engine, participant_id) -> list[int]:
    t = store.playback_events.c
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(t.seq).where(t.participant_id == participant_id)).scalars())


def post_raw(client, text: str | bytes):
    body = text.encode() if isinstance(text, str) else text
    return client.post("/api/events", content=body, headers={"Content-Type": "application/json"})


def test_deeply_nested_body_is_400(route):
    client, *_ = route
    resp = post_raw(client, "[" * 100_000)
    assert resp.status_code == 400
    assert "nests 100000 levels deep" in resp.json()["error"]
    # brackets inside strings are text, not nesting
    assert post_raw(client, json.dumps({"token": "t", "events": [], "x": "[" * 1000})).status_code == 403


BAD_VALUES = [
    ("1" + "0" * 5000, "holds a number of 5001 digits"),
    ("NaN", "holds NaN, which is not a number"),
    ("Infinity", "holds Infinity, which is not a number"),
    ("-Infinity", "holds -Infinity, which is not a number"),
    ("1e999", "holds a number out of range (1e999)"),
    ('"a\\u0000b"', "holds a NUL character"),
    ('{"k\\u0000": 1}', "holds a NUL character"),
    ('"\\ud800"', "holds an unpaired surrogate"),
    ("[[[[[[[[[[1]]]]]]]]]]", "is nested deeper than 8 levels"),
]
CASES = ([("detail_value", *v) for v in BAD_VALUES] + [("media_time", *v) for v in BAD_VALUES]
         + [("seq", *v) for v in BAD_VALUES[:5]])  # a string seq is covered in test_server


@pytest.mark.parametrize("field, bad_value, reason", CASES)
def test_bad_value_refuses_only_its_event(route, field, bad_value, reason):
    client, engine, state = route
    bad = {"seq": 2, "position": 1, "event": "pause"}
    text = json.dumps(bad)
    if field == "detail_value":
        text = text[:-1] + ', "detail": {"x": ' + bad_value + "}}"
    elif field == "media_time":
        text = text[:-1] + ', "media_time": ' + bad_value + "}"
    else:
        text = text.replace('"seq": 2', '"seq": ' + bad_value)
    body = '{"token": "%s", "events": [%s, %s, %s]}' % (state.token, json.dumps(good(1)), text,
                                                      json.dumps(good(3)))
    resp = post_raw(client, body)
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["accepted"] == [0, 2] and answer["recorded"] == 2
    assert [r["index"] for r in answer["refused"]] == [1]
    assert reason in answer["refused"][0]["reason"]
    assert stored_seqs(engine, state.participant_id) == [1, 3]
    # the player resends nothing refused, but a resend of the whole batch is harmless too
    again = post_raw(client, body).json()
    assert again["recorded"] == 0 and again["accepted"] == [0, 2]
    assert stored_seqs(engine, state.participant_id) == [1, 3]


@pytest.mark.parametrize("token_json", ['"abc\\u0000def"', '"abc\\udfff"', "NaN", "1" + "0" * 5000])
def test_bad_token_is_400(route, token_json):
    client, engine, state = route
    resp = post_raw(client, '{"token": %s, "events": [%s]}' % (token_json, json.dumps(good(1))))
    assert resp.status_code == 400
    assert "'token'" in resp.json()["error"]
    assert stored_seqs(engine, state.participant_id) == []


def test_raw_nul_and_control_bytes_are_400(route):
    client, _, state = route
    resp = post_raw(client, b'{"token": "' + state.token.encode() + b'\x00", "events": []}')
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]


def test_store_refuses_values_postgres_cannot_hold(engine):
    """Callers other than the route (the participant page, the simulator) get the same checks."""
    study_id = store.register_study(engine, DEMO)
    state = store.enrol(engine, study_id)
    outcome = store.record_event_batch(engine, state.token, [
        good(1),
        {**good(2), "detail": {"x": float("nan")}},
        {**good(3), "detail": {"x": "nul\x00"}},
        {**good(4), "media_time": float("inf")},
        {**good(5), "detail": {"x": object()}},
        {**good(6), "detail": {"x": 10**40}},
        {**good(7), "stimulus_id": "\ud800"},
    ])
    assert outcome.accepted == [0] and outcome.recorded == 1
    assert outcome.refused == {1: "holds NaN or Infinity", 2: "holds a NUL character",
                               3: "holds NaN or Infinity", 4: "holds a object, which is not JSON",
                               5: "holds an integer too large to store",
                               6: "holds an unpaired surrogate (not valid Unicode)"}
    assert stored_seqs(engine, state.participant_id) == [1]
    with pytest.raises(store.UserError, match="not valid"):
        store.record_event_batch(engine, "tok\x00en", [good(7)])


# --------------------------------------------------------------------------- clips


def test_clip_swapped_for_symlink_outside_is_refused(engine, tmp_path):
    """A clip replaced by a link to a file outside the folder is refused on the very next
    request, although the same clip was just served (no cached resolution)."""
    import shutil

    import server

    folder = tmp_path / "study"
    shutil.copytree(DEMO.parent, folder)
    study_id = store.register_study(engine, folder / "study.yaml")
    with engine.connect() as conn:
        name = conn.execute(sa.select(store.stimuli.c.file).where(
            store.stimuli.c.study_id == study_id, store.stimuli.c.stimulus_id == "ai_01")).scalar_one()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"SECRET-OUTSIDE-THE-FOLDER")
    app = server.make_app(engine, {study_id: folder}, streamlit=False)
    with TestClient(app) as client:
        first = client.get(f"/clips/{study_id}/ai_01")
        assert first.status_code == 200 and len(first.content) > 1000
        clip = folder / name
        clip.unlink()
        os.symlink(secret, clip)
        swapped = client.get(f"/clips/{study_id}/ai_01")
        assert swapped.status_code == 404
        assert b"SECRET" not in swapped.content
        ranged = client.get(f"/clips/{study_id}/ai_01", headers={"Range": "bytes=0-5"})
        assert ranged.status_code == 404
        # a link that stays inside the folder is still a clip
        clip.unlink()
        os.symlink(folder / "ai_02.mp4", clip)
        assert client.get(f"/clips/{study_id}/ai_01").status_code == 200


# --------------------------------------------------------------------------- a running server


def _failed_login_addresses(server, forged: list[str]) -> list[str]:
    """Fail one login per forged X-Forwarded-For value; the addresses the audit log recorded."""
    from playwright.sync_api import sync_playwright

    from browser_util import launch

    with sync_playwright() as pw:
        browser = launch(pw)
        for address in forged:
            context = browser.new_context(extra_http_headers={"X-Forwarded-For": address})
            page = context.new_page()
            page.goto(server.url + "/researcher")
            page.locator('input[type="password"]').wait_for(timeout=30_000)
            page.locator('input[type="password"]').fill("wrong")
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Wrong password.").first.wait_for(timeout=30_000)
            context.close()
        browser.close()
    engine = sa.create_engine(server.db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.audit_log.c.detail).where(
            store.audit_log.c.action == "login_failed").order_by(store.audit_log.c.id)).scalars().all()
    engine.dispose()
    return [row["address"] for row in rows]


@pytest.mark.browser
@pytest.mark.slow
def test_forwarded_for_believed_only_from_named_proxies(tmp_path, sqlite_url):
    """From an unnamed peer a forged X-Forwarded-For is ignored: every attempt counts against
    the peer's own address (loopback shows as 'unknown'), so no fresh budget per header value.
    Named as a proxy, the same peer's header is believed (the control: the header does arrive).
    The metrics endpoint of the same running server answers 404."""
    import urllib.error
    import urllib.request

    sys.path.insert(0, str(ROOT / "tests"))
    from browser_util import require_chromium, start_server

    require_chromium()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = start_server(sqlite_url, tmp_path / "a", DEMO)
    try:
        with pytest.raises(urllib.error.HTTPError) as closed:
            urllib.request.urlopen(server.url + "/_stcore/metrics", timeout=10)
        assert closed.value.code == 404
        with urllib.request.urlopen(server.url + "/_stcore/health", timeout=10) as health:
            assert health.status == 200
        assert _failed_login_addresses(server, ["203.0.113.7", "198.51.100.9"]) == ["unknown", "unknown"]
    finally:
        server.stop()

    trusting = start_server(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "b", DEMO,
                            extra_env={"KULESHOV_TRUSTED_PROXIES": "127.0.0.1, ::1"})
    try:
        assert _failed_login_addresses(trusting, ["203.0.113.7"]) == ["203.0.113.7"]
    finally:
        trusting.stop()


def test_trusted_proxies_setting(monkeypatch):
    import server
    from study.config import trusted_proxies
    from study.errors import UserError

    monkeypatch.delenv("KULESHOV_TRUSTED_PROXIES", raising=False)
    assert server.proxy_options() == {"proxy_headers": False, "forwarded_allow_ips": []}
    monkeypatch.setenv("KULESHOV_TRUSTED_PROXIES", " 10.0.0.0/8, 127.0.0.1 ")
    assert server.proxy_options() == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.0/8", "127.0.0.1"]}
    monkeypatch.setenv("KULESHOV_TRUSTED_PROXIES", "10.0.0.0/8, nginx")
    with pytest.raises(UserError, match="'nginx' is not an IP address or CIDR range"):
        trusted_proxies()


def test_framework_endpoints_closed_in_the_app():
    import server

    closed = ["/_stcore/metrics", "/_stcore/metrics/", "/base/_stcore/metrics", "/_stcore/agent/mcp",
              "/_stcore/agent/openapi.json"]
    assert all(server._closed(path) for path in closed)
    assert not any(server._closed(path) for path in ["/_stcore/health", "/_stcore/stream", "/clips/a/b", "/"])
