"""Streamlit pages (UI only).

Pages get the process's database engine with `from app_pages import get_engine` (the one
`study.store.shared_engine` gives the HTTP routes too); never keep a connection or session in
`st.session_state` (each action is one short transaction in store).
"""

from __future__ import annotations

import streamlit as st


@st.cache_resource(show_spinner=False)
def get_engine():
    from study import store

    return store.shared_engine()


def pick_study(engine, key: str) -> str:
    """The study selector of a researcher page (newest last, preselected); stops the page if none exists."""
    from study import store

    ids = [s["id"] for s in store.list_studies(engine)]
    if not ids:
        st.info("No study registered yet: see the Studies page.")
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
