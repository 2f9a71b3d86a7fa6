"""Streamlit-side helpers of the participant page: its CSS, and dropping a submitted page's values.

The items themselves are drawn in the browser by the questionnaire component
(app_pages/questionnaire.py, components/questionnaire/); its WIDGETS table maps each response
type to a widget.
"""

from __future__ import annotations

import streamlit as st


# Participant pages only. Streamlit shortens a button's label to one line with an ellipsis,
# which on a phone cut the consent button to "I have read this and agree to take part in the
# demonstr…"; and a horizontal radio row wraps once it is wider than the screen, which put
# 7 and 8 of a 0-8 scale on a line of their own. Scale points keep one row, sharing the width.
# A caption is drawn at 60% opacity over a grey (#9b9b9b on white: contrast 2.77:1, under WCAG
# AA's 4.5:1; axe-core flagged the clip page's "The questions appear here ..."); opaque #595959
# gives 7:1 and still reads as secondary.
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
[data-testid="stCaptionContainer"] {color: #595959; opacity: 1}
</style>"""


def page_css() -> None:
    """Layout fixes for the participant page (see PAGE_CSS); call once per run."""
    st.markdown(PAGE_CSS, unsafe_allow_html=True)


def forget(prefix: str) -> None:
    """Drop a submitted page's widget values from the session (they are in the database now)."""
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix + "|")]:
        del st.session_state[key]
