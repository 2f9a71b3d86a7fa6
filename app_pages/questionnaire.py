"""Python side of the questionnaire component (components/questionnaire, Streamlit components v2).

One component renders a whole page of items in the browser and sends the page's answers in one
message when the participant presses Continue. Before it, every click on a Streamlit radio
button reran the whole page script (about 20 runs per clip page); now a page costs one run.

The browser owns what it knows best: which item was answered when (first and last response
time, number of changes) and what is being typed (kept in localStorage until the server has
stored the page, so a reload loses nothing). The server stays the only judge of what is stored:
the answers go through the same `flow.validate_answers` + `store.submit_step` path as before.

Pure parts, tested without a browser: `page_data` (items -> the JSON the browser renders) and
`answers_from_submission` (what the browser sent -> `flow.Answer`s).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from app_pages import browser_component, component_data

from study import texts as catalogue
from study import item_types
from study.flow import TEXT_MAX_CHARS, Answer

# The browser's widget for each response type (study/item_types.py declares the types; this is
# the page's side of them). "points": a row of buttons, one per scale point; with `grid`, a run
# of such items on one scale is drawn as one compact grid; with pictures, the picture is the button.
WIDGETS: dict[str, dict[str, Any]] = {
    "pictorial9": {"widget": "points", "pictures": True},
    "likert": {"widget": "points"},
    "intensity": {"widget": "points", "grid": True},
    "slider": {"widget": "slider"},
    "choice": {"widget": "choice"},
    "attention": {"widget": "choice"},
    "number": {"widget": "number"},
    "text": {"widget": "text"},
}


def widget(item) -> dict[str, Any]:
    try:
        return WIDGETS[item.type]
    except KeyError:
        raise KeyError(f"no questionnaire widget for item type {item.type!r} (add it to WIDGETS)") from None
# A run of at least this many intensity items on one scale is shown as one grid.
GRID_MIN_ITEMS = 2

# The words the browser shows, by stable id, from the text catalogue (keys questionnaire.*).
# Their {placeholders} are filled in by the browser, so the wording goes out unformatted.
TEXT_PREFIX = "questionnaire."


def ui_texts(lang: str | None = None) -> dict[str, str]:
    """The component's words in `lang` (default: the active language; English where the language
    lacks one), unformatted."""
    lang = lang or catalogue.current()
    english = catalogue.catalogue(catalogue.DEFAULT_LANG)
    local = catalogue.catalogue(lang) if lang != catalogue.DEFAULT_LANG else {}
    # Keyed by the catalogues themselves (kept in the value, so their ids stay theirs): a
    # catalogue read again (a test's cache_clear) is a new entry, never a stale one.
    key = (lang, id(english), id(local))
    hit = _UI_TEXTS.get(key)
    if hit is None or hit[0] is not english or hit[1] is not local:
        words = {key[len(TEXT_PREFIX):]: local.get(key, english[key]) for key in catalogue.keys(TEXT_PREFIX)}
        if len(_UI_TEXTS) >= 64:
            _UI_TEXTS.clear()
        hit = _UI_TEXTS[key] = (english, local, words)
    return dict(hit[2])


_UI_TEXTS: dict[tuple, tuple[dict, dict, dict[str, str]]] = {}


_questionnaire = browser_component("kuleshov.questionnaire", "questionnaire", "questionnaire.html",
                                   css=("questionnaire.css",), js=("questionnaire.js",))


# --------------------------------------------------------------------------- items -> browser


def _num(x: Any) -> int | float | None:
    if x is None:
        return None
    x = float(x)
    return int(x) if x.is_integer() else x


def scale_points(item) -> list[int | float]:
    """Every value a discrete scale offers, from min to max in steps (1 when no step is set)."""
    step = float(item.step or 1)
    low, high = float(item.min), float(item.max)
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    return [_num(round(low + k * step, 6)) for k in range(count)]


def item_spec(item, position: int) -> dict[str, Any]:
    """One item as the browser renders it (everything JSON, no markup: the browser escapes text)."""
    kind = item_types.get(item.type)
    shape = widget(item)
    spec: dict[str, Any] = {
        "id": item.id,
        "type": item.type,
        "widget": shape["widget"],
        "text": catalogue.local(item.text),  # in the page's language (texts.active)
        # Names each picture for a screen reader: "valence 3 of 9, very unpleasant".
        "label": (catalogue.local(item.label) or item.pictogram or item.id.replace("_", " ")).lower(),
        "required": bool(getattr(item, "required", True)),
        "position": position,
        "min": _num(item.min),
        "max": _num(item.max),
        "step": _num(item.step),
        "anchors": {str(_num(k)): catalogue.local(v) for k, v in sorted((item.anchors or {}).items())},
        "options": [{"value": o.value, "label": catalogue.local(o.label)} for o in (item.options or ())],
        "unit": catalogue.local(item.unit),
        "max_length": getattr(item, "max_length", None) or (TEXT_MAX_CHARS if kind.free_text else None),
        "pictograms": None,
        "points": None,
        "grid": None,
    }
    if shape["widget"] == "points":
        spec["points"] = scale_points(item)
    if shape.get("pictures") and item.pictogram:
        from study.instruments import pictogram_data_uri

        spec["pictograms"] = {str(v): pictogram_data_uri(item.pictogram, int(v)) for v in spec["points"]}
    return spec


def grid_ids(items: list) -> list[str | None]:
    """Per item (in the order shown), the grid it is drawn in, or None.

    A run of consecutive intensity items of one instrument on the same scale and anchors (the
    discrete emotions) is one compact grid: one row per item, the scale's anchors once on top.
    """
    def scale(item):
        if not widget(item).get("grid"):
            return None
        return item.instrument, tuple(scale_points(item)), tuple(sorted((item.anchors or {}).items()))

    out: list[str | None] = []
    for key, run in itertools.groupby(enumerate(items), key=lambda pair: scale(pair[1])):
        run = list(run)
        grid = f"grid-{run[0][0] + 1}" if key is not None and len(run) >= GRID_MIN_ITEMS else None
        out.extend(grid for _ in run)
    return out


def storage_key(token: str, page_key: str) -> str:
    """Where the browser keeps this page's answers in progress: per participant and page.

    The token is hashed: it is the participant's credential and has no business in storage keys.
    """
    return f"{storage_prefix(token)}{page_key}"


def storage_prefix(token: str) -> str:
    return "kuleshov.q." + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16] + "."


_SPECS: dict[tuple, tuple[list, list[dict[str, Any]]]] = {}
_SPECS_MAX = 5000


def _specs(shown: list) -> list[dict[str, Any]]:
    """item_spec of each item shown, in order, in the active language, with their grids.

    Items are immutable parts of a registered study version, so their specs are built once per
    process for each order and language (every click used to rebuild some 18 specs: about 1.5 ms
    of a clip page's run on a loaded server). The key holds the items' ids and the value the
    items themselves, so an id cannot be reused by another item while its entry lives.
    """
    key = (catalogue.current(), *map(id, shown))
    hit = _SPECS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], shown, strict=True)):
        return hit[1]
    specs = [item_spec(item, position) for position, item in enumerate(shown, start=1)]
    for spec, grid in zip(specs, grid_ids(shown), strict=True):
        spec["grid"] = grid
    if len(_SPECS) >= _SPECS_MAX:
        _SPECS.clear()
    _SPECS[key] = (list(shown), specs)
    return specs


def page_data(items: list, order: list[str], page_key: str, token: str, errors: dict[str, str] | None = None,
              texts: dict[str, str] | None = None, stored: bool = False, answered: int | None = None) -> dict[str, Any]:
    """Everything the browser needs to render one page of items, in the order they are shown.

    `answered`: the highest submit_id of this page the server has received in this session (the
    browser sends a submit again until a render says so: see submission_id)."""
    by_id = {item.id: item for item in items}
    shown = [by_id[item_id] for item_id in order]
    specs = [dict(spec) for spec in _specs(shown)]  # shallow copies: a caller's change stays its own
    return {
        "page_key": page_key,
        "items": specs,
        "errors": {k: str(v) for k, v in (errors or {}).items()},
        "texts": {**ui_texts(), **(texts or {})},
        "storage_key": storage_key(token, page_key),
        "storage_prefix": storage_prefix(token),
        "stored": bool(stored),
        "numbered": len(specs) > 1,
        "answered": answered,
    }


def submission_id(payload: Any) -> int | None:
    """The browser's number for one press of Continue (it resends the same number while no render
    says the server has it: a message lost to a reconnect or to another rerun is sent again)."""
    sid = payload.get("submit_id") if isinstance(payload, dict) else None
    return sid if isinstance(sid, int) and not isinstance(sid, bool) and 0 < sid < 2**53 else None


# --------------------------------------------------------------------------- browser -> answers


def _ms(x: Any) -> int | None:
    """A non-negative whole number of milliseconds, or None for anything else."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0:
        return None
    return int(x)


def _value(item, raw: Any) -> Any:
    """The submitted value as the submit path expects it; anything odd is left for validation."""
    if isinstance(raw, str):
        kind = item_types.get(item.type)
        if kind.choice:
            return raw
        raw = raw.strip()
        if not raw:
            return None
        if kind.numeric:
            try:
                raw = float(raw)
            except ValueError:
                return raw  # validation answers "Please give a number."
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    if isinstance(raw, dict | list):
        return str(raw)  # never a number, never an option: validation rejects it with a message
    return raw


def answers_from_submission(payload: Any, items: list, order: list[str], page_key: str) -> dict[str, Answer] | None:
    """The page's answers from the browser's submit message, one `Answer` per item of the page.

    None when the message is not a submission of this page (an old tab's, or garbage): nothing
    is stored then. Items the browser did not send come back unanswered, so validation names
    them; ids that are not on the page are dropped. The position stored is the server's order,
    never the browser's. An untouched slider is `Answer(None, untouched=True)` whatever value
    came with it: the value a slider shows before it is moved is not an answer.
    """
    if not isinstance(payload, dict) or payload.get("page_key") != page_key:
        return None
    sent = payload.get("answers")
    sent = sent if isinstance(sent, dict) else {}
    position = {item_id: i for i, item_id in enumerate(order, start=1)}
    answers: dict[str, Answer] = {}
    for item in items:
        raw = sent.get(item.id)
        raw = raw if isinstance(raw, dict) else {}
        untouched = raw.get("untouched") is True
        if item_types.get(item.type).may_be_untouched and (untouched or raw.get("value") is None):
            answers[item.id] = Answer(None, untouched=True, shown_position=position.get(item.id))
            continue
        value = _value(item, raw.get("value"))
        answers[item.id] = Answer(value, untouched=False,
                                  response_time_ms=_ms(raw.get("last_ms")) if value is not None else None,
                                  shown_position=position.get(item.id))
    return answers


def timings_from_submission(payload: Any) -> dict[str, dict[str, int | None]]:
    """first_ms, last_ms and changes per item, as the browser measured them (for logging/storage)."""
    sent = payload.get("answers") if isinstance(payload, dict) else None
    out: dict[str, dict[str, int | None]] = {}
    for item_id, raw in (sent if isinstance(sent, dict) else {}).items():
        if isinstance(item_id, str) and isinstance(raw, dict):
            out[item_id] = {"first_ms": _ms(raw.get("first_ms")), "last_ms": _ms(raw.get("last_ms")),
                            "changes": _ms(raw.get("changes"))}
    return out


# --------------------------------------------------------------------------- mounting


def _on_submit(key: str, items: list, order: list[str], page_key: str,
               submit: Callable[[dict[str, Answer]], None]) -> None:
    """Runs before the script body of the run the browser's submit caused.

    Storing here, not in the body, is what makes a page submission one script run: the body that
    follows reads the participant's new step from the database and shows it. `submit` is the
    page's usual path (validate, store, keep errors); its closing `st.rerun()` asks for the
    page to be shown again, which this very run is about to do, so it is not passed on.
    """
    from streamlit.runtime.scriptrunner import RerunException

    result = st.session_state.get(key)
    payload = result.get("submit") if isinstance(result, Mapping) else getattr(result, "submit", None)
    answers = answers_from_submission(payload, items, order, page_key)
    if answers is None:
        return
    sid = submission_id(payload)
    if sid is not None:
        seen = st.session_state.get(_answered_key(page_key)) or 0
        st.session_state[_answered_key(page_key)] = max(seen, sid)
    try:
        submit(answers)
    except RerunException:
        pass


def _answered_key(page_key: str) -> str:
    return f"questionnaire-answered|{page_key}"


def ask(step, state, errors: dict[str, str] | None, submit: Callable[[dict[str, Answer]], None],
        texts: dict[str, str] | None = None) -> None:
    """Show the step's items (in `state.item_order`) as one component; its Continue calls `submit`.

    `submit(answers)` receives one `flow.Answer` per item of the step, in the run the browser's
    submit caused, before the page is drawn; `errors` (item id -> message) are shown beside
    their items.
    """
    items = list(step.items)
    order = list(state.item_order)
    key = f"questionnaire|{step.key}"
    answered = st.session_state.get(_answered_key(step.key))
    _questionnaire(
        key=key,
        data=component_data(page_data(items, order, step.key, state.token, errors, texts, answered=answered)),
        on_submit_change=lambda: _on_submit(key, items, order, step.key, submit),
    )
