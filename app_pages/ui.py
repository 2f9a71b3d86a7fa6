"""Rendering of items (questions) for the participant page: `RENDERERS` maps each response type to its widget.

Each widget keeps its value in st.session_state under a key made of the step and item id, so a
rerun keeps what was entered; `collect()` turns those values into flow.Answer objects. Sliders
start untouched: the value they show is not an answer until the participant moves them, and
they are stored as untouched (no value) otherwise.
"""

from __future__ import annotations

import html
import time

import streamlit as st

from study import item_types
from study.flow import Answer
from study.item_types import TEXT_MAX_CHARS, fmt_number
from study.texts import t


def _key(prefix: str, item_id: str) -> str:
    return f"{prefix}|{item_id}"


def _touch_key(prefix: str, item_id: str) -> str:
    return f"{prefix}|{item_id}|touched_at"


def shown_at(prefix: str) -> float:
    """When this page's items were first shown in this session (for response times)."""
    key = f"{prefix}|shown_at"
    if key not in st.session_state:
        st.session_state[key] = time.monotonic()
    return st.session_state[key]


def _mark(prefix: str, item_id: str) -> None:
    st.session_state[_touch_key(prefix, item_id)] = time.monotonic()


def _anchor_text(item) -> str:
    if not item.anchors:
        return ""
    return " · ".join(f"{fmt_number(k)} = {v}" for k, v in sorted(item.anchors.items()))


def _scale_values(item) -> list[int | float]:
    step = item.step or 1
    values, v = [], float(item.min)
    while v <= float(item.max) + 1e-9:
        values.append(int(v) if float(v).is_integer() else round(v, 6))
        v += step
    return values


def pictogram_row(item) -> str:
    from study.instruments import pictogram_data_uri

    # As <img> data URIs: st.html's sanitiser drops inline <svg> elements.
    cells = "".join(
        f'<div class="kq-pic" title="{i}"><img src="{pictogram_data_uri(item.pictogram, i)}" '
        f'alt="{html.escape(t("item.pictogram.alt", dimension=item.pictogram, level=i))}" style="width:100%;max-width:64px;height:auto">'
        f"<div>{i}</div></div>"
        for i in range(1, 10)
    )
    low = html.escape(item.anchors.get(1, "")) if item.anchors else ""
    high = html.escape(item.anchors.get(9, "")) if item.anchors else ""
    return (
        '<div class="kq-pics" style="display:flex;justify-content:space-between;gap:2px;text-align:center;'
        'font-size:0.8rem;max-width:640px">'
        f"{cells}</div>"
        '<div style="display:flex;justify-content:space-between;max-width:640px;font-size:0.85rem;opacity:0.8">'
        f"<span>{low}</span><span>{high}</span></div>"
    )


def slider_caption(unit: str | None, anchors: str, touched: bool) -> str:
    """The line under a slider: unit, anchors, and whether it still counts as unanswered."""
    parts = [t("item.slider.unit", unit=unit) if unit else "", anchors, "" if touched else t("item.slider.untouched")]
    return " · ".join(p for p in parts if p)


# Participant pages only. Streamlit shortens a button's label to one line with an ellipsis,
# which on a phone cut the consent button to "I have read this and agree to take part in the
# demonstr…"; and a horizontal radio row wraps once it is wider than the screen, which put
# 7 and 8 of a 0-8 scale on a line of their own. Scale points keep one row, sharing the width.
PAGE_CSS = """<style>
.stButton button .stMarkdownEllipsis, .stButton button p, .stLinkButton a .stMarkdownEllipsis,
.stLinkButton a p {white-space: normal; overflow: visible; text-overflow: clip}
.stButton button, .stLinkButton a {height: auto; text-align: left}
[data-testid="stRadioGroup"][aria-orientation="horizontal"] {display: flex; flex-wrap: nowrap;
  justify-content: space-between; gap: 2px; width: 100%; max-width: 640px}
[data-testid="stRadioGroup"][aria-orientation="horizontal"] > div {flex: 1 1 0; min-width: 0}
[data-testid="stRadioGroup"][aria-orientation="horizontal"] label {margin: 0; padding-right: 0}
.stElementContainer:has([aria-orientation="horizontal"]), .stRadio:has([aria-orientation="horizontal"]) {width: 100%}
.stButton button, .stLinkButton a {min-height: 44px}
.stButton button:focus-visible, .stLinkButton a:focus-visible {outline: 3px solid #1a5fb4; outline-offset: 2px}
</style>"""


def page_css() -> None:
    """Layout fixes for the participant page (see PAGE_CSS); call once per run."""
    st.markdown(PAGE_CSS, unsafe_allow_html=True)


def _label(item, number: int | None) -> str:
    prefix = f"**{number}.** " if number else ""
    return prefix + item.text


def _pictorial(item, label: str, key: str, box: str, args: tuple) -> None:
    st.markdown(label)
    if item.pictogram:
        # Each radio button sits centred under its picture: same row width, same cell width.
        k = f".st-key-{box}"
        st.html(pictogram_row(item))
        st.markdown((  # st.html's sanitiser drops <style>; markdown with HTML keeps it
            f'<style>{k} .stElementContainer:has([role="radiogroup"]), {k} .stRadio, '
            f'{k} [role="radiogroup"] {{width:100%}}'
            f'{k} [role="radiogroup"] {{display:flex;flex-wrap:nowrap;'
            'justify-content:space-between;gap:2px;max-width:640px}'
            f'{k} [role="radiogroup"] > div {{flex:1 1 0;max-width:64px;display:flex;'
            'justify-content:center}'
            f'{k} [role="radiogroup"] label {{margin:0}}</style>'), unsafe_allow_html=True)
    st.radio(label, _scale_values(item), index=None, horizontal=True, key=key,
             label_visibility="collapsed", on_change=_mark, args=args)


def _points(item, label: str, key: str, box: str, args: tuple) -> None:
    st.markdown(label)
    anchors = _anchor_text(item)
    st.radio(label, _scale_values(item), index=None, horizontal=True, key=key,
             label_visibility="collapsed", on_change=_mark, args=args, captions=None)
    if anchors:
        st.caption(anchors)


def _slider(item, label: str, key: str, box: str, args: tuple) -> None:
    prefix, item_id = args
    values = _scale_values(item)
    start = values[len(values) // 2]
    touched = _touch_key(prefix, item_id) in st.session_state
    integral = all(float(x).is_integer() for x in (item.min, item.max, item.step or 1))
    cast = int if integral else float  # st.slider wants every number of one type
    st.slider(label, min_value=cast(values[0]), max_value=cast(values[-1]), value=cast(start),
              step=cast(item.step or 1), key=key, on_change=_mark, args=args)
    st.caption(slider_caption(item.unit, _anchor_text(item), touched))


def _choice(item, label: str, key: str, box: str, args: tuple) -> None:
    labels = {o.value: o.label for o in item.options}
    st.radio(label, list(labels), index=None, key=key, format_func=labels.get, on_change=_mark, args=args)


def _number(item, label: str, key: str, box: str, args: tuple) -> None:
    integral = all(x is None or float(x).is_integer() for x in (item.min, item.max, item.step or 1))
    cast = (lambda x: None if x is None else int(x)) if integral else (lambda x: None if x is None else float(x))
    st.number_input(label, min_value=cast(item.min), max_value=cast(item.max), value=None,
                    step=cast(item.step or 1), key=key, on_change=_mark, args=args)


def _text(item, label: str, key: str, box: str, args: tuple) -> None:
    st.text_area(label, key=key, max_chars=TEXT_MAX_CHARS, on_change=_mark, args=args, height=80)


# The widget of each response type (study/item_types.py); a new type adds its renderer here.
RENDERERS = {
    "pictorial9": _pictorial,
    "likert": _points,
    "intensity": _points,
    "slider": _slider,
    "choice": _choice,
    "attention": _choice,
    "number": _number,
    "text": _text,
}


def render_item(item, prefix: str, number: int | None = None, errors: dict[str, str] | None = None) -> None:
    """Show one item with the widget of its response type; the value stays in session_state."""
    box = f"item-{prefix.replace('|', '-').replace(':', '-')}-{item.id}"
    with st.container(key=box):
        RENDERERS[item.type](item, _label(item, number), _key(prefix, item.id), box, (prefix, item.id))
        if errors and item.id in errors:
            st.error(errors[item.id])


def render_items(items: list, order: list[str], prefix: str, errors: dict[str, str] | None = None) -> None:
    by_id = {it.id: it for it in items}
    shown_at(prefix)
    for n, item_id in enumerate(order, start=1):
        render_item(by_id[item_id], prefix, number=n if len(order) > 1 else None, errors=errors)


def collect(items: list, order: list[str], prefix: str) -> dict[str, Answer]:
    """The answers currently entered on the page, with untouched sliders marked as such."""
    start = shown_at(prefix)
    position = {item_id: i for i, item_id in enumerate(order, start=1)}
    answers: dict[str, Answer] = {}
    for item in items:
        touched_at = st.session_state.get(_touch_key(prefix, item.id))
        rt = int((touched_at - start) * 1000) if touched_at is not None else None
        value = st.session_state.get(_key(prefix, item.id))
        kind = item_types.get(item.type)
        if kind.may_be_untouched and touched_at is None:
            answers[item.id] = Answer(None, untouched=True, response_time_ms=None,
                                      shown_position=position.get(item.id))
            continue
        if isinstance(value, str) and not kind.choice:
            value = value.strip() or None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        answers[item.id] = Answer(value, untouched=False, response_time_ms=rt, shown_position=position.get(item.id))
    return answers


def forget(prefix: str) -> None:
    """Drop a submitted page's widget values from the session (they are in the database now)."""
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix + "|")]:
        del st.session_state[key]
