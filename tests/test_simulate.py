"""Simulated participants walk the real flow and leave exactly the rows real ones would."""

from __future__ import annotations

import argparse
from collections import Counter

import sqlalchemy as sa

from study import simulate, store

from conftest import DEMO_STUDY


def test_simulate_20_leaves_the_expected_rows(engine):
    tokens = simulate.simulate(engine, str(DEMO_STUDY), 20, effect=0.0, seed=3)
    assert len(tokens) == len(set(tokens)) == 20
    expected_responses = 0
    statuses = Counter()
    for token in tokens:
        state = store.get_state(engine, token)
        statuses[state.status] += 1
        done = state.steps[: state.step_index + (1 if state.status == "declined" else 0)]
        expected_responses += sum(len(s.items) for s in done if s.collects_data)
        if state.status == "completed":
            assert state.step.key == "complete"
    with engine.connect() as conn:
        n_responses = conn.execute(sa.select(sa.func.count()).select_from(store.responses)).scalar_one()
        n_participants = conn.execute(sa.select(sa.func.count()).select_from(store.participants)).scalar_one()
        n_events = conn.execute(sa.select(sa.func.count()).select_from(store.playback_events)).scalar_one()
        unsubmitted = conn.execute(sa.select(sa.func.count()).select_from(store.trials)
                                   .where(store.trials.c.submitted_at.is_(None))).scalar_one()
    assert n_participants == 20
    assert n_responses == expected_responses
    assert statuses["completed"] >= 15
    # a completed bot answered 1 consent + 3 demographics + 2 x 4 mood + 7 clips x 18 items + 1 attention check
    assert expected_responses <= 20 * (1 + 3 + 8 + 7 * 18 + 1)
    assert n_events >= statuses["completed"] * 7 * 3
    assert unsubmitted <= statuses["in_progress"] + statuses["withdrawn"]


def _mean_valence_by_source(engine):
    q = sa.text(
        "SELECT s.source, avg(r.value_num) FROM responses r JOIN trials t ON t.id = r.trial_id "
        "JOIN participants p ON p.id = r.participant_id "
        "JOIN stimuli s ON s.stimulus_id = t.stimulus_id AND s.study_id = p.study_id "
        "WHERE r.item_id = 'valence' AND t.position > 0 GROUP BY s.source")
    with engine.connect() as conn:
        return dict(conn.execute(q).all())


def test_planted_effect_shows_in_the_data(sqlite_url):
    # The answers do not depend on the database, so SQLite alone is enough here.
    engine = store.make_engine(sqlite_url)
    store.upgrade(engine)
    simulate.simulate(engine, str(DEMO_STUDY), 30, effect=3.0, seed=5)
    means = _mean_valence_by_source(engine)
    # planted +3 scale points; clip random effects (3 clips per source) move it by about +-0.7
    assert 1.5 < means["human"] - means["ai"] < 4.5
    with engine.connect() as conn:
        judged = conn.execute(sa.text(
            "SELECT s.source = r.value_text FROM responses r JOIN trials t ON t.id = r.trial_id "
            "JOIN stimuli s ON s.stimulus_id = t.stimulus_id WHERE r.item_id = 'judged_source'")).scalars().all()
    engine.dispose()
    accuracy = sum(map(bool, judged)) / len(judged)
    assert 0.55 < accuracy < 0.75  # bots are right 65% of the time


def test_same_seed_same_answers(sqlite_url, tmp_path):
    def run(url):
        eng = store.make_engine(url)
        store.upgrade(eng)
        simulate.simulate(eng, str(DEMO_STUDY), 3, effect=1.0, seed=9)
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT participant_id, step_key, item_id, value_num, value_text "
                                        "FROM responses ORDER BY 1, 2, 3")).all()
        eng.dispose()
        return rows

    assert run(sqlite_url) == run(f"sqlite:///{tmp_path / 'other.db'}")


def test_cli_simulate(sqlite_url, capsys):
    args = argparse.Namespace(study=str(DEMO_STUDY), participants=5, effect=0.5, seed=2, url=sqlite_url)
    assert simulate.cli_simulate(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulated 5 participants") and "kuleshov-demo" in out
    eng = store.make_engine(sqlite_url)
    assert sum(store.list_studies(eng)[0]["by_status"].values()) == 5
    eng.dispose()
