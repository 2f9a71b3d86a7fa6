"""Tell the browser which language the participant page is in: <html lang="...">.

Streamlit's page says lang="en" whatever it shows; a German page read by a screen reader with
an English voice is hard to follow (WCAG 3.1.1, Language of Page). A tiny components-v2
element sets the document's lang on every run; it sends nothing back, so it costs no rerun.
"""

from __future__ import annotations

import streamlit as st

_JS = """
export default function (component) {
  const lang = component.data && component.data.lang;
  if (lang && document.documentElement.lang !== lang) {
    document.documentElement.lang = lang;
  }
}
"""

_page_language = st.components.v2.component(
    "kuleshov.page_language",
    html="<span hidden></span>\n",
    js=_JS,
)


def declare(lang: str) -> None:
    """Set <html lang> to `lang` (a language code such as en or de)."""
    _page_language(key="page-language", data={"lang": lang})
