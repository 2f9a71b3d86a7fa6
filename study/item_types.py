"""Response types of items, each declared once: its values, checks, bot answer and codebook type.

An item's `type` names one `ItemType` here. Everything that differs by response type lives in
that declaration: whether values are numbers (stored in value_num, scored, charted), whether it
has a scale (min/max, reverse keying) or options, how an answer is checked, how a simulated
participant answers it, and what the codebook says about it. The participant page keeps its
own table type -> widget (app_pages/questionnaire.py WIDGETS). A new response type is one
`register(ItemType(...))` plus, for the page, one WIDGETS entry.

Pure: no Streamlit, no database.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from study.texts import t

TEXT_MAX_CHARS = 2000


def as_number(value) -> float | None:
    """A finite float from a submitted value, or None (booleans, text, NaN and inf are not numbers)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_number(x) -> str:
    """A number as a participant reads it: 7 not 7.0, 0.5 as 0.5."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


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


# --------------------------------------------------------------------------- checks


def check_number(item, value) -> str | None:
    """Problem with a numeric answer (range and scale step), or None."""
    number = as_number(value)
    low, high, step_size = item.min, item.max, getattr(item, "step", None)
    if number is None:
        return t("error.number")
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            return t("error.range", low=fmt_number(low), high=fmt_number(high))
        if low is not None:
            return t("error.at_least", low=fmt_number(low))
        return t("error.at_most", high=fmt_number(high))
    if step_size:
        steps = (number - (low or 0)) / step_size
        if abs(steps - round(steps)) > 1e-6:
            return t("error.step", step=fmt_number(step_size))
    return None


def check_option(item, value) -> str | None:
    return None if str(value) in option_values(item) else t("error.option")


def check_text(item, value) -> str | None:
    if not isinstance(value, str):
        return t("error.words")
    limit = getattr(item, "max_length", None) or TEXT_MAX_CHARS
    if len(value) > limit:
        return t("error.too_long", limit=limit, length=len(value))
    return None


# --------------------------------------------------------------------------- codebook


def _numeric_data_type(item) -> str:
    whole = item.step is not None and float(item.step).is_integer()
    return "integer" if whole else "number"


def _span(item, with_step: bool = True) -> str:
    if item.min is None and item.max is None:
        return "any number"
    if item.min is not None and item.max is not None:
        span = f"{item.min:g} to {item.max:g}"
    else:
        span = f"at least {item.min:g}" if item.min is not None else f"at most {item.max:g}"
    if item.step and with_step:
        span += f" in steps of {item.step:g}"
    if item.anchors:
        span += " (" + "; ".join(f"{k} = {v}" for k, v in sorted(item.anchors.items())) + ")"
    return span


def _options(item) -> str:
    return "; ".join(f"{o.value} = {o.label}" for o in item.options)


# --------------------------------------------------------------------------- the declarations


@dataclass(frozen=True)
class ItemType:
    """Everything that varies by response type.

    simulate(bot, item, step) -> flow.Answer or None (no answer): how study/simulate.py's bots
    answer, through the bot's methods (rate, count, choose, attend, write).
    """

    name: str
    description: str  # one line for the docs
    numeric: bool = False  # value is a number: value_num, scored, charted
    scaled: bool = False  # needs min and max; may be reverse-keyed
    choice: bool = False  # answered by picking one of its options
    free_text: bool = False  # an optional item may be left blank (stored as given)
    may_be_untouched: bool = False  # a widget that shows a value before it is answered (slider)
    needs_correct: bool = False  # has a correct option (attention checks)
    pictogram: bool = False  # may show a row of drawn pictograms (`Item.pictogram`)
    fixed_range: tuple[float, float] | None = None
    default_step: float | None = None
    check: Callable[[Any, Any], str | None] = check_text
    simulate: Callable[[Any, Any, Any], Any] = lambda bot, item, step: bot.write(item)
    data_type: Callable[[Any], str] = lambda item: "string"
    allowed_values: Callable[[Any], str] = lambda item: "free text"


TYPES: dict[str, ItemType] = {}


def register(kind: ItemType) -> ItemType:
    """Declare a response type (a second declaration of a name replaces the first)."""
    TYPES[kind.name] = kind
    return kind


def get(name: str) -> ItemType:
    try:
        return TYPES[name]
    except KeyError:
        raise KeyError(f"unknown item type {name!r}; known types: {', '.join(TYPES)}") from None


def names() -> list[str]:
    return list(TYPES)


def numeric_type_names() -> frozenset[str]:
    """Response types whose values are numbers (analysis/scoring.py scores only these)."""
    return frozenset(name for name, kind in TYPES.items() if kind.numeric)


def _scale(name: str, description: str, **kw) -> ItemType:
    return ItemType(name=name, description=description, numeric=True, scaled=True, check=check_number,
                    simulate=lambda bot, item, step: bot.rate(item, step), data_type=_numeric_data_type,
                    allowed_values=_span, **kw)


register(_scale("pictorial9", "1-9 with pictures", fixed_range=(1, 9), default_step=1, pictogram=True))
register(_scale("slider", "a slider between min and max (unanswered until moved)", may_be_untouched=True))
register(_scale("likert", "points from min to max (step 1 unless given)", default_step=1))
register(_scale("intensity", "0-8", fixed_range=(0, 8), default_step=1))
register(ItemType("choice", "one of its options", choice=True, check=check_option,
                  simulate=lambda bot, item, step: bot.choose(item, step), allowed_values=_options))
register(ItemType("text", "free text", free_text=True))
register(ItemType("number", "a number typed in", numeric=True, check=check_number,
                  simulate=lambda bot, item, step: bot.count(item), data_type=_numeric_data_type,
                  allowed_values=lambda item: _span(item, with_step=False)))
register(ItemType("attention", "a choice with a correct answer", choice=True, needs_correct=True,
                  check=check_option, simulate=lambda bot, item, step: bot.attend(item),
                  allowed_values=_options))


def unregister(name: str) -> None:
    """Forget a response type (tests that declare their own types clean up with it)."""
    del TYPES[name]
