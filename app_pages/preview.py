"""A researcher's preview of a study as a participant: any step, any label condition and list, recording nothing.

The address is the participant link with `preview=1` (the study builder links to it):

    /?study=ID&preview=1[&step=KEY][&condition=C][&list=L][&version=N][&lang=LANG]

`list` is the counterbalancing list's index as stored in participants.list_index (0, 1, ...).
Only a logged-in researcher with access to the study (any role: a preview writes nothing) sees
it; anyone else gets the login form, never an enrolment. The page is the participant page
itself: `participant.render` with the same renderers, given a `PreviewWriter` instead of the
database writer, and a ParticipantState made in memory (study.store.preview). So:

- no participant, trial, response, event, trace or audit row is written, and no balance count
  changes (nobody is enrolled). Opening a preview is not audited either: the audit log is for
  actions that change data, and a preview that writes nothing at all is simpler to check.
- answers are validated as usual (the researcher sees the participant's messages) and the
  session rules apply in memory (a declined consent or a failed device check ends the preview
  session where a participant's would end; any step can be picked again).
- the player gets a preview token (`preview:...`), whose events and traces the HTTP routes
  answer as settled and drop (server.py).

Where the preview is lives in the query (a reload keeps the step); the in-memory session state
of the walk (status, attention failures, device check attempts) lives in st.session_state and
is forgotten when the researcher jumps with the pickers or Back/Next.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

import streamlit as st

from app_pages import auth, get_engine, page_language, participant, ui
from study import store, texts
from study.errors import UserError
from study.store.sessions import SubmitResult
from study.texts import local, t

TOKEN_KEY = "preview|token"
WALK_KEY = "preview|walk"
SHOW_QUESTIONS_KEY = "preview|show_questions"
PARAMS = ("step", "condition", "list", "version", "lang")


def preview_url(study_id: str, *, step: str | None = None, condition: str | None = None,
                list_index: int | None = None, version: str | None = None, lang: str | None = None) -> str:
    """The preview's address (relative to the app's root), as the study builder links to it."""
    query = {"study": study_id, "preview": "1"}
    for name, value in (("step", step), ("condition", condition), ("list", list_index), ("version", version),
                        ("lang", lang)):
        if value is not None:
            query[name] = str(value)
    return "/?" + urlencode(query)


ROOT_PAGE = None  # the st.Page at the root URL; app.py sets it on every run (see `link`)


def link(study_id: str, label: str = "Preview as a participant", **choices) -> None:
    """A link from a researcher page to the study's preview, opened in this same session.

    A plain link (`preview_url`) opens a new Streamlit session in the browser, where the
    researcher must log in again; `st.page_link` to the root page moves this session there, so
    the login holds. `choices`: step, condition, list_index, version, lang.
    """
    url = preview_url(study_id, **choices)
    if ROOT_PAGE is None:
        st.markdown(f"[{label}]({url})")
        return
    query = {name: values[0] for name, values in parse_qs(url.split("?", 1)[1]).items()}
    st.page_link(ROOT_PAGE, label=label, icon=":material/visibility:", query_params=query)


def asked(params) -> bool:
    """Does this query ask for a preview? (A participant's own `?t=` link never is one.)"""
    return "t" not in params and str(params.get("preview") or "").lower() in ("1", "true", "yes")


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _where(params) -> tuple:
    return tuple(params.get(name) for name in ("study", *PARAMS))


class PreviewWriter:
    """participant.StoreWriter's counterpart that stores nothing: a submit moves the preview on
    (the query's step, the walk's status in the session), everything else is dropped."""

    redirects = False  # the completion page names the participant's redirect, never follows it

    def __init__(self, engine, plan: store.PreviewPlan):
        self.engine = engine  # reads only (the device check's expectations)
        self.plan = plan

    def submit(self, state, step_key: str, answers: dict, trial_meta: dict | None = None) -> SubmitResult:
        if step_key != state.step.key:
            return SubmitResult(ok=False, state=state, message=t("submit.not_saved"))
        new = store.preview_submit(self.plan, state, answers)
        st.query_params["step"] = new.step.key
        st.session_state[WALK_KEY] = {"where": _where(st.query_params), "status": new.status,
                                      "attention_failed": new.attention_failed, "device_info": new.device_info,
                                      "excluded_reason": new.excluded_reason}
        return SubmitResult(ok=True, state=new)

    def set_language(self, state, language: str):
        if language in self.plan.languages:
            st.query_params["lang"] = language
        return st.query_params.get("lang") or state.language

    def record_events(self, state, events: list[dict]) -> None:
        return None

    def watched_share(self, state, position: int) -> float | None:
        # "Show the questions at once": the researcher need not watch each clip to see its page.
        return 1.0 if st.session_state.get(SHOW_QUESTIONS_KEY) else None

    def withdraw(self, state) -> None:
        st.session_state[WALK_KEY] = {"where": _where(st.query_params), "status": "withdrawn",
                                      "attention_failed": state.attention_failed, "device_info": state.device_info,
                                      "excluded_reason": state.excluded_reason}


def _jump(**changes) -> None:
    """Move the preview (a picker or Back/Next): new query, fresh walk from there."""
    for name, value in changes.items():
        if value is None:
            st.query_params.pop(name, None)
        else:
            st.query_params[name] = str(value)
    st.session_state.pop(WALK_KEY, None)
    st.session_state.pop("withdraw|confirm", None)


def _picked(key: str, param: str) -> None:
    _jump(**{param: st.session_state.get(key)})


def page() -> None:
    ui.page_css()
    params = st.query_params
    engine = get_engine()
    lang = texts.choose_language(texts.languages(), params.get("lang"), None)
    with texts.active(lang):
        if not auth.is_researcher():
            st.info(t("preview.login"))
            auth.login_form()
            page_language.declare(lang)
            return
    who = auth.require_researcher()
    try:
        store.authorize(engine, who, "view", params.get("study"))
        plan = store.preview_plan(engine, params.get("study"), params.get("version"))
    except UserError as exc:
        with texts.active(lang):
            st.error(t("preview.refused", reason=str(exc)))
        page_language.declare(lang)
        return
    token = st.session_state.get(TOKEN_KEY)
    if not store.is_preview_token(token):
        token = st.session_state[TOKEN_KEY] = store.new_preview_token()
    walk = st.session_state.get(WALK_KEY)
    if not walk or walk.get("where") != _where(params):
        walk = {}
    state = store.preview_state(plan, token=token, condition=params.get("condition"),
                                list_index=_int(params.get("list")), step_key=params.get("step"),
                                language=params.get("lang"), status=walk.get("status"),
                                attention_failed=walk.get("attention_failed", 0), device_info=walk.get("device_info"))
    state.excluded_reason = walk.get("excluded_reason")
    try:
        with texts.active(state.language):
            controls(plan, state)
            participant.render(PreviewWriter(engine, plan), state)
            if not state.active and state.status != "completed":
                st.info(t("preview.ended", status=state.status))
    finally:
        page_language.declare(state.language)


def controls(plan: store.PreviewPlan, state) -> None:
    """The banner and the pickers: every step, label condition, list, version and language.

    Kept short (the banner, the step picker, one row of buttons with the other choices in a
    popover), so that the participant's page itself starts within the first screen of a phone.
    """
    st.warning(f"**{t('preview.banner')}** · " + t("preview.banner_detail", study=plan.study_id, version=plan.version,
                                                   condition=state.label_condition, list=state.list_index),
               icon=":material/visibility:")
    keys = [s.key for s in state.steps]
    titles = {s.key: local(s.title) or s.key for s in state.steps}
    index = state.step_index
    st.session_state["preview|step"] = state.step.key
    st.selectbox(t("preview.step"), keys, key="preview|step", format_func=lambda k: f"{titles[k]} ({k})",
                 on_change=_picked, args=("preview|step", "step"))
    # One row on a phone too (columns would stack): Back, Next, and the other choices folded away.
    with st.container(horizontal=True, key="preview-moves"):
        st.button(t("preview.back"), key="preview|back", disabled=index == 0, icon=":material/arrow_back:",
                  on_click=_jump, kwargs={"step": keys[max(0, index - 1)]})
        st.button(t("preview.next"), key="preview|next", disabled=index >= len(keys) - 1,
                  icon=":material/arrow_forward:", on_click=_jump,
                  kwargs={"step": keys[min(len(keys) - 1, index + 1)]})
        options = st.popover(t("preview.options"), icon=":material/tune:", key="preview-options")
    with options:
        if plan.study_status != "open":
            st.caption(t("preview.study_status", status=plan.study_status))
        st.session_state["preview|condition"] = state.label_condition
        st.selectbox(t("preview.condition"), list(plan.conditions), key="preview|condition",
                     on_change=_picked, args=("preview|condition", "condition"))
        st.session_state["preview|list"] = state.list_index
        st.selectbox(t("preview.list"), list(range(len(plan.lists))), key="preview|list",
                     format_func=lambda i: f"{i}: {', '.join(plan.lists[i])}",
                     on_change=_picked, args=("preview|list", "list"))
        st.session_state["preview|version"] = plan.version
        st.selectbox(t("preview.version"), list(plan.versions), key="preview|version",
                     disabled=len(plan.versions) < 2, on_change=_picked, args=("preview|version", "version"))
        st.session_state["preview|lang"] = state.language
        st.selectbox(t("preview.language"), list(plan.languages), key="preview|lang",
                     format_func=lambda code: t("language.name", code), disabled=len(plan.languages) < 2,
                     on_change=_picked, args=("preview|lang", "lang"))
        st.checkbox(t("preview.show_questions"), key=SHOW_QUESTIONS_KEY)
    st.divider()
