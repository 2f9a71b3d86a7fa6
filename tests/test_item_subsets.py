"""Choosing items of a built-in instrument: `{name: sam, items: [valence, arousal]}` in measures.

Checked: the study file validates (and unknown or repeated item ids give a message naming the
instrument, the id and the valid ones); bots walk the real flow and are asked exactly the
chosen items in the chosen order; scoring leaves out a scale whose items were asked only in
part, and says so in the codebook; the export's scores file and codebook follow the subset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from analysis import export, load, scoring
from study import instruments, simulate, store
from study.errors import UserError
from study.protocol import load_study, validate_study_file

from conftest import DEMO_STUDY

DEMO = Path(DEMO_STUDY)
SUBSET_MEASURES = """measures:
  session_start: [mood]
  per_clip:
    - {name: sam, items: [arousal, valence]}
    - {name: discrete_emotions, items: [emo_sadness, emo_awe, emo_unease]}
    - {name: moved, items: [moved_1, moved_2]}
    - attribution
  session_end: [{name: mood, items: [mood_valence]}]
  randomize_item_order: false
"""


def subset_study(tmp_path: Path, measures: str = SUBSET_MEASURES, analysis: str | None = None) -> Path:
    """The demo study (its clips, by absolute path) asking only some items of its instruments."""
    text = DEMO.read_text()
    start = text.index("measures:\n")
    end = text.index("\ndesign:")
    text = text[:start] + measures + text[end:]
    text = text.replace("manifest: manifest.csv", f"manifest: {DEMO.parent / 'manifest.csv'}")
    text = text.replace("secondary_outcomes: [arousal, moved]", analysis or "secondary_outcomes: [arousal]")
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[tuple[str, str]]:
    return [(p.where, p.message) for p in validate_study_file(path, check_media=False) if p.severity == "error"]


# --------------------------------------------------------------------------- validate


def test_a_subset_validates_and_keeps_the_chosen_order(tmp_path):
    path = subset_study(tmp_path)
    assert problems(path) == []
    study = load_study(path)
    assert [it.id for it in instruments.items_for(study, "per_clip")] == [
        "arousal", "valence", "emo_sadness", "emo_awe", "emo_unease", "moved_1", "moved_2",
        "judged_source", "confidence"]
    assert [it.id for it in instruments.items_for(study, "session_end")] == ["mood_valence"]
    assert [it.id for it in instruments.items_for(study, "session_start")] == [
        "mood_valence", "mood_arousal", "mood_tense", "mood_tired"]
    # the wording is the built-in one: nothing was redefined
    assert instruments.items_for(study, "per_clip")[0] == instruments.INSTRUMENTS["sam"].item("arousal")
    assert instruments.unscored_scales(study) == {"moved": ["moved_3", "moved_4"]}
    assert "moved" not in instruments.scales_for(study)


@pytest.mark.parametrize("entry, where, words", [
    ("{name: sam, items: [valence, dominanse]}", "measures.per_clip[0].items[1]",
     "instrument 'sam' has no item 'dominanse' (did you mean 'dominance'?); its items are: valence, arousal, dominance"),
    ("{name: discrete_emotions, items: [emo_sadness, awe]}", "measures.per_clip[0].items[1]",
     "instrument 'discrete_emotions' has no item 'awe'"),
    ("{name: sam, items: [valence, valence]}", "measures.per_clip[0].items[1]",
     "item 'valence' of instrument 'sam' is listed twice"),
    ("{name: sam, items: []}", "measures.per_clip[0].items", "at least 1"),
    ("{name: samm, items: [valence]}", "measures.per_clip[0]", "unknown instrument 'samm' (did you mean 'sam'?)"),
    ("{name: sam, itmes: [valence]}", "measures.per_clip[0].itmes", "did you mean 'items'?"),
    ("{name: mood, items: [mood_valence]}", "measures.per_clip[0]", "cannot be listed under per_clip"),
])
def test_bad_choices_are_named_with_their_place(tmp_path, entry, where, words):
    path = subset_study(tmp_path, f"measures:\n  per_clip: [{entry}, attribution]\n")
    found = problems(path)
    assert any(w.endswith(where) and words in m for w, m in found), found


def test_an_outcome_on_a_scale_asked_in_part_is_refused(tmp_path):
    path = subset_study(tmp_path, analysis="secondary_outcomes: [arousal, moved]")
    found = problems(path)
    assert [(w.split(": ", 1)[-1], m) for w, m in found] == [(
        "analysis.secondary_outcomes[1]",
        "the scale 'moved' is not scored, because measures.per_clip asks only some of its items (not asked: "
        "moved_3, moved_4); ask them all, or choose one of: arousal, confidence, emo_awe, emo_sadness, emo_unease, "
        "moved_1, moved_2, valence")]


def test_the_whole_instrument_as_a_choice_still_scores_its_scale(tmp_path):
    measures = SUBSET_MEASURES.replace("items: [moved_1, moved_2]", "items: [moved_4, moved_3, moved_2, moved_1]")
    path = subset_study(tmp_path, measures, analysis="secondary_outcomes: [arousal, moved]")
    assert problems(path) == []
    study = load_study(path)
    assert instruments.unscored_scales(study) == {}
    assert "moved" in instruments.scales_for(study)


def test_codebook_says_which_items_were_asked(tmp_path):
    study = load_study(subset_study(tmp_path))
    book = instruments.codebook(study).set_index("name")
    assert "dominance" not in book.index and "emo_fear" not in book.index and "moved_3" not in book.index
    assert "moved" not in book.index  # no scale-score row for a scale that is not computed
    assert book.loc["valence", "description"].endswith(
        "This study asked 2 of the 3 items of sam (arousal, valence; not asked: dominance).")
    assert book.loc["moved_1", "description"].endswith(
        "This study asked 2 of the 4 items of moved (moved_1, moved_2; not asked: moved_3, moved_4); "
        "so the scale score moved is not computed.")
    assert "This study asked" not in book.loc["judged_source", "description"]
    # session_start asks all of mood, session_end one item: all four were asked, so no note
    assert "This study asked" not in book.loc["mood_tense", "description"]


# --------------------------------------------------------------------------- scoring


def test_scoring_does_not_score_a_partial_scale_or_a_lone_subscale(tmp_path):
    measures = SUBSET_MEASURES.replace("    - attribution\n",
                                       "    - attribution\n    - {name: engagement, items: [eng_focus_2, eng_focus_1, eng_presence_1]}\n")
    study = load_study(subset_study(tmp_path, measures))
    book = instruments.codebook(study)
    assert scoring.default_scales(book) == {"engagement_focus": ["eng_focus_1", "eng_focus_2"]}
    long = pd.DataFrame([
        {"participant_id": "p1", "stimulus_id": "c1", "source": "human", "pair_id": None, "label_condition": "none",
         "position": 1, "watched_share": 1.0, "is_pilot": False, "item_id": item, "value": value, "value_text": None}
        for item, value in [("moved_1", 7), ("moved_2", 5), ("eng_focus_1", 6), ("eng_focus_2", 2),
                            ("eng_presence_1", 4)]])
    trials = scoring.score_items(long, book)
    row = trials.iloc[0]
    assert row["engagement_focus"] == 6.0  # (6 + (1 + 7 - 2)) / 2
    for absent in ("moved", "engagement", "engagement_presence", "presence", "engagement_engagement_presence"):
        assert absent not in trials.columns
    # the same answers scored against every built-in item would give a (wrong) half-scale score
    full = scoring.score_items(long, instruments.codebook(None))
    assert full.iloc[0]["moved"] == 6.0


# --------------------------------------------------------------------------- run and export


def test_bots_answer_the_subset_and_the_export_follows_it(engine, tmp_path):
    path = subset_study(tmp_path)
    tokens = simulate.simulate(engine, path, 6, effect=0.5, seed=4)
    state = store.get_state(engine, tokens[0])
    trial = next(s for s in state.steps if s.kind == "trial")
    assert [it.id for it in trial.items] == [
        "arousal", "valence", "emo_sadness", "emo_awe", "emo_unease", "moved_1", "moved_2",
        "judged_source", "confidence"]
    r = store.responses.c
    with engine.connect() as conn:
        asked = set(conn.execute(sa.select(r.item_id).distinct()).scalars())
        order = conn.execute(sa.select(r.item_id, r.shown_position).where(
            r.step_key == "trial:1", r.participant_id == state.participant_id).order_by(r.shown_position)).all()
        at_end = set(conn.execute(sa.select(r.item_id).where(r.step_key == "mood_post").distinct()).scalars())
    assert {"dominance", "emo_fear", "moved_3"} & asked == set()
    assert {"arousal", "emo_awe", "moved_2", "mood_valence", "mood_tense"} <= asked
    assert at_end == {"mood_valence"}
    assert [row.item_id for row in order][:2] == ["arousal", "valence"]  # shown in the chosen order

    folder = export.export_dataset(engine, "kuleshov-demo", tmp_path / "dataset")
    scores = pd.read_csv(folder / "scores.csv")
    for col in ("arousal", "valence", "emo_sadness", "moved_1", "moved_2"):
        assert col in scores.columns and scores[col].notna().any(), col
    for col in ("dominance", "emo_fear", "moved_3", "moved"):
        assert col not in scores.columns, col
    book = pd.read_csv(folder / "codebook.csv")
    valence = book[(book["file"] == "scores") & (book["name"] == "valence")].iloc[0]
    assert "not asked: dominance" in valence["description"]
    fields = {f["name"] for res in json.loads((folder / "datapackage.json").read_text())["resources"]
              if res["name"] == "scores" for f in res["schema"]["fields"]}
    assert "moved" not in fields and "moved_1" in fields
    study = store.get_study(engine, "kuleshov-demo").study
    trials = load.trial_table(load.load_long(engine, "kuleshov-demo", include_pilot=True), study)
    assert "moved" not in trials.columns and trials["moved_1"].notna().all()


def test_a_stored_subset_study_reloads(engine, tmp_path):
    """The frozen study file of a registered subset study parses again (schema round trip)."""
    path = subset_study(tmp_path)
    study_id = store.register_study(engine, path)
    info = store.get_study(engine, study_id)
    entries = info.study.measures.per_clip
    assert instruments.entry_name(entries[0]) == "sam" and instruments.entry_item_ids(entries[0]) == ["arousal", "valence"]
    assert instruments.entry_item_ids(entries[3]) is None
    with pytest.raises(UserError, match="unknown instrument 'nope'"):
        instruments.chosen_items("nope")
