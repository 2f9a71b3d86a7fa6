"""The researcher's preview (app_pages/preview.py, study/store/preview.py) records nothing.

Every table's row count is read before and after; on SQLite and PostgreSQL. The page walk runs
the real app (app.py, with the participant page's own renderers) in-process with Streamlit's
AppTest; the player's HTTP routes are called through Starlette's test client.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from study import flow, store, texts

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
SESSION_KEY = "_kuleshov_researcher"  # app_pages.auth.SESSION_KEY


def row_counts(engine) -> dict[str, int]:
    """Rows in every table of the schema (alembic's own table too)."""
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {name: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one() for name in names}


@pytest.fixture
def demo(engine):
    study_id = store.register_study(engine, str(DEMO))
    return engine, study_id


# --------------------------------------------------------------------------- the in-memory state


def test_preview_state_offers_every_condition_list_and_step(demo):
    engine, study_id = demo
    plan = store.preview_plan(engine, study_id)
    assert plan.conditions == ("none", "true", "swapped")
    assert plan.languages == ("en", "de")
    token = store.new_preview_token()
    for condition in plan.conditions:
        for list_index in range(len(plan.lists)):
            steps = plan.steps(list_index)
            keys = [s.key for s in steps]
            assert keys[:2] == ["device_check", "consent"] and keys[-2:] == ["debrief", "complete"]
            assert sum(k.startswith("trial:") for k in keys) == 6
            for key in keys:
                state = store.preview_state(plan, token=token, condition=condition, list_index=list_index,
                                            step_key=key)
                assert state.step.key == key and state.label_condition == condition
                assert state.participant_id == 0 and store.is_preview_token(state.token)
    # Unknown choices fall back to the first offered, never to an error.
    state = store.preview_state(plan, token=token, condition="nope", list_index=99, step_key="nope", language="xx")
    assert (state.label_condition, state.list_index, state.step.key, state.language) == ("none", 0, "device_check", "en")


def test_a_preview_token_is_never_a_participant_token(demo):
    engine, study_id = demo
    real = store.enrol(engine, study_id)
    assert not store.is_preview_token(real.token)
    assert store.is_preview_token(store.new_preview_token())
    assert store.get_state(engine, store.new_preview_token()) is None
    with pytest.raises(ValueError):
        store.preview_state(store.preview_plan(engine, study_id), token=real.token)


def test_unknown_study_or_version_is_a_sentence(demo):
    engine, study_id = demo
    with pytest.raises(store.UserError, match="No study with id 'nope'"):
        store.preview_plan(engine, "nope")
    with pytest.raises(store.UserError, match="has no version '7'"):
        store.preview_plan(engine, study_id, "7")
    with pytest.raises(store.UserError, match="names no study"):
        store.preview_plan(engine, None)


def test_a_whole_bot_walk_writes_no_row_and_follows_the_session_rules(demo):
    """Each step answered as the simulator's bot would, through the session rules, in memory."""
    engine, study_id = demo
    before = row_counts(engine)
    plan = store.preview_plan(engine, study_id)
    state = store.preview_state(plan, token=store.new_preview_token(), condition="swapped")
    seen = []
    bot = _bot(state)
    while True:
        seen.append(state.step.key)
        answers = bot.answers_for(state.step)
        assert flow.validate_answers(state.step, answers) == {}, state.step.key
        if flow.is_final(state.step):
            break
        state = store.preview_submit(plan, state, answers)
        bot.state = state
    assert seen == [s.key for s in state.steps]
    assert state.status == "completed"
    # A declined consent ends it there, as for a participant.
    at_consent = store.preview_state(plan, token=state.token, step_key="consent")
    declined = store.preview_submit(plan, at_consent, {"consent": flow.Answer(flow.CONSENT_DECLINE)})
    assert declined.status == "declined" and declined.step.key == "consent"
    assert row_counts(engine) == before


def _bot(state):
    """study.simulate's bot, without its enrolment (it answers as the simulator does)."""
    import random

    from study import simulate

    return simulate.Bot.answering(state, random.Random(1))


# --------------------------------------------------------------------------- the HTTP routes


def test_events_and_traces_routes_drop_preview_tokens(demo):
    from starlette.testclient import TestClient

    import server

    engine, study_id = demo
    before = row_counts(engine)
    app = server.make_app(engine, streamlit=False)
    token = store.new_preview_token()
    events = [{"seq": i, "position": 1, "stimulus_id": "x", "event": "play", "client_time": 1000.0 + i}
              for i in range(3)]
    batches = [{"position": 1, "attempt": 1, "seq": 0, "t": [0.0, 0.5], "x": [0.1, 0.2]}]
    with TestClient(app) as client:
        got = client.post("/api/events", json={"token": token, "events": events})
        assert got.status_code == 200, got.text
        assert got.json() == {"received": 3, "recorded": 0, "accepted": [0, 1, 2], "refused": [], "preview": True}
        got = client.post("/api/traces", json={"token": token, "batches": batches})
        assert got.status_code == 200, got.text
        assert got.json()["recorded"] == 0 and got.json()["accepted"] == [0] and got.json()["preview"] is True
        # A malformed body is still refused as such (the preview short cut comes after the shape check).
        assert client.post("/api/events", json={"token": token, "events": "no"}).status_code == 400
        # A token that merely looks odd is no preview: unknown, refused.
        assert client.post("/api/events", json={"token": "preview-" + token[8:], "events": events}).status_code == 403
    assert row_counts(engine) == before


# --------------------------------------------------------------------------- the page


def _app(db_url, monkeypatch, query: dict, researcher=None):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("KULESHOV_DATABASE_URL", db_url)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for name, value in query.items():
        at.query_params[name] = value
    if researcher is not None:
        at.session_state[SESSION_KEY] = researcher
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [m.value for m in at.info] + [m.value for m in at.warning]
                     + [m.value for m in at.error] + [m.value for m in at.caption] + [m.value for m in at.title])


@pytest.fixture
def demo_url(db_url):
    eng = store.make_engine(db_url)
    store.upgrade(eng)
    study_id = store.register_study(eng, str(DEMO))
    try:
        yield db_url, eng, study_id
    finally:
        eng.dispose()


def test_anonymous_preview_gets_the_login_form_and_no_enrolment(demo_url, monkeypatch):
    db_url, eng, study_id = demo_url
    before = row_counts(eng)
    at = _app(db_url, monkeypatch, {"study": study_id, "preview": "1"})
    words = _texts(at)
    assert "Researcher login" in words and "The preview is for researchers" in words
    assert "Preview — nothing is recorded" not in words
    assert not at.selectbox  # no step picker
    assert row_counts(eng) == before


def test_a_researcher_without_access_is_refused(demo_url, monkeypatch):
    db_url, eng, study_id = demo_url
    store.add_researcher(eng, "vera.viewer", "a-long-password-1", "viewer")
    before = row_counts(eng)
    at = _app(db_url, monkeypatch, {"study": study_id, "preview": "1"},
              researcher=store.Researcher("vera.viewer", "viewer"))
    assert "has no access to study" in _texts(at)
    assert row_counts(eng) == before
    store.grant(eng, "vera.viewer", study_id)
    before = row_counts(eng)
    at = _app(db_url, monkeypatch, {"study": study_id, "preview": "1"},
              researcher=store.Researcher("vera.viewer", "viewer"))
    assert "Preview — nothing is recorded" in _texts(at)  # a viewer may preview: it writes nothing
    assert row_counts(eng) == before


def test_a_whole_page_walk_writes_no_row(demo_url, monkeypatch):
    """Every step by the step picker, in every condition, the consent and instructions buttons
    pressed, Next and Back: the same renderers as a participant's, and not one row more."""
    db_url, eng, study_id = demo_url
    before = row_counts(eng)
    at = _app(db_url, monkeypatch, {"study": study_id, "preview": "1"}, researcher=store.SHARED)
    assert "Preview — nothing is recorded" in _texts(at)
    step_picker = at.selectbox(key="preview|step")
    keys = [label.rsplit("(", 1)[1].rstrip(")") for label in step_picker.options]  # "Title (key)"
    assert len(keys) == 16
    plan = store.preview_plan(eng, study_id)
    steps, stimuli = {s.key: s for s in plan.steps(0)}, plan.ctx.stimuli
    assert keys == list(steps)
    for condition in ("none", "true", "swapped"):
        at.selectbox(key="preview|condition").set_value(condition).run()
        assert not at.exception
        for key in keys:
            at.selectbox(key="preview|step").set_value(key).run()
            assert not at.exception, (condition, key, at.exception)
            assert at.selectbox(key="preview|step").value == key
            assert at.query_params.get("step", "device_check") == key
            words = _texts(at)
            assert "Preview — nothing is recorded" in words, key
            if key.startswith("trial:"):
                # The label this condition shows with this clip: none, its true or its swapped source.
                shown = flow.shown_label(stimuli[steps[key].stimulus_id]["source"], condition)
                labels = [texts.t("clip.label", "en", source=texts.t(f"source.{s}", "en")) for s in ("human", "ai")]
                expected = [] if shown is None else [texts.t("clip.label", "en", source=texts.t(f"source.{shown}", "en"))]
                assert [w for w in labels if w in words] == expected, (condition, key)
    # Consent: agree moves on, as it would (to demographics), still storing nothing.
    at.selectbox(key="preview|step").set_value("consent").run()
    next(b for b in at.button if b.key == "consent|agree").click().run()
    assert not at.exception and at.query_params["step"] == "demographics"
    at.button(key="preview|next").click().run()
    assert at.query_params["step"] == "mood_pre"
    at.button(key="preview|back").click().run()
    assert at.query_params["step"] == "demographics"
    at.selectbox(key="preview|step").set_value("instructions").run()
    at.button(key="submit|instructions").click().run()
    assert at.query_params["step"] == "practice"
    # Declining ends the walk there, and says so; the picker goes on from anywhere.
    at.selectbox(key="preview|step").set_value("consent").run()
    next(b for b in at.button if b.key == "consent|decline").click().run()
    assert "A participant would stop here (status: declined)" in _texts(at)
    at.selectbox(key="preview|lang").set_value("de").run()
    assert "Vorschau — nichts wird gespeichert" in _texts(at)
    assert row_counts(eng) == before


def test_the_end_page_names_the_redirect_and_never_follows_it(tmp_path, sqlite_url, monkeypatch):
    import yaml

    spec = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    spec["id"] = "preview-redirect"
    spec["stimuli"]["manifest"] = str(DEMO.parent / spec["stimuli"].get("manifest", "manifest.csv"))
    spec["completion"]["redirect_url"] = "https://app.prolific.com/submissions/complete?cc=KULDEMO1"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    eng = store.make_engine(sqlite_url)
    store.upgrade(eng)
    store.register_study(eng, str(path))
    before = row_counts(eng)
    at = _app(sqlite_url, monkeypatch, {"study": "preview-redirect", "preview": "1", "step": "complete"},
              researcher=store.SHARED)
    words = _texts(at)
    assert "A participant would now be sent on to https://app.prolific.com/submissions/complete?cc=KULDEMO1" in words
    assert "Withdraw from the study" not in [b.label for b in at.button]  # completed, as a participant would be
    assert row_counts(eng) == before
    eng.dispose()
