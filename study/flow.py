"""A participant's session as declared data: the ordered steps, and what counts as a valid answer.

Pure: no Streamlit, no database. study.store walks a participant through `build_steps(...)`
one step per transaction; the participant page renders `Step`s; simulate.py's bots answer
them. Step keys are stable and stored with every response:

    consent, demographics, mood_pre, instructions, practice, trial:<pos>, attention:<id>,
    mood_post, debrief, complete
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

TEXT_TYPES = ("text", "free_text", "textarea")
TEXT_MAX_CHARS = 2000
CONSENT_AGREE = "agree"
CONSENT_DECLINE = "decline"

# Step kinds that collect nothing: submitting them only moves the participant on.
NO_DATA_KINDS = ("instructions", "debrief", "complete")


@dataclass(frozen=True)
class Step:
    key: str
    kind: str  # consent | demographics | questions | instructions | practice | trial | attention | debrief | complete
    position: int | None = None  # clip position (0 = practice, 1.. main clips)
    stimulus_id: str | None = None
    items: tuple[Any, ...] = ()
    title: str = ""
    randomize_items: bool = False

    @property
    def has_clip(self) -> bool:
        return self.kind in ("practice", "trial")

    @property
    def collects_data(self) -> bool:
        return self.kind not in NO_DATA_KINDS


@dataclass(frozen=True)
class Answer:
    """One answer as the page gives it. `untouched`: a slider the participant never moved."""

    value: float | str | None
    untouched: bool = False
    response_time_ms: int | None = None
    shown_position: int | None = None


# --------------------------------------------------------------------------- steps


def _items(study, scope: str) -> tuple:
    from study.instruments import items_for

    return tuple(items_for(study, scope))


def consent_item(study) -> Any:
    from study.instruments import Item, Option

    agree = getattr(study.consent, "agree_label", None) or "I agree to take part"
    return Item(
        id="consent", instrument="consent", type="choice", text="Do you agree to take part in this study?",
        label="Consent",
        options=[Option(value=CONSENT_AGREE, label=agree), Option(value=CONSENT_DECLINE, label="I do not agree")],
        description="Consent given (agree) or refused (decline) on the first page.",
    )


def build_steps(study, sequence: list[str], practice_id: str | None) -> list[Step]:
    """Every step of one participant's session, in order, for their planned clip sequence.

    Attention checks come right after the clip whose position is their `after_clip`
    (1-based); a check placed after the last clip, or beyond it, comes after the last clip.
    Steps with no items (e.g. no demographics asked) are left out.
    """
    from study.instruments import attention_item

    randomize = bool(study.measures.randomize_item_order)
    steps: list[Step] = [Step("consent", "consent", items=(consent_item(study),), title="Consent")]
    demo = _items(study, "demographics")
    if demo:
        steps.append(Step("demographics", "demographics", items=demo, title="About you"))
    mood_pre = _items(study, "session_start")
    if mood_pre:
        steps.append(Step("mood_pre", "questions", items=mood_pre, title="How do you feel right now?",
                          randomize_items=randomize))
    steps.append(Step("instructions", "instructions", title="Instructions"))
    per_clip = _items(study, "per_clip")
    if practice_id:
        steps.append(Step("practice", "practice", position=0, stimulus_id=practice_id, items=per_clip,
                          title="Practice clip", randomize_items=randomize))
    n = len(sequence)
    checks_after: dict[int, list] = {}
    for check in study.attention_checks:
        checks_after.setdefault(min(max(int(check.after_clip), 1), n) if n else 0, []).append(check)
    for check in checks_after.pop(0, []):
        steps.append(Step(f"attention:{check.id}", "attention", items=(attention_item(check),),
                          title="A quick check"))
    for pos, stimulus_id in enumerate(sequence, start=1):
        steps.append(Step(f"trial:{pos}", "trial", position=pos, stimulus_id=stimulus_id, items=per_clip,
                          title=f"Clip {pos} of {n}", randomize_items=randomize))
        for check in checks_after.get(pos, []):
            steps.append(Step(f"attention:{check.id}", "attention", items=(attention_item(check),),
                              title="A quick check"))
    mood_post = _items(study, "session_end")
    if mood_post:
        steps.append(Step("mood_post", "questions", items=mood_post, title="How do you feel now?",
                          randomize_items=randomize))
    steps.append(Step("debrief", "debrief", title="About the clips you saw"))
    steps.append(Step("complete", "complete", title="Thank you"))
    return steps


def participant_seed(study_seed: int, participant_number: int) -> int:
    """The seed for one participant's orderings: reproducible from the study seed and their number."""
    return int(study_seed) * 1_000_003 + int(participant_number)


def item_order(step: Step, participant_seed: int) -> list[str]:
    """Item ids in the order to show them (stored with the trial, so the data keep stable ids).

    With randomisation on, items are shuffled within each instrument, and instruments keep
    their declared order: a judgment and its confidence rating (two items) stay together and
    in order, and a scale's items stay on one block.
    """
    ids = [item.id for item in step.items]
    if not step.randomize_items:
        return ids
    rng = random.Random(f"{participant_seed}:{step.key}")
    blocks: dict[str, list[str]] = {}
    for item in step.items:
        blocks.setdefault(item.instrument, []).append(item.id)
    ordered: list[str] = []
    for block in blocks.values():
        if len(block) > 2:
            block = block[:]
            rng.shuffle(block)
        ordered.extend(block)
    return ordered


# --------------------------------------------------------------------------- answers


def option_values(item) -> list[str]:
    """Allowed values of a choice item, as strings (options may be strings, (value, label) pairs or dicts)."""
    values = []
    for opt in getattr(item, "options", None) or ():
        if isinstance(opt, dict):
            opt = opt.get("value", opt.get("id"))
        elif isinstance(opt, (tuple, list)):
            opt = opt[0]
        elif hasattr(opt, "value"):
            opt = opt.value
        values.append(str(opt))
    return values


def is_numeric(item) -> bool:
    from study.instruments import NUMERIC_TYPES

    return item.type in NUMERIC_TYPES


def as_number(value) -> float | None:
    """A finite float from a submitted value, or None (booleans, text, NaN and inf are not numbers)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def validate_answers(step: Step, answers: dict[str, Answer]) -> dict[str, str]:
    """Problems with a page's answers, keyed by item id, each a sentence for the participant.

    Empty dict: the answers may be stored. An unmoved slider is accepted (stored as untouched,
    no value) only where the item is optional.
    """
    errors: dict[str, str] = {}
    by_id = {item.id: item for item in step.items}
    for item_id in answers:
        if item_id not in by_id:
            errors[item_id] = "This question is not part of this page."
    for item in step.items:
        answer = answers.get(item.id)
        required = bool(getattr(item, "required", True))
        value = None if answer is None else answer.value
        if isinstance(value, str) and not value.strip() and not (item.type in TEXT_TYPES and not required):
            value = None
        if answer is not None and answer.untouched:
            if required:
                errors[item.id] = "Please move the slider to give your answer (or click on it to choose)."
            elif value is not None:
                errors[item.id] = "An untouched slider cannot have a value."
            continue
        if value is None:
            if required:
                errors[item.id] = "Please answer this question."
            continue
        if is_numeric(item):
            number = as_number(value)
            low, high, step_size = item.min, item.max, getattr(item, "step", None)
            if number is None:
                errors[item.id] = "Please give a number."
            elif (low is not None and number < low) or (high is not None and number > high):
                if low is not None and high is not None:
                    errors[item.id] = f"Please give a value from {_fmt(low)} to {_fmt(high)}."
                elif low is not None:
                    errors[item.id] = f"Please give a value of at least {_fmt(low)}."
                else:
                    errors[item.id] = f"Please give a value of at most {_fmt(high)}."
            elif step_size and abs((number - (low or 0)) / step_size - round((number - (low or 0)) / step_size)) > 1e-6:
                errors[item.id] = f"Please choose one of the points on the scale (steps of {_fmt(step_size)})."
            continue
        allowed = option_values(item)
        if allowed:
            if str(value) not in allowed:
                errors[item.id] = "Please choose one of the options shown."
            continue
        if not isinstance(value, str):
            errors[item.id] = "Please answer in words."
            continue
        limit = getattr(item, "max_length", None) or TEXT_MAX_CHARS
        if len(value) > limit:
            errors[item.id] = f"Please keep your answer under {limit} characters (it has {len(value)})."
    return errors


def _fmt(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def stored_value(item, answer: Answer) -> tuple[float | None, str | None]:
    """(value_num, value_text) for the responses table: numbers as numbers, everything else as text."""
    if answer.untouched or answer.value is None:
        return None, None
    if is_numeric(item):
        return as_number(answer.value), None
    if isinstance(answer.value, (int, float)) and not isinstance(answer.value, bool) and not option_values(item):
        return float(answer.value), None
    return None, str(answer.value)


def attention_passed(step: Step, answers: dict[str, Answer]) -> bool:
    """True when every attention item on the step was answered with its correct option."""
    for item in step.items:
        correct = getattr(item, "correct", None)
        if correct is None:
            continue
        answer = answers.get(item.id)
        if answer is None or answer.value is None or str(answer.value) != str(correct):
            return False
    return True


def consent_given(answers: dict[str, Answer]) -> bool:
    answer = answers.get("consent")
    return answer is not None and str(answer.value) == CONSENT_AGREE


def watched_enough(watched_share: float | None, study) -> bool:
    """Has the clip been watched far enough for its ratings to open (playback.min_watched_share)?"""
    needed = float(study.playback.min_watched_share or 0.0)
    return needed <= 0 or (watched_share is not None and watched_share + 1e-9 >= needed)


def shown_label(source: str | None, label_condition: str) -> str | None:
    """The source label shown with a clip: none, the true source, or the opposite one (swapped)."""
    if label_condition == "true":
        return source
    if label_condition == "swapped" and source in ("human", "ai"):
        return "ai" if source == "human" else "human"
    return None


def debrief_info(study, stimuli_rows, sequence: list[str]) -> list[dict]:
    """The clips this participant saw, in order, saying which were AI-generated.

    `stimuli_rows`: mapping stimulus_id -> row (dict or object with source/title), or a list of
    such rows with a `stimulus_id` or `id`.
    """
    if not isinstance(stimuli_rows, dict):
        stimuli_rows = {_get(r, "stimulus_id") or _get(r, "id"): r for r in stimuli_rows}
    out = []
    for pos, sid in enumerate(sequence, start=1):
        row = stimuli_rows.get(sid)
        source = _get(row, "source") if row is not None else None
        out.append({
            "position": pos,
            "stimulus_id": sid,
            "title": (_get(row, "title") if row is not None else None) or sid,
            "source": source,
            "ai_generated": source == "ai",
        })
    return out


def _get(row, name):
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)
