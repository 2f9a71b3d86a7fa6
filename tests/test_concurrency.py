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


def _drop_out(engine, state, how: str) -> None:
    """Decline at the consent page, or give consent and withdraw a page later."""
    from study import flow

    from conftest import pass_device_check

    state = pass_device_check(engine, state)
    consent = state.step
    assert consent.kind == "consent"
    if how == "decline":
        result = store.submit_step(engine, state.token, consent.key, {"consent": flow.CONSENT_DECLINE})
        assert result.ok and result.state.status == "declined"
    else:
        result = store.submit_step(engine, state.token, consent.key, {"consent": flow.CONSENT_AGREE})
        assert result.ok and result.state.status == "in_progress"
        assert store.withdraw(engine, state.token).status == "withdrawn"


def test_concurrent_enrolment_keeps_cells_balanced_with_dropouts(engine, tmp_path):
    """200 enrolments from 20 threads; 40 sessions drop out mid-way (declined or withdrawn), each
    followed by its thread's next enrolment. Only the sessions that count (here: all the others)
    fill the cells, and every list x condition cell ends within 1 of every other."""
    from study import design

    study_id = store.register_study(engine, many_lists_study(tmp_path))
    info = store.get_study(engine, study_id)
    n_lists = 12
    conditions = tuple(info.study.design.label_conditions)
    errors: list[BaseException] = []
    barrier = threading.Barrier(N_THREADS)
    per_thread = N_PARTICIPANTS // N_THREADS
    dropped: list[str] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                state = store.enrol(engine, study_id, prolific_pid=f"T{k:02d}-{i:03d}")
                # Never the thread's last enrolment: each dropout is followed by a replacement.
                if i % 4 == 1 and i < per_thread - 1:
                    _drop_out(engine, state, "decline" if k % 2 else "withdraw")
                    dropped.append(state.token)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    c = store.participants.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.list_index, c.label_condition, c.participant_number, c.status,
                                      c.token)).all()
        planned = conn.execute(sa.select(sa.func.count()).select_from(store.planned_trials)).scalar_one()
    assert len(rows) == N_PARTICIPANTS
    assert sorted(r.participant_number for r in rows) == list(range(1, N_PARTICIPANTS + 1))
    assert len(dropped) == 40
    assert Counter(r.status for r in rows) == {"started": 160, "declined": 20, "withdrawn": 20}
    counted = [r for r in rows if r.status == "started"]
    assert {r.token for r in rows} - {r.token for r in counted} == set(dropped)
    cells = Counter((r.list_index, r.label_condition) for r in counted)
    every = [cells[(i, cond)] for i in range(n_lists) for cond in conditions]
    assert len(every) == 36 and sum(every) == 160
    assert max(every) - min(every) <= 1, cells  # 160 / 36: every cell holds 4 or 5
    # What the store counts for the next participant is exactly these cells.
    with engine.connect() as conn:
        assert store._balance_counts(conn, study_id, info.version, False, info.study.timeout_minutes) == {
            cell: n for cell, n in cells.items() if n}
    assert planned == N_PARTICIPANTS * 3  # two clips and the practice clip each
    assert len(design.build_lists(store._context(_row(engine, study_id)).spec,
                                  store._context(_row(engine, study_id)).clips)) == n_lists


def _row(engine, study_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(store.studies).where(store.studies.c.id == study_id)).mappings().one()
