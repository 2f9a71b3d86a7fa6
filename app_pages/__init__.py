"""Streamlit pages (UI only). The shared database engine lives here: one per process.

Researcher pages get their engine with `from app_pages import get_engine`; never keep a
connection or session in `st.session_state` (each action is one short transaction in store).
"""

from __future__ import annotations

import functools

import streamlit as st


@functools.lru_cache(maxsize=None)
def engine_for(url: str):
    """One engine per URL per process, shared by the Streamlit pages and the HTTP routes."""
    from study import store

    return store.make_engine(url)


@st.cache_resource(show_spinner=False)
def get_engine():
    from study.config import database_url

    return engine_for(database_url())


def pick_study(engine, key: str) -> str:
    """The study selector of a researcher page (newest last, preselected); stops the page if none exists."""
    from study import store

    ids = [s["id"] for s in store.list_studies(engine)]
    if not ids:
        st.info("No study registered yet: see the Studies page.")
        st.stop()
    return st.selectbox("Study", ids, index=len(ids) - 1, key=key)
