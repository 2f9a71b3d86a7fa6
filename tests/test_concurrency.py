"""Balance under concurrent enrolment: 200 participants from 20 threads at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter

import sqlalchemy as sa

from study import store

from conftest import DEMO_STUDY

N_PARTICIPANTS = 200
N_THREADS = 20


def many_lists_study(tmp_path):
    """The demo study with 12 counterbalancing lists (2 clips each, Latin square, one pair member)."""
    text = DEMO_STUDY.read_text()
    for old, new in {
        "manifest: manifest.csv": f"manifest: {DEMO_STUDY.parent / 'manifest.csv'}",
        "clips_per_participant: null   # all six main clips": "clips_per_participant: 2",
        "ordering: random": "ordering: latin_square",
        "pairs: both": "pairs: one_per_participant",
        "after_clip: 3": "after_clip: 1",
    }.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_concurrent_enrolment_stays_balanced(engine, tmp_path):
    from study import design

    study_id = store.register_study(engine, many_lists_study(tmp_path))
    info = store.get_study(engine, study_id)
    n_lists = 12
    errors: list[BaseException] = []
    barrier = threading.Barrier(N_THREADS)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for i in range(N_PARTICIPANTS // N_THREADS):
                store.enrol(engine, study_id, prolific_pid=f"T{k:02d}-{i:03d}")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.participants.c.list_index, store.participants.c.label_condition,
                                      store.participants.c.participant_number)).all()
        planned = conn.execute(sa.select(sa.func.count()).select_from(store.planned_trials)).scalar_one()
    assert len(rows) == N_PARTICIPANTS
    assert sorted(r.participant_number for r in rows) == list(range(1, N_PARTICIPANTS + 1))
    per_list = Counter(r.list_index for r in rows)
    per_condition = Counter(r.label_condition for r in rows)
    assert set(per_list) == set(range(n_lists))
    assert max(per_list.values()) - min(per_list.values()) <= 1
    assert set(per_condition) == set(info.study.design.label_conditions)
    assert max(per_condition.values()) - min(per_condition.values()) <= 1
    assert planned == N_PARTICIPANTS * 3  # two clips and the practice clip each
    assert len(design.build_lists(store._context(_row(engine, study_id)).spec,
                                  store._context(_row(engine, study_id)).clips)) == n_lists


def _row(engine, study_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.studies).where(store.studies.c.id == study_id)).mappings().one()
