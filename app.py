"""Router: a participant link goes to the participant page, anything else to the researcher side.

Pages live in app_pages/ (never a folder named pages/, which Streamlit would serve by itself on
a fresh server) and are registered with st.navigation per request: a participant link only
ever registers the participant page, and the researcher pages exist only after login, so a
guessed URL such as /dashboard falls back to the login form.
"""

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
RESEARCHER_PAGES = [
    ("app_pages/dashboard.py", "Dashboard", ":material/monitoring:"),
    ("app_pages/studies.py", "Studies", ":material/list:"),
    ("app_pages/export_page.py", "Export", ":material/download:"),
]

params = st.query_params
if "t" in params or "study" in params:
    st.set_page_config(page_title="Study", layout="centered", initial_sidebar_state="collapsed")
    from app_pages import participant

    st.navigation([st.Page(participant.page, title="Study", default=True)], position="hidden").run()
else:
    from app_pages import auth

    st.set_page_config(page_title="Kuleshov", layout="wide")
    if auth.is_researcher():
        pages = [
            st.Page(path, title=title, icon=icon, default=i == 0)
            for i, (path, title, icon) in enumerate(p for p in RESEARCHER_PAGES if (ROOT / p[0]).is_file())
        ]

        def log_out() -> None:
            auth.logout()

        pages.append(st.Page(log_out, title="Log out", icon=":material/logout:", default=not pages))
        st.navigation(pages, position="sidebar").run()
    else:
        st.navigation([st.Page(auth.login_form, title="Researcher login", default=True)], position="hidden").run()
