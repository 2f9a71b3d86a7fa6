"""Baseline for benchmarks/bench_sessions.py: the framework's own cost per page.

A page with a heading, a paragraph and one button, as a bare Streamlit app with the project's
.streamlit/config.toml (start it from the repository folder). Each press shows the next page.
"""

import streamlit as st

st.session_state.setdefault("page", 0)


def _next() -> None:
    st.session_state.page += 1


st.markdown(f"### Page {st.session_state.page + 1}")
st.markdown("A paragraph of text, as a participant page has before its controls.")
if st.session_state.page < 30:
    st.button("Continue", type="primary", on_click=_next, key=f"next-{st.session_state.page}")
else:
    st.markdown("Done.")
