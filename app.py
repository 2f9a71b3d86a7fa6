"""Router: participants at the root URL, researchers under /researcher.

Pages live in app_pages/ (never a folder named pages/, which Streamlit would serve by itself on
a fresh server) and are registered with st.navigation per request:

- A participant link (`?t=` or `?study=`, on any path) registers the participant page alone.
- A preview link (`?study=ID&preview=1`, no `?t=`) goes the researchers' way below, with the
  preview page at the root URL: the login form until a researcher has logged in.
- Anything else registers the participant page as the default (the root URL, with nothing in
  the query, says the link is incomplete) and the researcher pages at their own paths
  (/researcher, /researcher-studies, /researcher-builder, /researcher-export): the login form until a researcher
  has logged in, the real pages after. So no address a participant's Back or Forward can reach
  (they are all the root URL with the participant's query) shows a researcher page, and a
  guessed URL such as /dashboard shows no researcher page either.
"""

from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
# (file, title, icon, url path)
RESEARCHER_PAGES = [
    ("app_pages/dashboard.py", "Dashboard", ":material/monitoring:", "researcher"),
    ("app_pages/studies.py", "Studies", ":material/list:", "researcher-studies"),
    ("app_pages/builder.py", "Study builder", ":material/construction:", "researcher-builder"),
    ("app_pages/export_page.py", "Export", ":material/download:", "researcher-export"),
    ("app_pages/accounts.py", "Accounts", ":material/group:", "researcher-accounts"),
]
OWNER_ONLY = {"researcher-accounts"}  # shown to owners with an account; the page checks again
LOGOUT_PATH = "researcher-logout"

from app_pages import participant, preview  # noqa: E402

params = st.query_params
# Hidden from the researchers' sidebar; the root URL is the participant side's. A preview
# (`?study=ID&preview=1`, app_pages/preview.py) is drawn there too, in the participant's layout,
# but only for a logged-in researcher, so it goes the researchers' way: never an enrolment.
if preview.asked(params):
    study_page = st.Page(preview.page, title="Preview", default=True, visibility="hidden")
else:
    study_page = st.Page(participant.page, title="Study", default=True, visibility="hidden")
preview.ROOT_PAGE = study_page  # researcher pages link to the preview through it (preview.link)
if ("t" in params or "study" in params) and not preview.asked(params):
    st.set_page_config(page_title="Study", layout="centered", initial_sidebar_state="collapsed")
    st.navigation([study_page], position="hidden").run()
else:
    from app_pages import auth

    available = [p for p in RESEARCHER_PAGES if (ROOT / p[0]).is_file()]
    if auth.is_researcher():
        def log_out() -> None:
            auth.logout()

        me = auth.who()
        owner = me.account and me.role == "owner"
        researcher = [st.Page(path, title=title, icon=icon, url_path=url) for path, title, icon, url in available
                      if owner or url not in OWNER_ONLY]
        researcher.append(st.Page(log_out, title="Log out", icon=":material/logout:", url_path=LOGOUT_PATH))
    else:
        # Every researcher path shows the login form until then (one page object per path).
        def _login_at(url: str):
            def login() -> None:
                auth.login_form()

            login.__name__ = f"login_{url.replace('-', '_')}"
            return st.Page(login, title="Researcher login", url_path=url)

        urls = dict.fromkeys(["researcher", *(url for *_, url in available), LOGOUT_PATH])
        researcher = [_login_at(url) for url in urls]
    current = st.navigation([study_page, *researcher], position="sidebar" if auth.is_researcher() else "hidden")
    if current.url_path == study_page.url_path:
        st.set_page_config(page_title="Study", layout="centered", initial_sidebar_state="collapsed")
    else:
        st.set_page_config(page_title="Kuleshov", layout="wide")
    current.run()
