"""Instruments as data: the built-in library, item rules, pictograms and the generated codebook."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from study import instruments as ins
from study import protocol
from study.errors import UserError
from study.instruments import INSTRUMENTS, Item, codebook, get_instrument, items_for, pictogram_svg
from study.protocol import Study, load_study

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
EMOTIONS = ["amusement", "sadness", "fear", "anger", "disgust", "tenderness", "awe", "surprise", "unease"]


@pytest.fixture(scope="module")
def demo():
    return load_study(DEMO)


def test_the_library_has_every_instrument_the_issue_asks_for():
    assert {"sam", "discrete_emotions", "moved", "engagement", "ai_qualities", "attribution", "mood",
            "demographics"} <= set(INSTRUMENTS)
    assert [i.id for i in INSTRUMENTS["sam"].items] == ["valence", "arousal", "dominance"]
    assert [i.id for i in INSTRUMENTS["discrete_emotions"].items] == [f"emo_{e}" for e in EMOTIONS]
    assert {"age", "gender", "film_watching_frequency"} <= {i.id for i in INSTRUMENTS["demographics"].items}
    assert all(i.id.startswith("mood_") for i in INSTRUMENTS["mood"].items)
    assert 3 <= len(INSTRUMENTS["mood"].items) <= 4 and INSTRUMENTS["mood"].scope == "session"


def test_response_types_and_ranges():
    for item in INSTRUMENTS["sam"].items:
        assert (item.type, item.min, item.max, item.pictogram) == ("pictorial9", 1, 9, item.id)
    for item in INSTRUMENTS["discrete_emotions"].items:
        assert (item.type, item.min, item.max) == ("intensity", 0, 8)
    judged, confidence = INSTRUMENTS["attribution"].items
    assert judged.id == "judged_source" and [o.value for o in judged.options] == ["human", "ai"]
    assert (confidence.type, confidence.min, confidence.max, confidence.unit) == ("slider", 50, 100, "%")
    gender = INSTRUMENTS["demographics"].item("gender")
    assert "prefer_not" in [o.value for o in gender.options]
    assert INSTRUMENTS["demographics"].item("age").unit == "years"


def test_reverse_keying_and_scales():
    moved = INSTRUMENTS["moved"]
    assert 3 <= len(moved.items) <= 4 and all(i.type == "likert" and (i.min, i.max) == (1, 7) for i in moved.items)
    assert [i.id for i in moved.items if i.reverse] == ["moved_4"]
    assert moved.scales["moved"].items == [i.id for i in moved.items]
    eng = INSTRUMENTS["engagement"]
    assert 4 <= len(eng.items) <= 6 and len([i for i in eng.items if i.reverse]) == 1
    assert {i.subscale for i in eng.items} == {"focus", "presence", "understanding"}
    for sub in ("focus", "presence", "understanding"):
        assert eng.scales[f"engagement_{sub}"].items == [i.id for i in eng.items if i.subscale == sub]
    assert [i.id for i in INSTRUMENTS["ai_qualities"].items] == ["aiq_physics", "aiq_consistency", "aiq_detail", "aiq_story"]
    assert "ai_qualities" in INSTRUMENTS["ai_qualities"].scales
    reversed_item = moved.item("moved_4")
    assert reversed_item.reverse_score(7) == 1 and reversed_item.reverse_score(2) == 6
    assert moved.item("moved_1").reverse_score(2) == 2


def test_ids_are_unique_and_never_collide_with_columns():
    item_ids = [i.id for inst in INSTRUMENTS.values() for i in inst.items]
    assert len(item_ids) == len(set(item_ids))
    scales = ins.builtin_scale_ids()
    assert not (set(item_ids) & scales)
    assert not ((set(item_ids) | scales) & ins.RESERVED_NAMES)


def test_every_item_is_documented():
    for item in ins.all_items():
        assert item.text.strip() and item.description.strip(), item.id
        assert item.allowed_values().strip(), item.id
        if item.kind.scaled:
            # both ends of every rating scale carry a label
            assert item.min in item.anchors and item.max in item.anchors, item.id
        if item.kind.choice:
            assert all(o.label.strip() for o in item.options), item.id


def test_get_instrument_names_the_known_ids():
    assert get_instrument("sam").name
    with pytest.raises(UserError, match="known instruments: sam, discrete_emotions"):
        get_instrument("panas")


@pytest.mark.parametrize("data,words", [
    ({"type": "likert"}, "needs min and max"),
    ({"type": "likert", "min": 7, "max": 1}, "min (7) must be smaller than max (1)"),
    ({"type": "likert", "min": 1, "max": 7, "anchors": {9: "x"}}, "anchor 9 lies outside"),
    ({"type": "pictorial9", "min": 1, "max": 7}, "always runs from 1 to 9"),
    ({"type": "choice", "options": [{"value": "a", "label": "A"}]}, "at least 2 options"),
    ({"type": "choice", "options": [{"value": "a", "label": "A"}, {"value": "a", "label": "B"}]}, "distinct"),
    ({"type": "attention", "options": [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]}, "needs `correct`"),
    ({"type": "attention", "options": [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}], "correct": "c"},
     "not one of the option values"),
    ({"type": "choice", "reverse": True, "options": [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]},
     "cannot be reverse-keyed"),
    ({"type": "text", "min": 1}, "has no min or max"),
    ({"type": "slider", "min": 0, "max": 10, "pictogram": "valence"}, "only pictorial9"),
])
def test_inconsistent_items_are_refused(data, words):
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Item(id="q", text="Question", description="d", **data)


def test_an_item_without_documentation_is_refused():
    with pytest.raises(ValidationError):
        Item(id="q", text="Question", type="likert", min=1, max=7)  # no description
    with pytest.raises(ValidationError):
        Item(id="q", text="", type="likert", min=1, max=7, description="d")


def test_pictograms_are_well_formed_and_change_with_level():
    for dim in ins.PICTOGRAM_DIMENSIONS:
        svgs = [pictogram_svg(dim, level) for level in range(1, 10)]
        assert len(set(svgs)) == 9, dim
        for level, svg in enumerate(svgs, start=1):
            root = ET.fromstring(svg)
            assert root.tag.endswith("svg") and root.get("aria-label") == f"{dim} {level} of 9"
        assert ins.pictogram_data_uri(dim, 5).startswith("data:image/svg+xml;base64,")
    # the valence mouth bends down at 1 and up at 9 (control point below the corners = smile)
    assert "Q50 48.0 68 66" in pictogram_svg("valence", 1) and "Q50 84.0 68 66" in pictogram_svg("valence", 9)
    assert "polygon" not in pictogram_svg("arousal", 1) and "polygon" in pictogram_svg("arousal", 9)
    with pytest.raises(ValueError):
        pictogram_svg("valence", 10)
    with pytest.raises(ValueError):
        pictogram_svg("joy", 3)


def test_items_for_each_scope_of_the_demo_study(demo):
    per_clip = [i.id for i in items_for(demo, "per_clip")]
    assert per_clip == (["valence", "arousal", "dominance"] + [f"emo_{e}" for e in EMOTIONS]
                        + ["moved_1", "moved_2", "moved_3", "moved_4", "judged_source", "confidence"])
    assert [i.id for i in items_for(demo, "session_start")] == [i.id for i in INSTRUMENTS["mood"].items]
    assert [i.id for i in items_for(demo, "session_end")] == [i.id for i in INSTRUMENTS["mood"].items]
    assert [i.id for i in items_for(demo, "demographics")] == ["age", "gender", "film_watching_frequency"]
    (attn,) = items_for(demo, "attention")
    assert attn.type == "attention" and attn.correct == "Blue" and [o.value for o in attn.options][2] == "Blue"
    assert set(ins.scales_for(demo)) == {"moved"}


def test_custom_items_join_their_scope():
    study = Study.model_validate({
        "title": "T", "consent": {"text": "x"},
        "measures": {"per_clip": ["sam"], "custom_items": [
            {"id": "would_share", "text": "I would share this clip.", "type": "likert", "min": 1, "max": 7,
             "anchors": {1: "no", 7: "yes"}, "description": "Willingness to share."},
            {"id": "seen_before", "scope": "session_end", "text": "Had you seen any clip before?",
             "type": "choice", "options": [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}],
             "description": "Prior exposure to the clips."},
        ]},
    })
    assert [i.id for i in items_for(study, "per_clip")][-1] == "would_share"
    assert [i.id for i in items_for(study, "session_end")][-1] == "seen_before"
    assert all(type(i) is Item for i in items_for(study, "per_clip"))  # no study-only fields leak out
    book = codebook(study).set_index("name")
    assert book.loc["would_share", "instrument"] == "custom" and book.loc["would_share", "scope"] == "per_clip"
    assert book.loc["seen_before", "allowed_values"] == "yes = Yes; no = No"


def test_codebook_of_all_builtins_documents_every_variable():
    book = codebook()
    assert list(book.columns) == ins.CODEBOOK_COLUMNS
    assert book["name"].is_unique
    names = set(book["name"])
    assert {"participant_id", "stimulus_id", "source", "pair_id", "label_condition", "position",
            "watched_share", "is_pilot"} <= names
    assert {i.id for i in ins.all_items()} <= names
    assert {"moved", "engagement", "engagement_focus", "ai_qualities"} <= names
    for col in ("name", "label", "type", "allowed_values", "missing", "description"):
        empty = book.loc[book[col].astype(str).str.strip() == "", "name"].tolist()
        assert not empty, f"codebook column {col} is empty for {empty}"
    row = book.set_index("name").loc["valence"]
    assert (row["type"], row["response_type"], row["instrument"]) == ("integer", "pictorial9", "sam")
    assert row["allowed_values"].startswith("1 to 9") and "9 = very pleasant" in row["allowed_values"]
    assert bool(book.set_index("name").loc["moved_4", "reverse"]) and not bool(book.set_index("name").loc["moved_1", "reverse"])
    assert "untouched" in book.set_index("name").loc["confidence", "missing"]


def test_codebook_of_the_demo_study_has_every_per_clip_item(demo):
    book = codebook(demo)
    names = set(book["name"])
    assert {i.id for i in items_for(demo, "per_clip")} <= names
    assert "attn_colour" in names and "emo_awe" in names
    assert "eng_focus_1" not in names  # engagement is not asked in the demo
    assert book.set_index("name").loc["mood_valence", "scope"] == "session_start, session_end"


def test_cli_codebook_writes_csv(tmp_path, capsys):
    out = tmp_path / "codebook.csv"
    assert protocol.cli_codebook(argparse.Namespace(study_file=str(DEMO), out=str(out))) == 0
    back = pd.read_csv(out)
    assert len(back) == len(codebook(load_study(DEMO))) and "valence" in set(back["name"])
    assert protocol.cli_codebook(argparse.Namespace(study_file=None, out=None)) == 0
    printed = capsys.readouterr().out
    assert "emo_unease" in printed and printed.splitlines()[1].startswith("name,label,type")


def test_a_likert_item_without_step_takes_whole_points():
    # A Likert scale has discrete points; without this a custom likert accepted 3.38.
    from study import flow

    item = Item(id="would_share", type="likert", min=1, max=7, text="Share?", description="Sharing.")
    assert item.step == 1
    step = flow.Step("trial:1", "trial", items=(item,))
    assert "would_share" in flow.validate_answers(step, {"would_share": flow.Answer(3.5)})
    assert flow.validate_answers(step, {"would_share": flow.Answer(4)}) == {}
    assert Item(id="half", type="likert", min=1, max=4, step=0.5, text="x", description="y").step == 0.5
