"""The pure flow: which steps a participant sees, in which order, and what counts as an answer."""

from __future__ import annotations

import pytest

from study import flow
from study.flow import Answer
from study.protocol import AttentionCheck, load_study

from conftest import DEMO_STUDY

SEQ = ["human_01", "ai_02", "human_03", "ai_01", "human_02", "ai_03"]


@pytest.fixture(scope="module")
def study():
    return load_study(DEMO_STUDY)


def with_changes(study, **sections):
    data = study.model_dump()
    for name, value in sections.items():
        if isinstance(value, dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return type(study).model_validate(data, context={"skip_cross_checks": True})


def keys(steps):
    return [s.key for s in steps]


def test_demo_step_order(study):
    steps = flow.build_steps(study, SEQ, "practice")
    assert keys(steps) == [
        "device_check", "consent", "demographics", "mood_pre", "instructions", "practice",
        "trial:1", "trial:2", "trial:3", "attention:attn_colour", "trial:4", "trial:5", "trial:6",
        "mood_post", "debrief", "complete",
    ]
    trials = [s for s in steps if s.kind == "trial"]
    assert [(s.position, s.stimulus_id) for s in trials] == list(enumerate(SEQ, start=1))
    practice = steps[5]
    assert (practice.kind, practice.position, practice.stimulus_id) == ("practice", 0, "practice")
    assert [i.id for i in practice.items] == [i.id for i in trials[0].items]
    assert "valence" in [i.id for i in trials[0].items]
    assert [i.id for i in steps[3].items][:2] == ["mood_valence", "mood_arousal"]
    assert steps[1].items[0].id == "consent"


def test_no_practice_and_no_demographics(study):
    s = with_changes(study, demographics=[], measures={"session_start": [], "session_end": []})
    steps = flow.build_steps(s, SEQ[:2], None)
    assert keys(steps) == ["device_check", "consent", "instructions", "trial:1", "trial:2", "attention:attn_colour",
                           "debrief", "complete"]
    # The device check is on by default and goes when the study switches it off.
    off = with_changes(s, device_check={"enabled": False})
    assert keys(flow.build_steps(off, SEQ[:2], None))[0] == "consent"


def test_attention_checks_after_their_clip_and_clamped_to_last(study):
    checks = [
        AttentionCheck(id="first", after_clip=1, text="pick a", options=["a", "b"], correct="a"),
        AttentionCheck(id="late", after_clip=99, text="pick b", options=["a", "b"], correct="b"),
    ]
    s = with_changes(study, attention_checks=[c.model_dump() for c in checks])
    ks = keys(flow.build_steps(s, SEQ[:3], "practice"))
    assert ks[ks.index("trial:1") + 1] == "attention:first"
    assert ks[ks.index("trial:3") + 1] == "attention:late"
    assert ks.index("attention:late") < ks.index("mood_post")


def test_item_order_fixed_unless_randomised(study):
    step = flow.build_steps(study, SEQ, "practice")[5]
    declared = [i.id for i in step.items]
    assert flow.item_order(step, 7) == declared
    s = with_changes(study, measures={"randomize_item_order": True})
    step = flow.build_steps(s, SEQ, "practice")[5]
    a, b = flow.item_order(step, 7), flow.item_order(step, 8)
    assert sorted(a) == sorted(declared) and a != declared and a != b
    assert flow.item_order(step, 7) == a  # reproducible from the seed
    # instruments keep their declared order; the two attribution items stay together, in order
    assert a[-2:] == ["judged_source", "confidence"]
    assert set(a[:3]) == {"valence", "arousal", "dominance"}


def trial_answers(step, **overrides):
    out = {}
    for item in step.items:
        if flow.option_values(item):
            out[item.id] = Answer(flow.option_values(item)[0])
        else:
            out[item.id] = Answer(item.min)
    out.update(overrides)
    return out


def test_valid_trial_answers(study):
    step = flow.build_steps(study, SEQ, "practice")[5]
    assert flow.validate_answers(step, trial_answers(step)) == {}


def test_validation_messages(study):
    step = flow.build_steps(study, SEQ, "practice")[5]
    answers = trial_answers(
        step,
        valence=Answer(10), arousal=Answer(None), dominance=Answer(4.5), emo_fear=Answer("lots"),
        judged_source=Answer("robot"), confidence=Answer(None, untouched=True), extra=Answer(1),
    )
    errors = flow.validate_answers(step, answers)
    assert errors == {
        "valence": "Please give a value from 1 to 9.",
        "arousal": "Please answer this question.",
        "dominance": "Please choose one of the points on the scale (steps of 1).",
        "emo_fear": "Please give a number.",
        "judged_source": "Please choose one of the options shown.",
        "confidence": "Please move the slider to give your answer (or click on it to choose).",
        "extra": "This question is not part of this page.",
    }
    del answers["moved_1"]
    assert flow.validate_answers(step, answers)["moved_1"] == "Please answer this question."


def test_untouched_optional_slider_is_stored_as_untouched(study):
    step = flow.build_steps(study, SEQ, "practice")[5]
    conf = next(i for i in step.items if i.id == "confidence")
    optional = conf.model_copy(update={"required": False})
    step = flow.Step(step.key, step.kind, step.position, step.stimulus_id, (optional,))
    assert flow.validate_answers(step, {"confidence": Answer(None, untouched=True)}) == {}
    assert flow.stored_value(optional, Answer(None, untouched=True)) == (None, None)
    assert flow.validate_answers(step, {"confidence": Answer(70, untouched=True)}) == {
        "confidence": "An untouched slider cannot have a value."}
    assert flow.stored_value(optional, Answer(70)) == (70.0, None)


def test_free_text_length_limit(study):
    from study.instruments import Item

    item = Item(id="comment", type="text", text="Anything else?", required=False, description="comment")
    step = flow.Step("mood_post", "questions", items=(item,))
    assert flow.validate_answers(step, {}) == {}
    assert flow.validate_answers(step, {"comment": Answer("fine")}) == {}
    long = "x" * (flow.TEXT_MAX_CHARS + 1)
    assert flow.validate_answers(step, {"comment": Answer(long)}) == {
        "comment": f"Please keep your answer under {flow.TEXT_MAX_CHARS} characters (it has {len(long)})."}
    assert flow.stored_value(item, Answer("fine")) == (None, "fine")


def test_attention_and_consent(study):
    step = next(s for s in flow.build_steps(study, SEQ, "practice") if s.kind == "attention")
    assert flow.validate_answers(step, {"attn_colour": Answer("Red")}) == {}
    assert flow.attention_passed(step, {"attn_colour": Answer("Blue")})
    assert not flow.attention_passed(step, {"attn_colour": Answer("Red")})
    assert not flow.attention_passed(step, {})
    assert flow.consent_given({"consent": Answer("agree")})
    assert not flow.consent_given({"consent": Answer("decline")})
    consent = flow.build_steps(study, SEQ, None)[1]
    assert flow.validate_answers(consent, {"consent": Answer("maybe")}) == {
        "consent": "Please choose one of the options shown."}


def test_watched_enough(study):
    assert study.playback.min_watched_share == 0.9
    assert flow.watched_enough(0.9, study) and flow.watched_enough(1.0, study)
    assert not flow.watched_enough(0.89, study) and not flow.watched_enough(None, study)
    assert flow.watched_enough(None, with_changes(study, playback={"min_watched_share": 0}))


def test_debrief_names_ai_clips():
    rows = [{"stimulus_id": "h", "source": "human", "title": "Sea"}, {"stimulus_id": "a", "source": "ai", "title": None}]
    assert flow.debrief_info(None, rows, ["a", "h"]) == [
        {"position": 1, "stimulus_id": "a", "title": "a", "source": "ai", "ai_generated": True},
        {"position": 2, "stimulus_id": "h", "title": "Sea", "source": "human", "ai_generated": False},
    ]


def test_shown_label():
    assert [flow.shown_label("human", c) for c in ("none", "true", "swapped")] == [None, "human", "ai"]
    assert flow.shown_label("ai", "swapped") == "human"
