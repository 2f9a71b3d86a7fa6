"""Event POSTs written many requests per transaction (store.record_event_requests, server.GroupWriter):
each request is judged on its own, exactly as when it had its own transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from starlette.testclient import TestClient

from study import store
from study.errors import UserError

from conftest import DEMO_STUDY, enrol
from test_store import advance, count


@pytest.fixture
def demo(engine):
    return store.register_study(engine, DEMO_STUDY)


def _batch(position: int, first_seq: int, n: int = 3) -> list[dict]:
    return [{"position": position, "seq": first_seq + i, "event": "timeupdate", "media_time": float(i),
             "watched_share": 0.1 * (i + 1)} for i in range(n)]


def test_requests_in_one_transaction_are_judged_each_on_its_own(engine, demo):
    a = advance(engine, enrol(engine, demo), until_key="trial:1")
    b = advance(engine, enrol(engine, demo), until_key="trial:1")
    store.withdraw(engine, b.token)
    bad = {"position": 1, "seq": 7, "event": "no-such-event"}
    outcomes = store.record_event_requests(engine, [
        (a.token, _batch(1, 0)),
        ("no-such-token", _batch(1, 0)),
        (b.token, _batch(1, 0)),  # withdrawn: nothing more is recorded for them
        (a.token, [*_batch(1, 10, 2), bad]),
        (a.token, _batch(1, 0)),  # a resend: stored once
        (a.token, "not a list"),
    ])
    assert outcomes[0].recorded == 3 and outcomes[0].accepted == [0, 1, 2] and not outcomes[0].refused
    assert isinstance(outcomes[1], UserError) and "not valid" in str(outcomes[1])
    assert isinstance(outcomes[2], UserError) and "withdrawn" in str(outcomes[2])
    assert outcomes[3].recorded == 2 and outcomes[3].accepted == [0, 1] and list(outcomes[3].refused) == [2]
    assert outcomes[4].recorded == 0 and outcomes[4].accepted == [0, 1, 2]
    assert isinstance(outcomes[5], UserError) and "list" in str(outcomes[5])
    assert count(engine, store.playback_events, participant_id=a.participant_id) == 5
    assert count(engine, store.playback_events, participant_id=b.participant_id) == 0


def test_a_request_that_breaks_the_shared_transaction_costs_the_others_nothing(engine, demo, monkeypatch):
    from study.store import events

    a = advance(engine, enrol(engine, demo), until_key="trial:1")
    b = advance(engine, enrol(engine, demo), until_key="trial:1")
    real = events._record

    def record(conn, token, batch, now):
        if token == b.token:
            raise RuntimeError("the database refused this request")
        return real(conn, token, batch, now)

    monkeypatch.setattr(events, "_record", record)
    outcomes = store.record_event_requests(engine, [(a.token, _batch(1, 0)), (b.token, _batch(1, 0)),
                                                    (a.token, _batch(1, 3))])
    assert [o.recorded if isinstance(o, store.EventsOutcome) else type(o).__name__ for o in outcomes] == \
        [3, "RuntimeError", 3]
    # Stored once each, though the shared transaction was tried first and rolled back.
    assert count(engine, store.playback_events, participant_id=a.participant_id) == 6
    # One request alone raises, as record_event_batch always did.
    with pytest.raises(RuntimeError):
        store.record_event_requests(engine, [(b.token, _batch(1, 0))])


def test_concurrent_posts_through_the_route_each_get_their_own_answer(engine, demo):
    import server

    states = [advance(engine, enrol(engine, demo), until_key="trial:1") for _ in range(6)]
    app = server.make_app(engine, streamlit=False)
    answers: dict[int, tuple[int, dict]] = {}
    with TestClient(app) as client:
        def post(i: int) -> None:
            token = states[i % len(states)].token if i % 4 else "unknown-token"
            events = _batch(1, 100 * i, 2) + ([{"position": 99, "seq": 1, "event": "play"}] if i % 3 == 0 else [])
            resp = client.post("/api/events", json={"token": token, "events": events})
            answers[i] = (resp.status_code, resp.json())

        threads = [threading.Thread(target=post, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, (status, body) in sorted(answers.items()):
        if i % 4 == 0:
            assert status == 403 and "not valid" in body["error"], (i, status, body)
        elif i % 3 == 0:
            assert status == 400 and body["recorded"] == 2 and [r["index"] for r in body["refused"]] == [2], body
        else:
            assert status == 200 and body["recorded"] == 2 and body["accepted"] == [0, 1], body
    stored = sum(count(engine, store.playback_events, participant_id=s.participant_id) for s in states)
    assert stored == 2 * sum(1 for i in range(24) if i % 4)


def test_group_writer_takes_requests_in_token_order_and_retries_a_failed_group_once():
    """Every writer locks participants' rows in one order (by token, a participant's own requests
    in arrival order): the events and traces groups deadlocked on PostgreSQL when each took the
    same participants in arrival order. A group whose transaction fails is tried once more."""
    from server import GroupWriter

    calls: list[list] = []

    def record_many(engine, requests):
        calls.append(list(requests))
        if len(calls) == 1:
            raise RuntimeError("deadlock detected")
        return [f"stored {tok} {payload}" for tok, payload in requests]

    writer = GroupWriter(None, record_many, "test-writer")
    futures = []
    from concurrent.futures import Future

    for token, payload in (("c", [1]), ("a", [1]), ("c", [2]), ("b", [1])):  # queued before the thread runs
        futures.append(Future())
        writer._queue.put((token, payload, futures[-1]))
    last = writer.submit("a", [2])
    results = [f.result(timeout=10) for f in futures] + [last.result(timeout=10)]
    assert calls[0] == calls[1] == [("a", [1]), ("a", [2]), ("b", [1]), ("c", [1]), ("c", [2])]
    assert results == ["stored c [1]", "stored a [1]", "stored c [2]", "stored b [1]", "stored a [2]"]

    # failing twice: every request of the group gets the exception (the route answers 503)
    def always_fails(engine, requests):
        raise RuntimeError("database down")

    failing = GroupWriter(None, always_fails, "test-failing")
    with pytest.raises(RuntimeError, match="database down"):
        failing.submit("a", [1]).result(timeout=10)
