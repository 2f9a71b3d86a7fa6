"""A new kind of step and a new response type, declared in this file alone (plus their renderers),
walked by bots through the real flow into a real database (SQLite and PostgreSQL).

The step kind is a screening question after consent: answering "no" ends the session as
declined, the way consent does. The response type is a 1-5 star rating, asked after every clip.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from study import flow, item_types, simulate, store
from study.instruments import Item, Option, codebook
from study.protocol import load_study

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
SCREEN_OUT_RATE = 0.25

# --------------------------------------------------------------------------- the new response type

STARS = item_types.ItemType(
    name="stars", description="1-5 stars", numeric=True, scaled=True, fixed_range=(1, 5), default_step=1,
    check=item_types.check_number,
    simulate=lambda bot, item, step: flow.Answer(bot.rng.randint(1, 5), response_time_ms=1200),
    data_type=lambda item: "integer",
    allowed_values=lambda item: "1 to 5 stars",
)

# --------------------------------------------------------------------------- the new kind of step

ADULT = Item(id="adult", instrument="screening", type="choice", text="Are you 18 or older?",
             options=[Option(value="yes", label="Yes"), Option(value="no", label="No")],
             description="Screening: adult or not.")


def _screening_steps(plan: flow.Plan) -> list[flow.Step]:
    return [flow.Step("screening", "screening", items=(ADULT,), title="Before we start")]


def _screening_rule(session, step, answers, outcome):
    if answers["adult"].value == "yes":
        return outcome
    return replace(outcome, status="declined", new_index=session.step_index, stamps=("withdrawn_at",))


def _screening_bot(bot, step):
    return {"adult": flow.Answer("no" if bot.rng.random() < SCREEN_OUT_RATE else "yes", response_time_ms=900)}


SCREENING = flow.StepKind("screening", slots={"screening": _screening_steps}, bot_answers=_screening_bot,
                          on_submit=_screening_rule)


# --------------------------------------------------------------------------- their renderers


def _render_screening(engine, state):
    from app_pages import participant

    participant.RENDERERS["demographics"](engine, state)  # a plain items page


@pytest.fixture
def declared():
    from app_pages import participant, questionnaire

    item_types.register(STARS)
    questionnaire.WIDGETS["stars"] = {"widget": "points"}
    flow.register(SCREENING, after="consent")
    participant.RENDERERS["screening"] = _render_screening
    try:
        yield
    finally:
        del participant.RENDERERS["screening"], questionnaire.WIDGETS["stars"]
        flow.unregister("screening")
        item_types.unregister("stars")


@pytest.fixture
def study_file(tmp_path, declared):
    spec = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    spec["id"] = "registry-test"
    spec["stimuli"]["manifest"] = str(DEMO.parent / spec["stimuli"].get("manifest", "manifest.csv"))
    spec["measures"]["custom_items"] = [{
        "id": "stars_rating", "scope": "per_clip", "type": "stars", "text": "How many stars would you give this clip?",
        "description": "Overall rating of the clip in stars.",
    }]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_the_declarations_reach_steps_checks_and_codebook(study_file):
    study = load_study(study_file)
    steps = flow.build_steps(study, ["h1", "a1"], "practice")
    assert [s.key for s in steps[:4]] == ["device_check", "consent", "screening", "demographics"]
    trial = next(s for s in steps if s.key == "trial:1")
    stars = next(i for i in trial.items if i.id == "stars_rating")
    assert (stars.min, stars.max, stars.step) == (1, 5, 1)
    assert flow.validate_answers(trial, {"stars_rating": flow.Answer(6)})["stars_rating"] == \
        "Please give a value from 1 to 5."
    assert "stars" in item_types.numeric_type_names()
    row = codebook(study).set_index("name").loc["stars_rating"]
    assert (row["type"], row["response_type"], row["allowed_values"]) == ("integer", "stars", "1 to 5 stars")
    session = flow.Session(status="in_progress", step_index=2)
    said_no = flow.advance(session, steps, {"adult": flow.Answer("no")})
    assert (said_no.status, said_no.new_index, said_no.stamps) == ("declined", 2, ("withdrawn_at",))
    assert flow.advance(session, steps, {"adult": flow.Answer("yes")}).new_index == 3


def test_an_unknown_item_type_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown item type 'stars'; known types: pictorial9, slider"):
        Item(id="x", text="x", type="stars", description="d")


def test_bots_walk_the_new_kind_and_type_into_the_database(engine, study_file):
    tokens = simulate.simulate(engine, study_file, 24, seed=5)
    assert len(tokens) == 24
    with engine.connect() as conn:
        p = {r.token: r for r in conn.execute(sa.select(store.participants)).all()}
        screening = conn.execute(sa.select(store.responses.c.participant_id, store.responses.c.value_text)
                                 .where(store.responses.c.step_key == "screening")).all()
        stars = conn.execute(sa.select(store.responses.c.participant_id, store.responses.c.value_num,
                                       store.responses.c.step_key)
                             .where(store.responses.c.item_id == "stars_rating")).all()
        trials_of = dict(conn.execute(sa.select(store.trials.c.participant_id, sa.func.count())
                                      .group_by(store.trials.c.participant_id)).all())
    said = {pid: value for pid, value in screening}
    screened_out = [pid for pid, value in said.items() if value == "no"]
    assert screened_out and len(screened_out) < len(said), said  # some of each, seeded
    by_id = {r.id: r for r in p.values()}
    for pid in screened_out:
        assert by_id[pid].status == "declined" and by_id[pid].step_key == "screening"
        assert by_id[pid].withdrawn_at is not None and pid not in trials_of
    completed = [r for r in p.values() if r.status == "completed"]
    assert completed
    assert all(said[r.id] == "yes" for r in completed)
    values = [v for _, v, _ in stars]
    assert values and all(v in (1, 2, 3, 4, 5) for v in values)
    for r in completed:  # one star rating per clip shown, practice included
        assert sum(1 for pid, _, _ in stars if pid == r.id) == trials_of[r.id]


def test_the_new_type_reaches_the_page_through_its_widget(declared):
    """The page draws items in the browser (components/questionnaire): the new type goes there as
    the widget its WIDGETS entry names, with its scale's points, and its answer comes back checked."""
    from app_pages import questionnaire

    item = Item(id="stars_rating", text="How many stars?", type="stars", description="d")
    spec = questionnaire.item_spec(item, 1)
    assert (spec["type"], spec["widget"], spec["points"]) == ("stars", "points", [1, 2, 3, 4, 5])
    answers = questionnaire.answers_from_submission(
        {"page_key": "trial:1", "answers": {"stars_rating": {"value": 4}}}, [item], ["stars_rating"], "trial:1")
    assert answers is not None and answers["stars_rating"].value == 4


def test_the_new_type_reaches_the_browser_questionnaire(declared):
    from app_pages import questionnaire
    from study.instruments import Item

    item = Item(id="stars_rating", text="How many stars?", type="stars", description="d")
    spec = questionnaire.page_data([item], ["stars_rating"], "trial:1", "token")["items"][0]
    assert (spec["widget"], spec["points"]) == ("points", [1, 2, 3, 4, 5])
    sent = {"page_key": "trial:1", "answers": {"stars_rating": {"value": "4", "last_ms": 900}}}
    got = questionnaire.answers_from_submission(sent, [item], ["stars_rating"], "trial:1")
    assert got["stars_rating"].value == 4 and got["stars_rating"].response_time_ms == 900


def test_declarations_are_forgotten_after_the_test():
    assert "screening" not in flow.KINDS and "screening" not in flow.SESSION
    assert "stars" not in item_types.TYPES
