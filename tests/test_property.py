"""Property-based tests (hypothesis): arbitrary study files, manifests and event batches get
messages or a 4xx, never a traceback or a 500.

The inputs are the demo study and manifest with parts replaced by arbitrary values, plus
arbitrary text, so that most examples get past the first syntax check and reach the
validators behind it. The route runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from study import store
from study.errors import Problem, UserError
from study.protocol import load_study, validate_study_file
from study.stimuli import load_manifest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
DEMO_YAML = DEMO.read_text()
DEMO_DATA = yaml.safe_load(DEMO_YAML)
DEMO_MANIFEST = (DEMO.parent / "manifest.csv").read_text()

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values a hostile or careless file may hold: the awkward numbers, text with control
# characters, path tricks, and nesting.
awkward_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "..", "../../etc/passwd", "/etc/passwd", "C:\\x.mp4", "\x00", "a\x00b",
                     "=HYPERLINK(\"http://x\",\"y\")", "NaN", "1e999", "\u202e", "\ufeff", "-", "null",
                     "http://example.com/a.mp4", "https://example.com/a.mp4", "sam", "attribution"]),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**40, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), awkward_text,
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(awkward_text, inner, max_size=4)), max_leaves=12)


def _paths(data, prefix=()):
    """Every key path of a nested mapping/list, to pick one to replace."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, prefix + (i,))


DEMO_PATHS = [p for p in _paths(DEMO_DATA) if p]


def _replaced(data, path, value):
    import copy

    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


# YAML spellings that the dumper above never writes.
yaml_literals = st.one_of(
    st.integers(1, 6000).map(lambda n: "9" * n), st.integers(1, 5000).map(lambda n: "[" * n),
    st.sampled_from([".nan", ".inf", "-.inf", "2026-13-45", "!!binary aGVsbG8=", "!!set {a, b}", "&a [*a]",
                     "!!python/object/apply:os.system [echo]", "*undefined", "{a: 1, a: 2}", "0x1F", "0o17",
                     "1_000", "~", "'", '"\\x00"', "!!timestamp 2026-01-01"]),
)
SETTING_LINES = [line for line in DEMO_YAML.splitlines() if ": " in line and not line.lstrip().startswith("#")]


@st.composite
def study_texts(draw):
    kind = draw(st.sampled_from(["replace", "replace2", "splice", "literal", "text"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "literal":
        line = draw(st.sampled_from(SETTING_LINES))
        key = line.split(": ", 1)[0]
        return DEMO_YAML.replace(line, f"{key}: {draw(yaml_literals)}", 1)
    if kind == "splice":
        at = draw(st.integers(0, len(DEMO_YAML)))
        return DEMO_YAML[:at] + draw(st.text(max_size=40)) + DEMO_YAML[at + draw(st.integers(0, 40)):]
    data = DEMO_DATA
    for _ in range(1 if kind == "replace" else 2):
        paths = [p for p in _paths(data) if p]
        data = _replaced(data, draw(st.sampled_from(paths)), draw(values))
    # allow_unicode keeps control characters as they are, so the loader meets them
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def manifest_texts(draw):
    kind = draw(st.sampled_from(["cells", "cells", "splice", "text"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "splice":
        at = draw(st.integers(0, len(DEMO_MANIFEST)))
        return DEMO_MANIFEST[:at] + draw(st.text(max_size=40)) + DEMO_MANIFEST[at + draw(st.integers(0, 40)):]
    rows = list(csv.reader(io.StringIO(DEMO_MANIFEST)))
    for _ in range(draw(st.integers(1, 4))):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(awkward_text)
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@pytest.fixture
def demo_copy(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(DEMO.parent, folder)
    return folder


def _only_problems(problems) -> None:
    assert isinstance(problems, list)
    assert all(isinstance(p, Problem) and p.where and p.message for p in problems), problems


def test_arbitrary_study_files_give_messages(demo_copy):
    study_file = demo_copy / "study.yaml"

    @SETTINGS
    @given(study_texts())
    def check(text):
        study_file.write_text(text, encoding="utf-8", errors="surrogatepass")
        _only_problems(validate_study_file(study_file))
        try:
            load_study(study_file)
        except UserError as exc:
            assert str(exc)

    check()


def test_arbitrary_manifests_give_messages(demo_copy):
    manifest = demo_copy / "manifest.csv"

    @SETTINGS
    @given(manifest_texts())
    def check(text):
        manifest.write_text(text, encoding="utf-8", errors="surrogatepass")
        stimuli, problems = load_manifest(manifest)
        _only_problems(problems)
        _only_problems(validate_study_file(demo_copy / "study.yaml"))

    check()


# --------------------------------------------------------------------------- the events route

event_kinds = st.one_of(st.sampled_from(sorted(store.EVENT_TYPES) + ["sample"]), awkward_text)
wild_event = st.fixed_dictionaries(
    {"seq": st.one_of(st.integers(0, 10**6), st.integers(), scalars), "position": st.one_of(st.integers(-1, 9), scalars),
     "event": event_kinds},
    optional={"media_time": scalars, "client_time": scalars, "value": scalars, "watched_share": scalars,
              "detail": values, "stimulus_id": awkward_text},
)
# A valid event with one field replaced: most examples then reach the database write.
valid_event = st.builds(
    lambda seq, kind, position, detail: {"seq": seq, "position": position, "event": kind, "media_time": 1.0,
                                         "value": 0.5, "detail": detail},
    st.integers(0, 10**6), st.sampled_from(["play", "pause", "sample", "timeupdate"]), st.integers(1, 6),
    st.dictionaries(awkward_text, values, max_size=3),
)
FIELDS = ["seq", "position", "event", "media_time", "client_time", "value", "watched_share", "detail"]
one_bad_field = st.builds(lambda ev, field, value: {**ev, field: value},
                          valid_event, st.sampled_from(FIELDS), values)
# JSON texts Python's encoder never writes: deep nesting, NaN/Infinity spellings, huge numbers.
hostile_json = st.one_of(
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n), st.integers(1, 5000).map(lambda n: "[" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"\\u0000"', '{"\\u0000": 1}',
                     "1" + "0" * 5000, "0." + "0" * 5000 + "1", '"\\ud800"']),
)


@st.composite
def event_bodies(draw, token: str):
    kind = draw(st.sampled_from(["events", "events", "spliced", "spliced", "payload", "raw"]))
    if kind == "raw":
        return draw(st.one_of(st.binary(max_size=200), hostile_json.map(str.encode),
                              st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
    if kind == "payload":
        return json.dumps(draw(values), allow_nan=True).encode()
    events = draw(st.lists(st.one_of(valid_event, one_bad_field, wild_event, values), max_size=8))
    token_value = draw(st.one_of(st.just(token), st.just(token), awkward_text, scalars))
    if kind == "events":
        return json.dumps({"token": token_value, "events": events}, allow_nan=True).encode()
    # a hostile JSON text in place of one field of a valid event, beside valid events
    hostile = draw(hostile_json)
    field = draw(st.sampled_from(FIELDS + ["token"]))
    marker = "__HOSTILE__"
    target = draw(valid_event)
    if field == "token":
        token_value = marker
    else:
        target[field] = marker
    text = json.dumps({"token": token_value, "events": events + [target]}, allow_nan=True)
    return text.replace(json.dumps(marker), hostile).encode()


def test_arbitrary_event_batches_never_500(engine):
    import server

    study_id = store.register_study(engine, DEMO)
    state = store.enrol(engine, study_id)
    app = server.make_app(engine, {study_id: DEMO.parent}, streamlit=False)
    recorded = 0
    with TestClient(app, raise_server_exceptions=True) as client:

        @SETTINGS
        @given(event_bodies(state.token))
        def check(body):
            nonlocal recorded
            resp = client.post("/api/events", content=body, headers={"Content-Type": "application/json"})
            assert resp.status_code in (200, 400, 403, 413), (resp.status_code, resp.text)
            answer = resp.json()
            if resp.status_code != 200:
                assert answer["error"]
            if "accepted" in answer:
                judged = sorted(answer["accepted"] + [r["index"] for r in answer["refused"]])
                assert judged == list(range(answer["received"]))
                assert (resp.status_code == 200) == (not answer["refused"])
                recorded += answer["recorded"]

        check()
    t = store.playback_events.c
    s = store.continuous_samples.c
    with engine.connect() as conn:
        stored = (conn.execute(sa.select(sa.func.count()).where(t.participant_id == state.participant_id)).scalar_one()
                  + conn.execute(sa.select(sa.func.count()).where(s.participant_id == state.participant_id)).scalar_one())
    assert stored == recorded  # every event the route counted as new is in the database, once
