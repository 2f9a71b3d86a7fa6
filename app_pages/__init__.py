"""Streamlit pages (UI only).

Pages get the process's database engine with `from app_pages import get_engine` (the one
`study.store.shared_engine` gives the HTTP routes too); never keep a connection or session in
`st.session_state` (each action is one short transaction in store).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st


@st.cache_resource(show_spinner=False)
def get_engine():
    from study import store

    return store.shared_engine()


def pick_study(engine, key: str) -> str:
    """The study selector of a researcher page (newest last, preselected), offering only the
    studies the logged-in researcher may see; stops the page if there is none."""
    from app_pages import actions, auth

    ids = [s["id"] for s in actions.studies(engine, auth.who())]
    if not ids:
        st.info("No study you have access to yet: see the Studies page (an owner can grant access with "
                "`kuleshov researcher grant NAME STUDY`).")
        st.stop()
    return st.selectbox("Study", ids, index=len(ids) - 1, key=key)


def component_data(data: dict) -> dict[str, str]:
    """A v2 component's `data` as one JSON string (the browser side unpacks it with JSON.parse).

    Streamlit scans every top-level value of a dict it is given for dataframe-like objects
    (`is_dataframe_like` runs some twenty type checks and pandas' type inference on lists),
    on every script run: measured on a demo clip page's questionnaire data (31 kB), 23 ms per
    call as a dict against 0.2 ms as one string (benchmarks/bench_sessions.py found it at 30%
    of the server's CPU with real sessions). A string is not scanned.
    """
    import json

    return {"json": json.dumps(data, separators=(",", ":"))}


COMPONENTS = Path(__file__).resolve().parent.parent / "components"


def browser_component(name: str, folder: str, html: str, css: tuple[str, ...] = (), js: tuple[str, ...] = ()):
    """A components v2 component from files of components/<folder>, with components/common.js
    joined before its scripts (the helpers every component shares). The code is passed inline:
    components v2 then needs no build step and no asset manifest (the strings are multi-line, so
    Streamlit never takes them for a file path)."""
    def read(file: str) -> str:
        return (COMPONENTS / folder / file).read_text(encoding="utf-8")

    script = "\n".join([(COMPONENTS / "common.js").read_text(encoding="utf-8"), *(read(f) for f in js)])
    style = "\n".join(read(f) for f in css) or None
    return st.components.v2.component(name, html=read(html), css=style, js=script)
