"""store: registering studies, enrolling, submitting, events, withdrawal, deletion (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from study import flow, store
from study.errors import UserError
from study.flow import Answer

from conftest import DEMO_STUDY, enrol, pass_device_check


@pytest.fixture
def demo(engine):
    return store.register_study(engine, DEMO_STUDY)


def valid_answers(step):
    out = {}
    for item in step.items:
        values = flow.option_values(item)
        if getattr(item, "correct", None):
            out[item.id] = Answer(item.correct)
        elif step.kind == "consent":
            out[item.id] = Answer("agree")
        elif values:
            out[item.id] = Answer(values[-1])
        else:
            out[item.id] = Answer(item.max if item.max is not None else 30)
    return out


def advance(engine, state, until_key=None, steps=None):
    """Submit valid pages until the current step is `until_key` (or `steps` pages)."""
    n = 0
    while state.step.key != until_key and (steps is None or n < steps):
        if state.step.kind == "device_check":
            state = pass_device_check(engine, state)
            n += 1
            continue
        meta = {"watched_share": 1.0, "max_time": 8.0, "play_count": 1} if state.step.has_clip else None
        result = store.submit_step(engine, state.token, state.step.key, valid_answers(state.step), meta)
        assert result.ok, (state.step.key, result.errors, result.message)
        state = result.state
        n += 1
    return state


def count(engine, table, **where):
    with engine.connect() as conn:
        q = sa.select(sa.func.count()).select_from(table)
        for k, v in where.items():
            q = q.where(table.c[k] == v)
        return conn.execute(q).scalar_one()


def studies_yaml(tmp_path, **replace):
    text = DEMO_STUDY.read_text().replace("manifest: manifest.csv", f"manifest: {DEMO_STUDY.parent / 'manifest.csv'}")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_register_stores_frozen_spec_and_probed_clips(engine, demo):
    info = store.get_study(engine, demo)
    assert info.spec_yaml == DEMO_STUDY.read_text()
    import hashlib

    assert info.spec_hash == hashlib.sha256(DEMO_STUDY.read_bytes()).hexdigest()
    assert info.study.id == "kuleshov-demo" and info.status == "open"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.stimuli).order_by(store.stimuli.c.stimulus_id)).mappings().all()
    assert len(rows) == 7
    ai = next(r for r in rows if r["stimulus_id"] == "ai_01")
    assert ai["source"] == "ai" and ai["pair_id"] == "pair_01" and len(ai["sha256"]) == 64
    assert ai["duration_s"] > 0 and ai["provenance"]["licence"] == "CC0-1.0"
    # registering the same file again changes nothing
    assert store.register_study(engine, DEMO_STUDY) == demo
    assert count(engine, store.audit_log, action="study_registered") == 1
    assert count(engine, store.audit_log, action="study_updated") == 0
    assert [s["id"] for s in store.list_studies(engine)] == ["kuleshov-demo"]


def test_changed_study_needs_a_new_version_once_participants_exist(engine, tmp_path):
    path = studies_yaml(tmp_path)
    study_id = store.register_study(engine, path)
    # no real participants yet: an edit is taken in place
    store.register_study(engine, studies_yaml(tmp_path, **{"code: KULDEMO1": "code: KULDEMO2"}))
    assert store.get_study(engine, study_id).study.completion.code == "KULDEMO2"
    enrol(engine, study_id)
    changed = studies_yaml(tmp_path, **{"code: KULDEMO1": "code: OTHER"})
    with pytest.raises(UserError, match="Change `version`"):
        store.register_study(engine, changed)
    assert store.get_study(engine, study_id).study.completion.code == "KULDEMO2"
    bumped = studies_yaml(tmp_path, **{"code: KULDEMO1": "code: OTHER", 'version: "1"': 'version: "2"'})
    store.register_study(engine, bumped)
    info = store.get_study(engine, study_id)
    assert (info.version, info.study.completion.code) == ("2", "OTHER")


def test_enrol_assigns_and_plans(engine, demo):
    state = enrol(engine, demo, prolific_pid="PID1", prolific_study_id="S", prolific_session_id="X",
                        user_agent="test")
    assert state.status == "started" and state.step.key == "consent" and state.pseudonym == "P0001"
    assert len(state.token) >= 32
    assert sorted(state.sequence) == ["ai_01", "ai_02", "ai_03", "human_01", "human_02", "human_03"]
    assert state.practice_id == "practice"
    assert state.label_condition in ("none", "true", "swapped")
    assert count(engine, store.planned_trials, participant_id=state.participant_id) == 7
    # the same Prolific participant gets the same session back, not a second one
    again = enrol(engine, demo, prolific_pid="PID1")
    assert again.token == state.token
    other = enrol(engine, demo, prolific_pid="PID2")
    assert other.pseudonym == "P0002" and other.token != state.token
    assert store.get_state(engine, state.token).pseudonym == "P0001"
    assert store.get_state(engine, "no-such-token") is None


def test_full_session_resumes_and_completes(engine, demo):
    state = enrol(engine, demo)
    state = advance(engine, state, until_key="trial:2")
    # a reload: the state read back from the database is the same place
    resumed = store.get_state(engine, state.token)
    assert (resumed.step.key, resumed.status) == ("trial:2", "in_progress")
    state = advance(engine, resumed, until_key="debrief")
    assert state.status == "completed" and state.completion_code == "KULDEMO1"
    assert [d["stimulus_id"] for d in state.debrief] == state.sequence
    assert {d["stimulus_id"] for d in state.debrief if d["ai_generated"]} == {"ai_01", "ai_02", "ai_03"}
    n_items = len(state.steps[5].items)
    assert count(engine, store.responses, participant_id=state.participant_id, step_key="trial:1") == n_items
    assert count(engine, store.trials, participant_id=state.participant_id) == 7
    with engine.connect() as conn:
        row = conn.execute(sa.select(store.participants).where(store.participants.c.id == state.participant_id)
                           ).mappings().one()
        trial = conn.execute(sa.select(store.trials).where(store.trials.c.participant_id == state.participant_id,
                                                           store.trials.c.position == 1)).mappings().one()
        valence = conn.execute(sa.select(store.responses.c.value_num, store.responses.c.shown_position,
                                         store.responses.c.trial_id)
                               .where(store.responses.c.participant_id == state.participant_id,
                                      store.responses.c.step_key == "trial:1",
                                      store.responses.c.item_id == "valence")).one()
    assert row["completed_at"] is not None and row["step_key"] == "debrief"
    assert trial["watched_share"] == 1.0 and trial["item_order"][0] == "valence"
    assert tuple(valence) == (9.0, 1, trial["id"])
    # a completed participant who comes back gets the completion state, not a new session
    back = store.get_state(engine, state.token)
    assert back.completed and back.step.key == "debrief"
    again = store.submit_step(engine, state.token, "trial:1", valid_answers(state.steps[5]))
    assert again.ok and again.duplicate and again.state.completed
    done = store.submit_step(engine, state.token, "debrief", {})
    assert done.ok and done.state.step.key == "complete" and done.state.status == "completed"
    assert count(engine, store.responses, participant_id=state.participant_id, step_key="trial:1") == n_items


def test_invalid_answers_write_nothing(engine, demo):
    state = advance(engine, enrol(engine, demo), until_key="trial:1")
    answers = valid_answers(state.step)
    answers["valence"] = Answer(12)
    result = store.submit_step(engine, state.token, "trial:1", answers, {"watched_share": 1.0})
    assert not result.ok and result.errors == {"valence": "Please give a value from 1 to 9."}
    assert result.state.step.key == "trial:1"
    assert count(engine, store.responses, participant_id=state.participant_id, step_key="trial:1") == 0
    assert count(engine, store.trials, participant_id=state.participant_id, position=1) == 0


def test_double_submit_and_out_of_order(engine, demo):
    state = advance(engine, enrol(engine, demo), until_key="mood_pre")
    answers = valid_answers(state.step)
    first = store.submit_step(engine, state.token, "mood_pre", answers)
    second = store.submit_step(engine, state.token, "mood_pre", answers)
    assert first.ok and not first.duplicate
    assert second.ok and second.duplicate and second.state.step.key == first.state.step.key
    assert count(engine, store.responses, participant_id=state.participant_id, step_key="mood_pre") == len(answers)
    ahead = store.submit_step(engine, state.token, "trial:3", {})
    assert not ahead.ok and "not the current one" in ahead.message
    bogus = store.submit_step(engine, state.token, "trial:99", {})
    assert not bogus.ok


def test_two_tabs_submitting_at_once_store_one_set(engine, demo):
    state = advance(engine, enrol(engine, demo), until_key="trial:1")
    answers = valid_answers(state.step)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def tab():
        try:
            barrier.wait()
            results.append(store.submit_step(engine, state.token, "trial:1", answers, {"watched_share": 1.0}))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=tab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.duplicate for r in results) == [False, True, True, True]
    assert all(r.ok and r.state.step.key == "trial:2" for r in results)
    assert count(engine, store.responses, participant_id=state.participant_id, step_key="trial:1") == len(answers)
    assert count(engine, store.trials, participant_id=state.participant_id, position=1) == 1


def test_consent_declined_ends_participation(engine, demo):
    state = enrol(engine, demo)
    result = store.submit_step(engine, state.token, "consent", {"consent": Answer("decline")})
    assert result.ok and result.state.status == "declined" and not result.state.active
    later = store.submit_step(engine, state.token, "consent", {"consent": Answer("agree")})
    assert not later.ok and "chose not to take part" in later.message


def test_withdrawn_participant_cannot_submit(engine, demo):
    state = advance(engine, enrol(engine, demo), until_key="trial:1")
    out = store.withdraw(engine, state.token)
    assert out.status == "withdrawn"
    result = store.submit_step(engine, state.token, "trial:1", valid_answers(state.step))
    assert not result.ok and "withdrawn" in result.message
    assert count(engine, store.responses, participant_id=state.participant_id, step_key="trial:1") == 0
    with pytest.raises(UserError, match="status withdrawn"):
        store.record_events(engine, state.token, [{"position": 1, "seq": 0, "event": "play"}])
    assert count(engine, store.audit_log, action="withdrawn") == 1


def test_attention_failure_counts_and_excludes(engine, demo):
    state = advance(engine, enrol(engine, demo), until_key="attention:attn_colour")
    result = store.submit_step(engine, state.token, "attention:attn_colour", {"attn_colour": Answer("Red")})
    assert result.ok and result.state.attention_failed == 1
    assert result.state.excluded_reason == "failed 1 attention check(s) (at most 0 allowed)"
    assert result.state.step.key == "trial:4"  # they carry on; exclusion is for the analysis


def test_closed_and_paused_study_refuse_enrolment_politely(engine, demo):
    store.set_study_status(engine, demo, "paused", actor="test")
    with pytest.raises(store.StudyClosed, match="paused"):
        enrol(engine, demo)
    pilot = enrol(engine, demo, is_pilot=True)
    assert pilot.is_pilot
    store.set_study_status(engine, demo, "closed", actor="test")
    with pytest.raises(store.StudyClosed, match="Thank you for your interest. This study has closed"):
        enrol(engine, demo, is_pilot=True)
    result = store.submit_step(engine, pilot.token, "consent", {"consent": Answer("agree")})
    assert not result.ok and result.message == store.CLOSED_MESSAGE
    assert [r["action"] for r in audit_rows(engine)].count("study_status") == 2
    with pytest.raises(UserError, match="must be one of"):
        store.set_study_status(engine, demo, "archived")


def audit_rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.audit_log).order_by(store.audit_log.c.id)).mappings().all()


def test_record_events_idempotent_and_validated(engine, demo):
    state = advance(engine, enrol(engine, demo), until_key="trial:1")
    batch = [
        {"position": 1, "seq": 0, "event": "play", "media_time": 0.0, "client_time": 1.7e12},
        {"position": 1, "seq": 1, "event": "timeupdate", "media_time": 4.0, "watched_share": 0.5},
        {"position": 1, "seq": 2, "event": "sample", "media_time": 4.0, "value": 0.3},
        {"position": 1, "seq": 3, "event": "ended", "media_time": 8.0, "detail": {"watched_share": 0.97}},
    ]
    assert store.record_events(engine, state.token, batch) == 4
    assert store.record_events(engine, state.token, batch) == 0
    assert store.record_events(engine, state.token, batch + [{"position": 1, "seq": 4, "event": "pause"}]) == 1
    assert count(engine, store.playback_events, participant_id=state.participant_id) == 4
    assert count(engine, store.continuous_samples, participant_id=state.participant_id) == 1
    with engine.connect() as conn:
        share = conn.execute(sa.select(store.trials.c.watched_share, store.trials.c.max_time)
                             .where(store.trials.c.participant_id == state.participant_id,
                                    store.trials.c.position == 1)).one()
    assert tuple(share) == (0.97, 8.0)
    # a lower share later never lowers the stored one
    store.record_events(engine, state.token, [{"position": 1, "seq": 9, "event": "seeked", "watched_share": 0.1}])
    result = store.submit_step(engine, state.token, "trial:1", valid_answers(state.step), {"watched_share": 0.5})
    assert result.ok
    with engine.connect() as conn:
        assert conn.execute(sa.select(store.trials.c.watched_share)
                            .where(store.trials.c.participant_id == state.participant_id,
                                   store.trials.c.position == 1)).scalar_one() == 0.97
    with pytest.raises(UserError) as bad:
        store.record_events(engine, state.token, [
            {"position": 1, "seq": 20, "event": "explode"},
            {"position": 42, "seq": 21, "event": "play"},
            {"position": 1, "seq": -1, "event": "play"},
            {"position": 1, "seq": 22, "event": "sample"},
        ])
    messages = [p.message for p in bad.value.problems]
    assert messages == ["unknown event type 'explode'", "position 42 is not one of this participant's clips",
                        "seq must be a whole number from 0, not -1", "a sample needs a numeric value"]
    assert count(engine, store.playback_events, participant_id=state.participant_id) == 5
    with pytest.raises(UserError, match="Too many events"):
        store.record_events(engine, state.token, [{"position": 1, "seq": i, "event": "play"} for i in range(1001)])


def test_timeouts(engine, demo):
    active = advance(engine, enrol(engine, demo), until_key="trial:1")
    done = advance(engine, enrol(engine, demo), until_key="debrief")
    assert store.mark_timed_out(engine, demo) == 0
    later = store.utcnow() + timedelta(minutes=121)
    assert store.mark_timed_out(engine, demo, later) == 1
    assert store.get_state(engine, active.token).status == "timed_out"
    assert store.get_state(engine, done.token).status == "completed"
    result = store.submit_step(engine, active.token, "trial:1", valid_answers(active.step))
    assert not result.ok and "expired" in result.message


def test_balance_counts_only_sessions_that_can_still_yield_data(engine, demo):
    """Completed and recently active sessions count; declined, withdrawn, timed-out and idle
    ones (past timeout_minutes, not yet marked) do not; pilots are counted apart."""
    def cells(is_pilot=False, now=None):
        with engine.connect() as conn:
            return store._balance_counts(conn, demo, "1", is_pilot, 120, now=now)

    done = advance(engine, enrol(engine, demo), until_key="debrief")
    active = advance(engine, enrol(engine, demo), until_key="trial:1")
    declined = enrol(engine, demo)
    store.submit_step(engine, declined.token, "consent", {"consent": Answer(flow.CONSENT_DECLINE)})
    store.withdraw(engine, advance(engine, enrol(engine, demo), until_key="mood_pre").token)
    timed = enrol(engine, demo)
    pilot = enrol(engine, demo, is_pilot=True)
    with engine.begin() as conn:
        conn.execute(store.participants.update().where(store.participants.c.token == timed.token)
                     .values(status="timed_out"))
    counted = [done, active]
    assert sum(cells().values()) == 2
    assert cells() == dict(Counter((s.list_index, s.label_condition) for s in counted))
    assert cells(is_pilot=True) == {(pilot.list_index, pilot.label_condition): 1}
    # Two hours later the active session and the pilot are idle past the timeout: only the
    # completed one still holds its place.
    later = store.utcnow() + timedelta(minutes=121)
    assert cells(now=later) == {(done.list_index, done.label_condition): 1}
    assert cells(is_pilot=True, now=later) == {}


def test_a_dropout_frees_its_cell_for_the_next_participant(engine, tmp_path):
    one_list = studies_yaml(tmp_path, **{'label_conditions: [none, "true", swapped]': "label_conditions: [none, swapped]"})
    study_id = store.register_study(engine, one_list)
    first = enrol(engine, study_id)
    store.submit_step(engine, first.token, "consent", {"consent": Answer(flow.CONSENT_DECLINE)})
    # The demo has one list: with the declined session not counted, its cell is empty again.
    assert enrol(engine, study_id).label_condition == first.label_condition


def test_delete_participant_leaves_only_an_audit_entry(engine, demo):
    keep = advance(engine, enrol(engine, demo, prolific_pid="KEEP"), until_key="trial:2")
    gone = advance(engine, enrol(engine, demo, prolific_pid="GONE"), until_key="trial:2")
    store.record_events(engine, gone.token, [{"position": 2, "seq": 0, "event": "play"},
                                             {"position": 2, "seq": 1, "event": "sample", "value": 1.0}])
    store.withdraw(engine, gone.token)
    with pytest.raises(UserError, match="No participant 'nobody'"):
        store.delete_participant(engine, demo, "nobody")
    deleted = store.delete_participant(engine, demo, "GONE", actor="researcher")
    assert deleted > 20
    for table in (store.participants, store.planned_trials, store.trials, store.responses,
                  store.playback_events, store.continuous_samples):
        assert count(engine, table, participant_id=gone.participant_id) == 0 if table is not store.participants \
            else count(engine, table, id=gone.participant_id) == 0
    assert count(engine, store.responses, participant_id=keep.participant_id) > 0
    ref = store.participant_ref(demo, gone.pseudonym)
    entries = [r for r in audit_rows(engine) if r["participant_ref"] == ref]
    assert [(r["action"], r["actor"]) for r in entries] == [("participant_deleted", "researcher")]
    text = str(dict(entries[0]))
    assert "GONE" not in text and gone.token not in text and gone.pseudonym not in text
    # by pseudonym too; numbers are never reused
    store.delete_participant(engine, demo, keep.pseudonym)
    assert enrol(engine, demo).pseudonym == "P0003"


def test_cli_study_and_delete(db_url, capsys):
    import argparse

    assert store.cli_study(argparse.Namespace(action="register", target=str(DEMO_STUDY), url=db_url)) == 0
    assert "registered kuleshov-demo version 1" in capsys.readouterr().out
    assert store.cli_study(argparse.Namespace(action="close", target="kuleshov-demo", url=db_url)) == 0
    assert store.cli_study(argparse.Namespace(action="list", target=None, url=db_url)) == 0
    out = capsys.readouterr().out
    assert "kuleshov-demo: closed" in out and "\tclosed\t" in out
    with pytest.raises(UserError, match="No participant 'P0009'"):
        store.cli_delete_participant(argparse.Namespace(study=str(DEMO_STUDY), participant="P0009", url=db_url))
    with pytest.raises(UserError, match="No study with id 'nope'"):
        store.cli_study(argparse.Namespace(action="open", target="nope", url=db_url))


def test_registered_study_remembers_its_clip_folder(engine):
    study_id = store.register_study(engine, DEMO_STUDY)
    info = store.get_study(engine, study_id)
    assert info.manifest_dir == str(DEMO_STUDY.parent.resolve())
    assert (DEMO_STUDY.parent / "manifest.csv").is_file()
