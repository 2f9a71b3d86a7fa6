"""Study versions never mix: participants finish under the version they started (SQLite and PostgreSQL).

Version 2 is registered while a participant sits at every step of version 1. Version 2 drops
the attention check and the end-of-session mood page, so a participant moved onto it would skip
those pages; each must still answer them, finish with every version-1 step stored, and get
version 1's completion code. New participants get version 2; the export tells them apart.
"""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from analysis import export
from study import store
from study.errors import UserError

from conftest import DEMO_STUDY
from test_store import advance

V2_CHANGES = {
    'version: "1"': 'version: "2"',
    "code: KULDEMO1": "code: KULDEMO2",
    "session_end: [mood]": "session_end: []",
}


def study_file(folder, **replace):
    folder.mkdir(parents=True, exist_ok=True)
    text = DEMO_STUDY.read_text().replace("manifest: manifest.csv", f"manifest: {DEMO_STUDY.parent / 'manifest.csv'}")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "study.yaml"
    path.write_text(text)
    return path


def v2_file(folder):
    path = study_file(folder, **V2_CHANGES)
    # Version 2 has no attention check: drop its block (it runs up to the exclusions section).
    text = path.read_text()
    path.write_text(text[:text.index("attention_checks:")] + text[text.index("exclusions:"):])
    return path


def finish(engine, state, limit=40):
    """Submit pages up to the debrief; bounded, so a participant stuck on a page fails the test."""
    state = advance(engine, state, until_key="debrief", steps=limit)
    assert state.step.key == "debrief", (state.step.key, state.status)
    return state


def stored_steps(engine, token):
    c = store.responses.c
    with engine.connect() as conn:
        pid = conn.execute(sa.select(store.participants.c.id).where(store.participants.c.token == token)).scalar_one()
        return set(conn.execute(sa.select(c.step_key).where(c.participant_id == pid).distinct()).scalars())


@pytest.fixture
def two_versions(engine, tmp_path):
    v1 = study_file(tmp_path / "v1")
    study_id = store.register_study(engine, v1)
    probe = store.enrol(engine, study_id, is_pilot=True)
    v1_steps = [s.key for s in probe.steps]
    assert "attention:attn_colour" in v1_steps and "mood_post" in v1_steps
    # One participant at each step of version 1, consent to debrief (the last data page done).
    waiting = []
    for index in range(len(v1_steps) - 1):
        state = advance(engine, store.enrol(engine, study_id), until_key=v1_steps[index], steps=index)
        assert state.step_index == index
        waiting.append(state)
    v2 = v2_file(tmp_path / "v2")
    assert store.register_study(engine, v2) == study_id
    return study_id, v1, v2, v1_steps, waiting


def test_participants_finish_under_their_version_with_every_step(engine, two_versions):
    study_id, _, _, v1_steps, waiting = two_versions
    collecting = {s.key for s in store.get_state(engine, waiting[0].token).steps
                  if s.collects_data and s.kind != "device_check"}  # the check stores device_info, not answers
    assert {"attention:attn_colour", "mood_post", "trial:6"} <= collecting
    for before in waiting:
        state = store.get_state(engine, before.token)
        # Still where they were, on version 1's step list.
        assert [s.key for s in state.steps] == v1_steps
        assert state.step.key == before.step.key
        state = finish(engine, state)
        assert state.status == "completed" and state.completion_code == "KULDEMO1"
        assert stored_steps(engine, state.token) == collecting, before.step.key
    with engine.connect() as conn:
        versions = conn.execute(sa.select(store.participants.c.study_version)
                                .where(store.participants.c.is_pilot.is_(False))).scalars().all()
    assert set(versions) == {"1"}


def test_new_participants_get_the_new_version(engine, two_versions):
    study_id, _, _, v1_steps, _ = two_versions
    new = store.enrol(engine, study_id)
    keys = [s.key for s in new.steps]
    assert "attention:attn_colour" not in keys and "mood_post" not in keys
    assert keys != v1_steps
    done = finish(engine, new)
    assert done.completion_code == "KULDEMO2"
    assert "attention:attn_colour" not in stored_steps(engine, new.token)
    with engine.connect() as conn:
        version = conn.execute(sa.select(store.participants.c.study_version)
                               .where(store.participants.c.token == new.token)).scalar_one()
    assert version == "2"


def test_every_version_is_kept_and_can_be_read(engine, two_versions):
    study_id, v1, v2, _, _ = two_versions
    versions = store.list_versions(engine, study_id)
    assert [(v["version"], v["current"]) for v in versions] == [("1", False), ("2", True)]
    assert versions[0]["spec_yaml"] == v1.read_text() and versions[1]["spec_yaml"] == v2.read_text()
    assert versions[0]["participants"] == len(two_versions[4]) + 1  # the pilot probe too
    assert store.get_study(engine, study_id).study.completion.code == "KULDEMO2"
    old = store.get_study(engine, study_id, version="1")
    assert (old.version, old.study.completion.code, old.spec_yaml) == ("1", "KULDEMO1", v1.read_text())
    with pytest.raises(UserError, match="no version '9'.*registered: 1, 2"):
        store.get_study(engine, study_id, version="9")


def test_a_changed_file_under_an_old_version_with_participants_is_refused(engine, two_versions, tmp_path):
    study_id, _, _, _, _ = two_versions
    edited_v1 = study_file(tmp_path / "v1b", **{"code: KULDEMO1": "code: SNEAKY"})
    with pytest.raises(UserError, match="version 1 already has .* participant"):
        store.register_study(engine, edited_v1)
    assert store.get_study(engine, study_id, version="1").study.completion.code == "KULDEMO1"
    assert store.get_study(engine, study_id).version == "2"


def test_export_tells_versions_apart(engine, two_versions, tmp_path):
    study_id, v1, v2, _, waiting = two_versions
    for before in waiting:
        finish(engine, store.get_state(engine, before.token))
    finish(engine, store.enrol(engine, study_id))
    folder = export.export_dataset(engine, study_id, tmp_path / "dataset")
    people = pd.read_csv(folder / "participants.csv", dtype={"study_version": str})
    assert people["study_version"].value_counts().to_dict() == {"1": len(waiting), "2": 1}
    assert (folder / "study_v1.yaml").read_text() == v1.read_text()
    assert (folder / "study_v2.yaml").read_text() == v2.read_text()
    assert (folder / "study.yaml").read_text() == v2.read_text()
    codebook = pd.read_csv(folder / "codebook.csv")
    row = codebook[(codebook["file"] == "participants") & (codebook["name"] == "study_version")]
    assert len(row) == 1 and "study_v<version>.yaml" in row["description"].iloc[0]


def test_version_file_names_are_safe():
    assert export.version_file("2") == "study_v2.yaml"
    assert export.version_file("1.2-beta") == "study_v1.2-beta.yaml"
    assert export.version_file("../x y") == "study_v_x_y.yaml"


def test_analysis_can_keep_one_version(engine, two_versions, tmp_path):
    from analysis import load

    study_id, _, _, _, waiting = two_versions
    for before in waiting:
        finish(engine, store.get_state(engine, before.token))
    newcomer = finish(engine, store.enrol(engine, study_id))
    everyone = load.load_trials(engine, study_id)
    assert set(everyone.participants["study_version"]) == {"1", "2"}
    only_2 = load.load_trials(engine, study_id, version="2")
    assert list(only_2.participants["participant_id"]) == [newcomer.pseudonym]
    assert set(only_2.trials["participant_id"]) == {newcomer.pseudonym}
    assert only_2.study.completion.code == "KULDEMO2"
    only_1 = load.load_trials(engine, study_id, version="1")
    assert set(only_1.participants["study_version"]) == {"1"} and newcomer.pseudonym not in set(only_1.trials["participant_id"])
    assert only_1.study.completion.code == "KULDEMO1"
    with pytest.raises(UserError, match="no version '7'"):
        load.load_trials(engine, study_id, version="7")
    with pytest.raises(UserError, match="--version works on the database"):
        load.load_trials(tmp_path, version="1")
