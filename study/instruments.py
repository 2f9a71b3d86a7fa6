"""Questionnaires declared as data; the codebook is generated from these declarations.

Each item carries everything a page needs to render it and a codebook needs to document it:
a stable id (it becomes a column name), its text, response type, range and anchors or options,
reverse keying and subscale. All wording here was written for Kuleshov; the pictorial scales
use our own drawings (`pictogram_svg`), not the SAM figures.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from study import item_types
from study.errors import UserError
from study.texts import Words, from_catalogue
from study.texts import keys as text_keys

if TYPE_CHECKING:
    import pandas as pd

# A study (protocol.Study) is passed in, never imported: protocol builds on this module.
Study = Any

PICTOGRAM_DIMENSIONS = ("valence", "arousal", "dominance")
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ID_RULE = "must start with a lowercase letter and use only lowercase letters, digits and _ (at most 40 characters)"


class Option(BaseModel):
    """One answer of a choice item: the stored value and the label shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str = Field(description="Value stored in the data (short, stable).")
    label: Words = Field(min_length=1, description="Text shown to the participant (or {language: text}).")

    @field_validator("value", mode="before")
    @classmethod
    def _value_as_text(cls, v: Any) -> Any:
        # YAML turns `value: 1` or `value: yes` into int/bool; the stored value is text either way
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int | float):
            return str(v)
        return v


class Item(BaseModel):
    """One question. Built-in items and custom items in a study file share this shape."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable id; becomes the column name in the data (e.g. `valence`).")
    instrument: str = Field(default="custom", description="Id of the instrument the item belongs to.")
    text: Words = Field(min_length=1, description="The question or statement shown to the participant "
                                                  "(or {language: text}, see `languages`).")
    label: Words | None = Field(default=None, description="Short name for tables and charts (default: the id); "
                                                          "pictorial scales also name their pictures with it.")
    type: str = Field(
        description="Response type, one of: " + "; ".join(f"{k.name} ({k.description})" for k in item_types.TYPES.values()) + "."
    )
    min: float | None = Field(default=None, description="Lowest value (numeric types).")
    max: float | None = Field(default=None, description="Highest value (numeric types).")
    step: float | None = Field(default=None, gt=0, description="Step between values (numeric types).")
    anchors: dict[int, Words] = Field(
        default_factory=dict, description="Labels for some values of the scale, e.g. {1: 'not at all', 7: 'very much'} "
                                          "(each label may be {language: text})."
    )
    options: list[Option] = Field(default_factory=list, description="Answers of a choice or attention item.")
    reverse: bool = Field(default=False, description="Reverse-keyed: scored as min + max - value in scale scores.")
    subscale: str | None = Field(default=None, description="Subscale the item belongs to, if any.")
    required: bool = Field(default=True, description="Whether the participant must answer before going on.")
    description: str = Field(min_length=1, description="One line for the codebook: what the item measures.")
    unit: Words | None = Field(default=None, description="Unit of the value, e.g. 'years' or '%' (or {language: text}).")
    correct: str | None = Field(default=None, description="The correct option value (attention items only).")
    pictogram: Literal["valence", "arousal", "dominance"] | None = Field(
        default=None, description="Which drawn pictogram row a pictorial9 item shows."
    )

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, v: str) -> str:
        if not ID_PATTERN.match(v):
            raise ValueError(f"item id {v!r} {ID_RULE}")
        return v

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in item_types.TYPES:
            raise ValueError(f"unknown item type {v!r}; known types: {', '.join(item_types.names())}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _fill_fixed_ranges(cls, data: Any) -> Any:
        kind = item_types.TYPES.get(data.get("type")) if isinstance(data, dict) else None
        if kind is not None and kind.fixed_range:
            lo, hi = kind.fixed_range
            data = {"min": lo, "max": hi, "step": kind.default_step, **data}
        elif kind is not None and kind.default_step and data.get("step") is None:
            # A Likert scale has discrete points; without a step any decimal would be accepted.
            data = {**data, "step": kind.default_step}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Item:
        kind = item_types.get(self.type)
        problems: list[str] = []
        if kind.fixed_range:
            lo, hi = kind.fixed_range
            if (self.min, self.max) != (lo, hi):
                problems.append(f"a {self.type} item always runs from {lo} to {hi}")
        if kind.scaled:
            if self.min is None or self.max is None:
                problems.append(f"a {self.type} item needs min and max")
        if self.min is not None and self.max is not None and self.min >= self.max:
            problems.append(f"min ({self.min:g}) must be smaller than max ({self.max:g})")
        if kind.numeric:
            if self.options:
                problems.append(f"a {self.type} item takes anchors, not options")
            for value in self.anchors:
                if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                    problems.append(f"anchor {value} lies outside the scale {self.min:g}-{self.max:g}")
        else:
            if self.min is not None or self.max is not None:
                problems.append(f"a {self.type} item has no min or max")
            if self.anchors:
                problems.append(f"a {self.type} item has no anchors")
        if kind.choice:
            values = [o.value for o in self.options]
            if len(values) < 2:
                problems.append(f"a {self.type} item needs at least 2 options")
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                problems.append(f"option values must be distinct (repeated: {', '.join(dupes)})")
        elif self.options:
            problems.append(f"a {self.type} item has no options")
        if kind.needs_correct:
            if self.correct is None:
                problems.append(f"an {self.type} item needs `correct`, the value of the right option")
            elif self.correct not in [o.value for o in self.options]:
                problems.append(f"correct answer {self.correct!r} is not one of the option values")
        elif self.correct is not None:
            problems.append("only attention items have a correct answer")
        if self.reverse and not kind.scaled:
            problems.append(f"a {self.type} item cannot be reverse-keyed")
        if self.pictogram is not None and not kind.pictogram:
            problems.append("only pictorial9 items show a pictogram")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def kind(self) -> item_types.ItemType:
        """The declaration of this item's response type."""
        return item_types.get(self.type)

    @property
    def is_numeric(self) -> bool:
        return self.kind.numeric

    @property
    def display_label(self) -> str:
        return self.label or self.id.replace("_", " ")

    def allowed_values(self) -> str:
        """Plain description of the values this item can take, for the codebook."""
        return self.kind.allowed_values(self)

    def reverse_score(self, value: float) -> float:
        """Value after reverse keying (unchanged for items that are not reverse-keyed)."""
        if not self.reverse:
            return value
        assert self.min is not None and self.max is not None
        return self.min + self.max - value


class Scale(BaseModel):
    """A score computed from several items (after reverse keying)."""

    model_config = ConfigDict(extra="forbid")

    items: list[str] = Field(min_length=1, description="Item ids averaged into the score.")
    description: str = Field(min_length=1, description="One line for the codebook.")
    method: Literal["mean"] = Field(default="mean", description="How the items are combined.")


class Instrument(BaseModel):
    """A named group of items shown together, per clip or once per session."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    description: str
    scope: Literal["per_clip", "session"]
    items: list[Item]
    scales: dict[str, Scale] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _scales_use_own_items(self) -> Instrument:
        own = {i.id for i in self.items}
        for sid, scale in self.scales.items():
            missing = [i for i in scale.items if i not in own]
            if missing:
                raise ValueError(f"scale {sid} uses items not in instrument {self.id}: {missing}")
        return self

    def item(self, item_id: str) -> Item:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(item_id)


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


# ---------------------------------------------------------------------------------------------
# Built-in instruments. Wording is ours; keep ids stable, they are column names in every dataset.

# Their wording (question, anchors, option labels) is in the text catalogue (study/texts.py),
# under item.<id>.text, item.<id>.anchor.<value> and item.<id>.option.<value>; items that share
# a scale's anchors read them from scale.<name>.<value>. Each is a texts.Text holding every
# shipped language; as a plain string it is the English wording (codebook, export).


def _anchor_value(key: str) -> int:
    return int(key.rsplit(".", 1)[1])


def _words(item_id: str, scale: str | None = None) -> dict[str, Any]:
    """text, anchors and options of a built-in item, from the catalogue."""
    anchor_prefix = f"scale.{scale}." if scale else f"item.{item_id}.anchor."
    words: dict[str, Any] = {"text": from_catalogue(f"item.{item_id}.text")}
    anchors = {_anchor_value(k): from_catalogue(k) for k in text_keys(anchor_prefix)}
    if anchors:
        words["anchors"] = anchors
    options = [Option(value=k.rsplit(".", 1)[1], label=from_catalogue(k)) for k in text_keys(f"item.{item_id}.option.")]
    if options:
        words["options"] = options
    return words


def _likert(iid: str, instrument: str, description: str, **kw: Any) -> Item:
    return Item(id=iid, instrument=instrument, type="likert", min=1, max=7, step=1,
                description=description, **_words(iid, scale="agree7"), **kw)


EMOTIONS = ("amusement", "sadness", "fear", "anger", "disgust", "tenderness", "awe", "surprise", "unease")


def _build() -> dict[str, Instrument]:
    sam = Instrument(
        id="sam",
        name="Valence, arousal and dominance (pictorial)",
        description="Three 9-point pictorial ratings of the feeling a clip left, SAM-style, with our own drawings.",
        scope="per_clip",
        items=[
            Item(id="valence", instrument="sam", type="pictorial9", pictogram="valence", label=from_catalogue("item.valence.label"),
                 description="Felt pleasantness of the clip, from unpleasant (1) to pleasant (9).", **_words("valence")),
            Item(id="arousal", instrument="sam", type="pictorial9", pictogram="arousal", label=from_catalogue("item.arousal.label"),
                 description="Felt activation during the clip, from calm (1) to stirred up (9).", **_words("arousal")),
            Item(id="dominance", instrument="sam", type="pictorial9", pictogram="dominance", label=from_catalogue("item.dominance.label"),
                 description="Felt control over one's own reaction, from overpowered (1) to in control (9).", **_words("dominance")),
        ],
    )

    discrete = Instrument(
        id="discrete_emotions",
        name="Discrete emotions",
        description="How strongly each of nine emotions was felt during the clip, 0 (not at all) to 8.",
        scope="per_clip",
        items=[
            Item(id=f"emo_{name}", instrument="discrete_emotions", type="intensity", label=name.capitalize(),
                 description=f"Felt intensity of {name} during the clip (0 = not at all, 8 = extremely strongly).", **_words(f"emo_{name}", scale="intensity"))
            for name in EMOTIONS
        ],
    )

    moved = Instrument(
        id="moved",
        name="Feeling moved",
        description="Being moved or touched by the clip; four statements, one reverse-keyed.",
        scope="per_clip",
        items=[
            _likert("moved_1", "moved", "Agreement that the clip was moving."),
            _likert("moved_2", "moved", "Agreement with feeling touched."),
            _likert("moved_3", "moved", "Agreement with an inner stirring caused by the clip."),
            _likert("moved_4", "moved", "Agreement with feeling untouched; reverse-keyed in the scale score.", reverse=True),
        ],
        scales={"moved": Scale(items=["moved_1", "moved_2", "moved_3", "moved_4"],
                               description="Feeling moved: mean of moved_1-moved_4 after reverse keying moved_4 (1-7).")},
    )

    engagement = Instrument(
        id="engagement",
        name="Narrative engagement",
        description="Attention, presence and understanding while following the clip; six statements, one reverse-keyed.",
        scope="per_clip",
        items=[
            _likert("eng_focus_1", "engagement", "Sustained attention to the clip.", subscale="focus"),
            _likert("eng_focus_2", "engagement", "Mind wandering during the clip; reverse-keyed.", subscale="focus", reverse=True),
            _likert("eng_presence_1", "engagement", "Losing awareness of one's surroundings.", subscale="presence"),
            _likert("eng_presence_2", "engagement", "Sense of being inside the depicted scene.", subscale="presence"),
            _likert("eng_understanding_1", "engagement", "Ease of following the events.", subscale="understanding"),
            _likert("eng_understanding_2", "engagement", "Understanding the reasons behind events.", subscale="understanding"),
        ],
        scales={
            "engagement": Scale(items=["eng_focus_1", "eng_focus_2", "eng_presence_1", "eng_presence_2",
                                       "eng_understanding_1", "eng_understanding_2"],
                                description="Narrative engagement: mean of the six eng_ items after reverse keying eng_focus_2 (1-7)."),
            "engagement_focus": Scale(items=["eng_focus_1", "eng_focus_2"],
                                      description="Focus subscale: mean of eng_focus_1 and reversed eng_focus_2 (1-7)."),
            "engagement_presence": Scale(items=["eng_presence_1", "eng_presence_2"],
                                         description="Presence subscale: mean of eng_presence_1 and eng_presence_2 (1-7)."),
            "engagement_understanding": Scale(items=["eng_understanding_1", "eng_understanding_2"],
                                              description="Understanding subscale: mean of the two eng_understanding items (1-7)."),
        },
    )

    ai_qualities = Instrument(
        id="ai_qualities",
        name="Qualities said to be missing from AI video",
        description="Physical plausibility, consistency, meaningful detail and coherent story, each rated 1-7.",
        scope="per_clip",
        items=[
            _likert("aiq_physics", "ai_qualities", "Physical plausibility of motion and behaviour.", label="Physical plausibility"),
            _likert("aiq_consistency", "ai_qualities", "Consistency of people and objects over time.", label="Consistency"),
            _likert("aiq_detail", "ai_qualities", "Details that feel meaningful rather than decorative.", label="Meaningful detail"),
            _likert("aiq_story", "ai_qualities", "Coherence of the story or point of the clip.", label="Coherent story"),
        ],
        scales={"ai_qualities": Scale(items=["aiq_physics", "aiq_consistency", "aiq_detail", "aiq_story"],
                                      description="Mean of the four ai_qualities items (1-7); higher = fewer typical AI flaws.")},
    )

    attribution = Instrument(
        id="attribution",
        name="Human or AI?",
        description="Whether the participant thinks the clip was made by people or generated by AI, and how sure they are.",
        scope="per_clip",
        items=[
            Item(id="judged_source", instrument="attribution", type="choice", label="Judged source",
                 description="The participant's guess at the clip's source.", **_words("judged_source")),
            Item(id="confidence", instrument="attribution", type="slider", min=50, max=100, step=1, unit="%",
                 label="Confidence", description="Confidence in the source judgment, from 50 % (a guess) to 100 % (certain).", **_words("confidence")),
        ],
    )

    mood = Instrument(
        id="mood",
        name="Mood check",
        description="A short check of current mood, asked at the start and at the end of a session.",
        scope="session",
        items=[
            Item(id="mood_valence", instrument="mood", type="pictorial9", pictogram="valence", label=from_catalogue("item.mood_valence.label"),
                 description="Current pleasantness of mood, 1 (unpleasant) to 9 (pleasant).", **_words("mood_valence")),
            Item(id="mood_arousal", instrument="mood", type="pictorial9", pictogram="arousal", label=from_catalogue("item.mood_arousal.label"),
                 description="Current activation, 1 (calm) to 9 (stirred up).", **_words("mood_arousal")),
            _likert("mood_tense", "mood", "Current tension.", label="Tense"),
            _likert("mood_tired", "mood", "Current tiredness.", label="Tired"),
        ],
    )

    demographics = Instrument(
        id="demographics",
        name="About you",
        description="A few questions about the participant, asked once; a study picks which ones.",
        scope="session",
        items=[
            Item(id="age", instrument="demographics", type="number", min=18, max=110, step=1, unit=from_catalogue("item.age.unit"),
                 label="Age", description="Age in whole years.", **_words("age")),
            Item(id="gender", instrument="demographics", type="choice", label="Gender",
                 description="Self-described gender.", **_words("gender")),
            Item(id="film_watching_frequency", instrument="demographics", type="choice", label="Film watching",
                 description="How often the participant watches films or series.", **_words("film_watching_frequency")),
            Item(id="ai_video_familiarity", instrument="demographics", type="choice", label="AI video familiarity",
                 description="Prior exposure to AI-generated video.", **_words("ai_video_familiarity")),
            Item(id="first_language", instrument="demographics", type="text", label="First language",
                 required=False,
                 description="Self-reported first language (free text, optional).", **_words("first_language")),
        ],
    )

    built = [sam, discrete, moved, engagement, ai_qualities, attribution, mood, demographics]
    return {ins.id: ins for ins in built}


INSTRUMENTS: dict[str, Instrument] = _build()
DEFAULT_DEMOGRAPHICS = ["age", "gender", "film_watching_frequency"]

# Columns of the trial table that are not answers (analysis/load.py `trial_table`).
TRIAL_COLUMNS: list[dict[str, str]] = [
    {"name": "participant_id", "label": "Participant", "type": "string", "allowed_values": "pseudonym, e.g. p0001",
     "missing": "never missing", "description": "Pseudonymous participant id (not the Prolific id or the URL token)."},
    {"name": "stimulus_id", "label": "Clip", "type": "string", "allowed_values": "an id from the stimulus manifest",
     "missing": "never missing", "description": "Id of the clip shown in this trial (manifest column id)."},
    {"name": "source", "label": "True source", "type": "string", "allowed_values": "human = made by people; ai = generated by AI",
     "missing": "never missing", "description": "Who actually made the clip, from the manifest."},
    {"name": "pair_id", "label": "Matched pair", "type": "string", "allowed_values": "a pair id from the manifest",
     "missing": "empty = clip belongs to no matched pair", "description": "Ties an AI clip to the human clip it was generated to match."},
    {"name": "label_condition", "label": "Source label condition", "type": "string",
     "allowed_values": "none = no label shown; true = the true source was shown; swapped = the opposite source was shown",
     "missing": "never missing", "description": "Between-subjects condition: which source label the participant saw with each clip."},
    {"name": "position", "label": "Position", "type": "integer", "allowed_values": "1 to the number of clips shown",
     "missing": "never missing", "description": "1-based position of the clip in the participant's sequence (practice excluded)."},
    {"name": "watched_share", "label": "Share watched", "type": "number", "allowed_values": "0 to 1",
     "missing": "empty = playback not recorded", "description": "Share of the clip's distinct seconds actually played."},
    {"name": "is_pilot", "label": "Pilot", "type": "boolean", "allowed_values": "true; false",
     "missing": "never missing", "description": "Whether the participant took part as a pilot/test run."},
]
RESERVED_NAMES = frozenset(c["name"] for c in TRIAL_COLUMNS) | {
    "step", "instrument_id", "item_id", "value", "value_text", "response_time_ms", "shown_order", "status",
}

CODEBOOK_COLUMNS = ["name", "label", "type", "response_type", "unit", "allowed_values", "missing",
                    "instrument", "scope", "reverse", "subscale", "description"]


def get_instrument(instrument_id: str) -> Instrument:
    """The built-in instrument with this id; UserError listing the known ids otherwise."""
    try:
        return INSTRUMENTS[instrument_id]
    except KeyError:
        raise UserError(
            f"unknown instrument {instrument_id!r}; known instruments: {', '.join(INSTRUMENTS)}"
        ) from None


def builtin_item(item_id: str) -> Item | None:
    for ins in INSTRUMENTS.values():
        for it in ins.items:
            if it.id == item_id:
                return it
    return None


def builtin_item_ids() -> set[str]:
    return {it.id for ins in INSTRUMENTS.values() for it in ins.items}


def builtin_scale_ids() -> set[str]:
    return {sid for ins in INSTRUMENTS.values() for sid in ins.scales}


def attention_item(check: Any) -> Item:
    """An attention check from the study file as an `attention` item (options are their own values)."""
    # The stored value is the option's wording in the study's default language, whichever
    # language the participant saw it in.
    return Item(
        id=check.id, instrument="attention", type="attention", text=check.text, label=f"Attention check {check.id}",
        options=[Option(value=str(o), label=o) for o in check.options], correct=check.correct,
        description=f"Attention check shown after clip {check.after_clip}; correct answer: {check.correct}.",
    )


def items_for(study: Study, scope: str) -> list[Item]:
    """Items a study asks in one scope, in declared order: built-in instruments, then custom items.

    scope: 'per_clip', 'session_start', 'session_end', 'demographics' or 'attention'.
    """
    if scope == "demographics":
        demo = INSTRUMENTS["demographics"]
        return [demo.item(i) for i in study.demographics]
    if scope == "attention":
        return [attention_item(c) for c in study.attention_checks]
    if scope not in ("per_clip", "session_start", "session_end"):
        raise ValueError(f"unknown scope {scope!r}")
    items = [it for entry in getattr(study.measures, scope) for it in chosen_items(entry)]
    items += [_plain_item(c) for c in study.measures.custom_items if c.scope == scope]
    return items


# An entry of measures.session_start / per_clip / session_end is an instrument id (all its
# items, in declared order) or a choice {name, items} (those items, in that order). Both are
# read only through these three functions.

def entry_name(entry: Any) -> str:
    """The instrument id of a measures entry."""
    return entry if isinstance(entry, str) else entry.name


def entry_item_ids(entry: Any) -> list[str] | None:
    """The item ids a measures entry chose, or None when it asks the whole instrument."""
    return None if isinstance(entry, str) else list(entry.items)


def chosen_items(entry: Any) -> list[Item]:
    """The built-in items a measures entry asks, in the order it asks them."""
    instrument = get_instrument(entry_name(entry))
    ids = entry_item_ids(entry)
    return list(instrument.items) if ids is None else [instrument.item(i) for i in ids]


def _entries(study: Study) -> list[Any]:
    m = study.measures
    return [*m.session_start, *m.per_clip, *m.session_end]


def unscored_scales(study: Study) -> dict[str, list[str]]:
    """Declared scales a study does not score, because it asks only some of their items:
    scale id -> the item ids it leaves out. A mean of some items is not the declared scale."""
    asked = {it.id for entry in _entries(study) for it in chosen_items(entry)}
    out: dict[str, list[str]] = {}
    for iid in dict.fromkeys(entry_name(e) for e in _entries(study)):
        for sid, scale in get_instrument(iid).scales.items():
            missing = [i for i in scale.items if i not in asked]
            if missing:
                out[sid] = missing
    return out


def subset_note(study: Study, instrument_id: str) -> str:
    """A codebook sentence saying which items of a built-in instrument a study asked ('' = all)."""
    instrument = INSTRUMENTS.get(instrument_id)
    if instrument is None:
        return ""
    asked = [it.id for e in _entries(study) if entry_name(e) == instrument_id for it in chosen_items(e)]
    if not asked or set(asked) >= {it.id for it in instrument.items}:
        return ""
    left_out = [it.id for it in instrument.items if it.id not in asked]
    unscored = [sid for sid, missing in unscored_scales(study).items() if sid in instrument.scales]
    note = (f" This study asked {len(set(asked))} of the {len(instrument.items)} items of {instrument_id} "
            f"({', '.join(dict.fromkeys(asked))}; not asked: {', '.join(left_out)})")
    if unscored:
        note += f"; so the scale score{'s' if len(unscored) > 1 else ''} {', '.join(unscored)} {'are' if len(unscored) > 1 else 'is'} not computed"
    return note + "."


def _plain_item(custom: Any) -> Item:
    """A custom item from the study file without its study-only `scope` field (its translations kept)."""
    return Item.model_validate({name: getattr(custom, name) for name in Item.model_fields})


_STUDY_SCOPES = ("demographics", "session_start", "per_clip", "session_end", "attention")


def all_items(study: Study | None = None) -> list[Item]:
    """Every built-in item (study None), or every distinct item a study asks, in session order."""
    if study is None:
        return [it for ins in INSTRUMENTS.values() for it in ins.items]
    seen: dict[str, Item] = {}
    for scope in _STUDY_SCOPES:
        for it in items_for(study, scope):
            seen.setdefault(it.id, it)
    return list(seen.values())


def scales_for(study: Study | None = None) -> dict[str, Scale]:
    """Scale scores of the instruments a study uses (all built-in scales when study is None)."""
    if study is None:
        return {sid: sc for ins in INSTRUMENTS.values() for sid, sc in ins.scales.items()}
    ids = list(dict.fromkeys(entry_name(e) for e in _entries(study)))
    # a scale whose items the study asked only in part is not scored (unscored_scales)
    skipped = unscored_scales(study)
    return {sid: sc for iid in ids for sid, sc in get_instrument(iid).scales.items() if sid not in skipped}


def _item_scopes(study: Study | None) -> dict[str, list[str]]:
    if study is None:
        return {it.id: [ins.scope] for ins in INSTRUMENTS.values() for it in ins.items}
    scopes: dict[str, list[str]] = {}
    for scope in _STUDY_SCOPES:
        for it in items_for(study, scope):
            scopes.setdefault(it.id, []).append(scope)
    return scopes


def _missing(item: Item) -> str:
    if item.kind.may_be_untouched:
        return "empty = not answered (a slider left untouched is recorded as missing, never as its start value)"
    if item.required:
        return "empty = clip/session not reached or trial skipped after a playback error"
    return "empty = not answered (optional item)"


def codebook(study: Study | None = None) -> pd.DataFrame:
    """One row per variable of the trial table and the session answers, generated from the declarations."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for col in TRIAL_COLUMNS:
        rows.append({**col, "response_type": "", "unit": "", "instrument": "", "scope": "trial",
                     "reverse": False, "subscale": ""})
    scopes = _item_scopes(study)
    notes = {} if study is None else {iid: subset_note(study, iid) for iid in INSTRUMENTS}
    for it in all_items(study):
        rows.append({
            "name": it.id, "label": it.display_label, "type": it.kind.data_type(it), "response_type": it.type,
            "unit": it.unit or "", "allowed_values": it.allowed_values(), "missing": _missing(it),
            "instrument": it.instrument, "scope": ", ".join(scopes.get(it.id, [])), "reverse": it.reverse,
            "subscale": it.subscale or "",
            "description": f"{it.description} Question: \u201c{it.text}\u201d{notes.get(it.instrument, '')}",
        })
    items = {it.id: it for it in all_items(None if study is None else study)}
    for sid, scale in scales_for(study).items():
        members = [items[i] for i in scale.items if i in items]
        lo = min(m.min for m in members if m.min is not None)
        hi = max(m.max for m in members if m.max is not None)
        owner = next(ins.id for ins in INSTRUMENTS.values() if sid in ins.scales)
        rows.append({
            "name": sid, "label": sid.replace("_", " ").capitalize() + " (scale score)", "type": "number",
            "response_type": "scale_mean", "unit": "", "allowed_values": f"{_fmt(lo)} to {_fmt(hi)}",
            "missing": "empty = no item of the scale answered", "instrument": owner,
            "scope": INSTRUMENTS[owner].scope, "reverse": False, "subscale": "",
            "description": scale.description,
        })
    return pd.DataFrame(rows, columns=CODEBOOK_COLUMNS)


def write_codebook(study: Any, out: str | None) -> int:
    """The codebook as CSV, to `out` or to stdout (`kuleshov codebook`, see protocol.cli_codebook)."""
    table = codebook(study)
    if out:
        from study.config import check_writable

        check_writable(out, "codebook")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(f"wrote {len(table)} variables to {out}")
    else:
        buf = io.StringIO()
        table.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
        sys.stdout.write(buf.getvalue())
    return 0


# ---------------------------------------------------------------------------------------------
# Pictograms: simple original line drawings, one row of nine per dimension.

_STROKE = 'stroke="#333" stroke-width="3" fill="none" stroke-linecap="round" stroke-linejoin="round"'


def pictogram_svg(dimension: str, level: int) -> str:
    """An SVG figure for one point (1-9) of a pictorial scale.

    valence: a round face whose mouth bends from a frown (1) to a smile (9);
    arousal: a figure with a jagged burst that grows from none (1) to large (9);
    dominance: a figure that grows from small (1) to filling the frame (9).
    """
    if dimension not in PICTOGRAM_DIMENSIONS:
        raise ValueError(f"unknown pictogram {dimension!r}; use one of {', '.join(PICTOGRAM_DIMENSIONS)}")
    if not isinstance(level, int) or not 1 <= level <= 9:
        raise ValueError(f"pictogram level must be a whole number from 1 to 9, got {level!r}")
    body = {"valence": _valence, "arousal": _arousal, "dominance": _dominance}[dimension](level)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100" width="64" height="64" '
        f'role="img" aria-label="{dimension} {level} of 9">{body}</svg>'
    )


@functools.lru_cache(maxsize=64)
def pictogram_data_uri(dimension: str, level: int) -> str:
    """The pictogram as a data: URI, usable as an <img> src or in markdown (built once: every
    run of a SAM page asks for all 27)."""
    raw = pictogram_svg(dimension, level).encode()
    return "data:image/svg+xml;base64," + base64.b64encode(raw).decode()


def _valence(level: int) -> str:
    bend = (level - 5) * 4.5  # control point below the corners = smile, above = frown
    brow_tilt = (5 - level) * 0.8
    return (
        f'<circle cx="50" cy="50" r="40" {_STROKE}/>'
        '<circle cx="36" cy="40" r="4" fill="#333"/><circle cx="64" cy="40" r="4" fill="#333"/>'
        f'<path d="M29 {31 - brow_tilt:.1f} L42 {31 + brow_tilt:.1f} M58 {31 + brow_tilt:.1f} L71 {31 - brow_tilt:.1f}" {_STROKE}/>'
        f'<path d="M32 66 Q50 {66 + bend:.1f} 68 66" {_STROKE}/>'
    )


def _figure(cx: float, base: float, height: float) -> str:
    """A plain stick figure standing on y=base."""
    head_r = height * 0.14
    neck = base - height + 2 * head_r
    hip = base - height * 0.38
    arm_y = neck + height * 0.12
    half = height * 0.22
    return (
        f'<circle cx="{cx:.1f}" cy="{neck - head_r:.1f}" r="{head_r:.1f}" {_STROKE}/>'
        f'<path d="M{cx:.1f} {neck:.1f} L{cx:.1f} {hip:.1f} M{cx - half:.1f} {arm_y + half * 0.6:.1f} '
        f'L{cx:.1f} {arm_y:.1f} L{cx + half:.1f} {arm_y + half * 0.6:.1f} M{cx - half * 0.7:.1f} {base:.1f} '
        f'L{cx:.1f} {hip:.1f} L{cx + half * 0.7:.1f} {base:.1f}" {_STROKE}/>'
    )


def _arousal(level: int) -> str:
    parts = []
    if level > 1:
        spikes = 6 + level
        outer = 8 + level * 4.5
        inner = outer * 0.62
        points = []
        for k in range(2 * spikes):
            r = outer if k % 2 == 0 else inner
            a = math.pi * k / spikes
            points.append(f"{50 + r * math.cos(a):.1f},{46 + r * math.sin(a):.1f}")
        parts.append(f'<polygon points="{" ".join(points)}" fill="#f4c542" stroke="#b8860b" stroke-width="1.5"/>')
    parts.append(_figure(50, 90, 66))
    return "".join(parts)


def _dominance(level: int) -> str:
    height = 22 + level * 8  # 30 at level 1, 94 at level 9
    return '<path d="M6 96 L94 96" stroke="#999" stroke-width="2"/>' + _figure(50, 95, height)
