"""Continuous rating and moment marks without a browser: the study file's settings, the ingest of
trace batches (store and HTTP route, SQLite and PostgreSQL), the loaders, the bots and the export.

The browser side (sampling in video time, mouse, keyboard, marks) is tested in Chromium by
tests/test_browser_continuous.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from starlette.testclient import TestClient

from analysis import load
from study import capture, store
from study.errors import UserError
from study.protocol import load_study, validate_study_file

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
MARKS = {"prompts": [{"id": "moved", "label": "This moved me", "key": "m"},
                     {"id": "impossible", "label": "Something looks impossible", "key": "i"}]}


def capture_study(folder: Path, mode: str | None = "1d", marks: dict | None = None, **playback) -> Path:
    """The demo study with a continuous rating (`mode`) and/or marks, written into `folder`."""
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["stimuli"]["manifest"] = str(DEMO.parent / "manifest.csv")
    if mode is not None:
        raw["playback"]["continuous_rating"] = {"mode": mode, "item": "How do you feel right now?"}
    if marks is not None:
        raw["playback"]["marks"] = marks
    raw["playback"].update(playback)
    path = folder / f"study_{mode}_{'marks' if marks else 'none'}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def batch(**over) -> dict:
    base = {"position": 1, "attempt": 7, "seq": 0, "mode": "1d", "final": False, "t": [0.1, 0.2, 0.3],
            "x": [5.0, 5.5, 6.0], "marks": [], "start_x": 5.0, "first_move_t": 0.15, "client_time": 1.7e12}
    return {**base, **over}


def rows(engine, participant_id=None) -> int:
    tb = store.trace_batches
    q = sa.select(sa.func.count()).select_from(tb)
    if participant_id is not None:
        q = q.where(tb.c.participant_id == participant_id)
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


@pytest.fixture
def one_d(engine, tmp_path):
    study_id = store.register_study(engine, capture_study(tmp_path, "1d", MARKS))
    return engine, study_id, store.enrol(engine, study_id)


# --------------------------------------------------------------------------- the study file


def test_settings_reach_the_player_with_catalogue_words(tmp_path):
    study = load_study(capture_study(tmp_path, "2d", MARKS))
    cr = study.playback.continuous_rating
    assert (cr.mode, cr.rate_hz, cr.orientation, cr.arousal_min_label) == ("2d", 10, "horizontal", "calm")
    config = capture.player_config(study)
    assert config["mode"] == "2d" and config["traces_url"] == "/api/traces"
    assert [p["key"] for p in config["prompts"]] == ["m", "i"]
    assert config["prompts"][0]["text"] == "This moved me (key M)"
    assert "{v}" in config["texts"]["grid_value"] and "Pleasantness" in config["texts"]["grid_value"]
    notes = capture.practice_notes(study)
    assert len(notes) == 3 and notes[0].startswith("**Practice clip.**")
    assert capture.player_config(load_study(DEMO)) is None and capture.practice_notes(load_study(DEMO)) == []
    marks_only = load_study(capture_study(tmp_path, None, MARKS))
    assert capture.mode(marks_only) == "marks" and "slider_hint" not in capture.player_config(marks_only)["texts"]


@pytest.mark.parametrize("playback, where, message", [
    ({"continuous_rating": {"item": "x", "mode": "3d"}}, "playback.continuous_rating.mode", "'1d' or '2d'"),
    ({"continuous_rating": {"item": "x", "mode": "2d", "arousal_min": 5, "arousal_max": 1}},
     "playback.continuous_rating", "arousal_min (5) must be smaller than arousal_max (1)"),
    ({"continuous_rating": {"item": "x", "start": 12}}, "playback.continuous_rating", "start (12) must lie between"),
    ({"continuous_rating": {"item": "x", "rate_hz": 500}}, "playback.continuous_rating.rate_hz", "60"),
    ({"marks": {"prompts": []}}, "playback.marks.prompts", "at least 1"),
    ({"marks": {"prompts": [{"id": "a", "label": "A", "key": "m"}, {"id": "b", "label": "B", "key": "M"}]}},
     "playback.marks", "prompt keys must be distinct"),
    ({"marks": {"prompts": [{"id": "a", "label": "A", "key": "ArrowUp"}]}}, "playback.marks.prompts[0].key",
     "key 'ArrowUp' must be one letter or digit"),
    ({"marks": {"prompts": [{"id": "a", "label": "A", "key": " "}]}}, "playback.marks.prompts[0].key", "one letter or digit"),
])
def test_bad_capture_settings_say_what_and_where(tmp_path, playback, where, message):
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["stimuli"]["manifest"] = str(DEMO.parent / "manifest.csv")
    raw["playback"].update(playback)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    problems = [p for p in validate_study_file(path) if p.severity == "error"]
    assert any(where in p.where and message in p.message for p in problems), problems


def test_capture_without_a_practice_clip_is_warned_about(tmp_path):
    raw = yaml.safe_load(capture_study(tmp_path, "1d").read_text(encoding="utf-8"))
    raw["stimuli"]["practice"] = None
    path = tmp_path / "nopractice.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    warnings = [p for p in validate_study_file(path) if p.severity == "warning"]
    assert any(p.where.endswith("stimuli.practice") and "learn the control on the first real clip" in p.message
               for p in warnings), warnings


# --------------------------------------------------------------------------- ingest (store)


def test_a_batch_sent_twice_is_stored_once(one_d):
    engine, study_id, state = one_d
    first = store.record_trace_batch(engine, state.token, [batch(), batch()])
    again = store.record_trace_batch(engine, state.token, [batch()])
    assert (first.recorded, first.accepted, first.refused) == (1, [0, 1], {})
    assert (again.recorded, again.accepted) == (0, [0])  # accepted (already stored), nothing new
    assert rows(engine) == 1
    traces = load.load_traces(engine, study_id)
    assert traces["video_time"].tolist() == [0.1, 0.2, 0.3] and traces["value"].tolist() == [5.0, 5.5, 6.0]


@pytest.mark.parametrize("bad, reason", [
    ({"position": 99}, "position 99 is not one of this participant's clips"),
    ({"position": True}, "position True is not one of this participant's clips"),
    ({"attempt": -1}, "attempt must be a whole number"),
    ({"seq": 2.5}, "seq must be a whole number"),
    ({"mode": "2d"}, "mode is '2d', but this study records '1d'"),
    ({"t": [0.1, 0.3, 0.2]}, "t[2] is 0.2 s, not after t[1] (0.3 s): video times in a batch must increase"),
    ({"t": [0.1, 0.1, 0.2]}, "t[1] is 0.1 s, not after t[0]"),
    ({"t": [0.1, 0.2, 600.0]}, "t[2] is 600 s, outside the clip (0 to 9 s)"),
    ({"t": [-1, 0.2, 0.3]}, "t[0] is -1 s, outside the clip"),
    ({"t": [0.1, float("nan"), 0.3]}, "t[1] is nan, not a number"),
    ({"x": [5.0, 5.5, float("inf")]}, "x[2] is inf, not a number"),
    ({"x": [5.0, 5.5, 60.0]}, "x[2] is 60, outside the scale (1 to 9)"),
    ({"x": [5.0, "high", 6.0]}, "x[1] is 'high', not a number"),
    ({"x": [5.0, 5.5]}, "x holds 2 values but t holds 3"),
    ({"y": [1, 2, 3]}, "y is only sent by a 2d grid"),
    ({"t": [i / 10 for i in range(1201)], "x": [5.0] * 1201}, "t holds 1201 values; at most 1200 per batch"),
    ({"marks": [[0.2, "nonsense"]]}, "marks[0] names prompt 'nonsense'"),
    ({"marks": [[99.0, "moved"]]}, "marks[0] is at 99 s, outside the clip"),
    ({"marks": [[0.2]]}, "marks[0] must be a pair"),
    ({"start_x": 0.0}, "start_x is 0, outside 1 to 9"),
    ({"final": "yes"}, "final must be true or false"),
])
def test_hostile_batches_are_refused_one_by_one_with_the_reason(one_d, bad, reason):
    engine, _, state = one_d
    outcome = store.record_trace_batch(engine, state.token, [batch(**bad), batch(seq=1)])
    assert outcome.accepted == [1] and reason in outcome.refused[0], outcome.refused
    assert rows(engine) == 1  # the good batch beside it is stored


def test_a_study_without_capture_refuses_batches(engine):
    study_id = store.register_study(engine, DEMO)
    state = store.enrol(engine, study_id)
    outcome = store.record_trace_batch(engine, state.token, [batch()])
    assert outcome.refused == {0: "this study records no continuous rating and no marks"}


def test_unknown_or_withdrawn_participants_cannot_send(one_d):
    engine, _, state = one_d
    with pytest.raises(UserError, match="not valid"):
        store.record_trace_batch(engine, "no-such-token", [batch()])
    store.withdraw(engine, state.token)
    with pytest.raises(UserError, match="No more data are recorded"):
        store.record_trace_batch(engine, state.token, [batch()])
    assert rows(engine) == 0


def test_requests_written_together_are_judged_each_on_its_own(one_d):
    engine, study_id, state = one_d
    other = store.enrol(engine, study_id)
    store.withdraw(engine, other.token)
    outcomes = store.record_trace_requests(engine, [
        (state.token, [batch()]), ("forged", [batch()]), (other.token, [batch()]),
        (state.token, [batch(seq=1, x=[1, 2, 99]), batch(seq=2)]), (state.token, "not a list")])
    assert isinstance(outcomes[0], store.TracesOutcome) and outcomes[0].recorded == 1
    assert [str(o) for o in outcomes[1:3]] == ["This study link is not valid.",
                                             "No more data are recorded for this participant (status withdrawn)."]
    assert outcomes[3].accepted == [1] and "x[2] is 99" in outcomes[3].refused[0]
    assert str(outcomes[4]) == "Batches must be sent as a list."
    assert rows(engine) == 2 and rows(engine, other.participant_id) == 0


# --------------------------------------------------------------------------- ingest (HTTP route)


@pytest.fixture
def client(one_d):
    import server

    engine, study_id, state = one_d
    with TestClient(server.make_app(engine, streamlit=False)) as c:
        yield c, engine, study_id, state


def _post(c, body, raw: bytes | None = None):
    return c.post("/api/traces", content=raw if raw is not None else json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})


def test_route_stores_resent_batches_once_and_says_which_were_taken(client):
    c, engine, _, state = client
    body = {"token": state.token, "batches": [batch(), batch(seq=1, t=[0.4], x=[7.0])]}
    first, second = _post(c, body), _post(c, body)
    assert first.status_code == second.status_code == 200
    assert first.json() == {"received": 2, "recorded": 2, "accepted": [0, 1], "refused": []}
    assert second.json()["recorded"] == 0 and second.json()["accepted"] == [0, 1]
    assert rows(engine) == 2


def test_route_refuses_hostile_requests_with_a_clear_4xx(client):
    import server

    c, engine, _, state = client
    other = store.enrol(engine, store.list_studies(engine)[0]["id"])
    nan = f'{{"token": "{state.token}", "batches": [{{"position": 1, "attempt": 1, "seq": 0, "mode": "1d", ' \
          f'"t": [0.1, NaN], "x": [5, 5]}}]}}'.encode()
    got = _post(c, None, raw=nan)
    assert got.status_code == 400 and "t[1] holds NaN, which is not a number" in got.json()["error"]
    cases = [
        (_post(c, {"token": "forged", "batches": [batch()]}), 403, "This study link is not valid."),
        (_post(c, None, raw=b"{not json"), 400, "the body is not valid JSON"),
        (_post(c, {"token": state.token, "batches": "all"}), 400, "'batches' must be a list"),
        (_post(c, {"token": state.token, "batches": [batch(seq=i) for i in range(51)]}), 400,
         "at most 50 batches per request, got 51"),
        (_post(c, None, raw=b" " * (server.MAX_TRACES_BYTES + 1)), 413, "request larger than"),
        (_post(c, {"token": state.token, "batches": [batch(x=[1, 2, 300])]}), 400,
         "batches[0]: x[2] is 300, outside the scale (1 to 9)"),
        (_post(c, {"token": state.token, "batches": [batch(t=[3.0, 2.0, 1.0])]}), 400, "video times in a batch must increase"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["error"], response.text
    # Another participant's token cannot write into this participant's trace: it is theirs.
    _post(c, {"token": other.token, "batches": [batch()]})
    with engine.connect() as conn:
        owners = set(conn.execute(sa.select(store.trace_batches.c.participant_id)).scalars())
    assert owners == {other.participant_id}


# --------------------------------------------------------------------------- loaders


def test_a_reload_keeps_the_partial_trace_and_marks_it(one_d):
    engine, study_id, state = one_d
    interrupted = [batch(attempt=11, t=[0.1, 0.2], x=[5.0, 6.0], marks=[[0.15, "moved"]], first_move_t=None)]
    restarted = [batch(attempt=3, seq=0, t=[0.1, 0.2], x=[5.0, 4.0], marks=[[0.18, "moved"]], first_move_t=0.12),
                 batch(attempt=3, seq=1, t=[0.5, 8.0], x=[3.0, 2.0], final=True, marks=[[7.5, "impossible"]])]
    store.record_traces(engine, state.token, interrupted)
    store.record_traces(engine, state.token, restarted)
    traces = load.load_traces(engine, study_id)
    assert list(traces.columns) == load.TRACE_COLUMNS
    assert traces["partial"].tolist() == [True, True, False, False, False, False]
    assert traces.loc[~traces["partial"], "video_time"].tolist() == [0.1, 0.2, 0.5, 8.0]
    assert set(traces["dimension"]) == {"rating"} and traces["clip_duration"].iloc[0] == 8.0
    assert traces["clip"].iloc[0] == state.sequence[0]
    marks = load.load_marks(engine, study_id)
    assert list(marks.columns) == load.MARK_COLUMNS
    assert marks[["mark", "video_time"]].values.tolist() == [["moved", 0.18], ["impossible", 7.5]]
    assert len(load.load_marks(engine, study_id, include_partial=True)) == 3
    attempts = load.load_trace_attempts(engine, study_id)
    assert attempts[["attempt", "partial", "n_samples", "n_marks", "moved"]].values.tolist() == [
        [1, True, 2, 1, False], [2, False, 4, 2, True]]
    assert attempts["first_move_time"].iloc[1] == 0.12 and attempts["start_value"].iloc[1] == 5.0


def test_2d_samples_become_valence_and_arousal_rows(engine, tmp_path):
    study_id = store.register_study(engine, capture_study(tmp_path, "2d"))
    state = store.enrol(engine, study_id)
    store.record_traces(engine, state.token, [batch(mode="2d", t=[0.5, 1.0], x=[2.0, 3.0], y=[8.0, 9.0],
                                                    start_y=5.0, final=True)])
    traces = load.load_traces(engine, study_id)
    by = traces.pivot(index="video_time", columns="dimension", values="value")
    assert by.to_dict("list") == {"arousal": [8.0, 9.0], "valence": [2.0, 3.0]}
    refused = store.record_trace_batch(engine, state.token, [batch(mode="2d", seq=5, t=[0.5], x=[2.0], y=[0.0])])
    assert "y[0] is 0, outside the scale (1 to 9)" in refused.refused[0]


# --------------------------------------------------------------------------- bots and export


def test_bots_leave_traces_with_their_known_peak_effect_and_marks(sqlite_url, tmp_path):
    from study import simulate

    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    path = capture_study(tmp_path, "1d", MARKS)
    simulate.simulate(engine, path, 24, effect=2.0, seed=3, agreement=0.8)
    study_id = load_study(path).id
    traces = load.load_traces(engine, study_id)
    full = traces[~traces["partial"]]
    assert len(full) > 1000 and full["value"].between(1, 9).all()
    seed = load_study(path).design.seed
    # The mean curve of a clip peaks where the clip's known curve does.
    clip = full["clip"].iloc[0]
    curve = full[full["clip"] == clip].assign(t=lambda d: d["video_time"].round(1)).groupby("t")["value"].mean()
    truth = simulate.trace_truth(seed, clip, "rating", 8.0)
    assert abs(curve.idxmax() - truth.peak_time) < 1.0, (curve.idxmax(), truth.peak_time)
    # The planted effect: human clips rated higher by about `effect` scale points.
    by_source = full[full["video_time"] > 2].groupby("source")["value"].mean()
    assert 1.0 < by_source["human"] - by_source["ai"] < 3.0, by_source
    marks = load.load_marks(engine, study_id)
    moment = simulate.mark_truth(seed, clip, "moved", 8.0)
    near = marks[(marks["clip"] == clip) & (marks["mark"] == "moved")]["video_time"]
    assert ((near - moment).between(0, 1.2)).mean() > 0.6, (near.tolist(), moment)
    engine.dispose()


def test_export_writes_traces_and_marks_in_long_format_with_codebook_rows(sqlite_url, tmp_path):
    from analysis import export
    from study import simulate

    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    path = capture_study(tmp_path, "2d", MARKS)
    simulate.simulate(engine, path, 3, seed=5)
    study_id = load_study(path).id
    folder = export.export_dataset(engine, study_id, tmp_path / "out", payments=False)
    traces = pd.read_csv(folder / "traces.csv")
    marks = pd.read_csv(folder / "marks.csv")
    assert list(traces.columns) == load.TRACE_COLUMNS and list(marks.columns) == load.MARK_COLUMNS
    assert len(traces) == len(load.load_traces(engine, study_id)) > 0
    assert set(traces["dimension"]) == {"valence", "arousal"}
    codebook = pd.read_csv(folder / "codebook.csv")
    documented = set(zip(codebook["file"], codebook["name"]))
    for name, columns in (("traces", load.TRACE_COLUMNS), ("marks", load.MARK_COLUMNS),
                          ("trace_attempts", load.TRACE_ATTEMPT_COLUMNS)):
        assert {(name, c) for c in columns} <= documented
    assert "clip's own playback time" in codebook.set_index(["file", "name"]).loc[("traces", "video_time"), "description"]
    engine.dispose()


def test_any_json_batch_gets_a_row_or_a_reason_never_an_exception():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from study.store.traces import CaptureSpec, judge_batch

    spec = CaptureSpec("2d", (1.0, 9.0), (1.0, 9.0), frozenset({"moved"}))
    planned, durations = {0: "practice", 1: "c1"}, {"practice": 5.0, "c1": None}
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                       st.text(max_size=5))
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=3), inner, max_size=3), max_leaves=12)
    keys = st.sampled_from(["position", "attempt", "seq", "mode", "final", "t", "x", "y", "marks", "start_x",
                            "start_y", "first_move_t", "client_time"])
    good = {"position": 1, "attempt": 1, "seq": 0, "mode": "2d", "t": [0.1], "x": [2.0], "y": [3.0]}

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(keys, value, max_size=8), st.booleans())
    def check(over, from_good):
        b = {**good, **over} if from_good else over
        row, why = judge_batch(b, spec, planned, durations)
        assert (row is None) != (why is None)
        if row is not None:
            assert len(row["t"]) == len(row["x"]) == len(row["y"])
            assert all(1.0 <= v <= 9.0 for v in row["x"] + row["y"])
            assert row["t"] == sorted(set(row["t"]))

    check()


def test_the_continuous_demo_study_runs_end_to_end(sqlite_url):
    from study import simulate

    path = ROOT / "stimuli" / "demo" / "study_continuous.yaml"
    assert not [p for p in validate_study_file(path) if p.severity == "error"]
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    simulate.simulate(engine, path, 4, effect=1.0)
    traces = load.load_traces(engine, "kuleshov-demo-continuous")
    marks = load.load_marks(engine, "kuleshov-demo-continuous")
    assert set(traces["dimension"]) == {"rating"} and traces["trial"].min() == 1
    assert set(marks["mark"]) <= {"moved", "impossible"} and len(marks) > 0
    engine.dispose()
