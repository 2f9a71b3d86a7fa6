"""The follow-up page: `?study=X&followup=NAME` with `PROLIFIC_PID=` (Prolific) or `f=` (a personal link).

Like the session-1 page it reads where the participant is from the database on every run
(study/store/followups.py) and stores each page with one call, which is idempotent. Too early,
not eligible and unknown links get a page of their own, never an error.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit

import streamlit as st

from app_pages import browser_session, ui
from study import followup as fup
from study import texts
from study.store import followups
from study.texts import local, t


def page(engine, params, lang: str) -> str:
    """Render the follow-up the link stands for; returns the language the page was drawn in."""
    study_id, name = params.get("study") or "", params.get("followup") or ""
    pid, link = params.get("PROLIFIC_PID") or None, params.get("f") or None
    if not pid and not link:
        _message(t("followup.unknown", lang))
        return lang
    access, state = followups.start(engine, study_id, name, prolific_pid=pid, link_token=link,
                                    language=params.get("lang"))
    lang = state.language if state is not None else (access.language or lang)
    with texts.active(lang):
        if access.outcome == "unknown":
            _message(t("followup.unknown"))
        elif access.outcome == "not_eligible":
            _message(t("followup.not_eligible"))
        elif access.outcome == "early":
            at = fup.now()
            hours = fup.hours_until(access.timing.opens_at, at)
            _message(t("followup.too_early", when=fup.when_text(access.timing.opens_at, lang),
                       hours=f"{hours:.0f}" if hours >= 1 else "1"))
        else:
            render(engine, state)
    return lang


def _message(text: str) -> None:
    st.markdown(f"### {t('followup.title')}")
    st.info(text)


def still_url(study_id: str, stimulus_id: str) -> str:
    # absolute: st.image takes a relative string for a file on the server
    return f"{_base_url()}/stills/{quote(study_id, safe='')}/{quote(stimulus_id, safe='')}"


def render(engine, state) -> None:
    page_ = state.page
    flash = st.session_state.pop("followup_flash", None)
    if flash:
        st.info(flash)
    if not page_.final:
        st.progress(state.progress)
    RENDERERS[page_.kind](engine, state)


def _submit(engine, state, answers: dict) -> None:
    result = followups.submit(engine, state.session_id, state.page.key, answers)
    if result.ok:
        st.session_state.pop(f"fu_errors|{state.page.key}", None)
        if result.duplicate and st.session_state.get("followup_last") != state.page.key:
            st.session_state["followup_flash"] = t("submit.answered_elsewhere")
        st.session_state["followup_last"] = state.page.key
    else:
        st.session_state[f"fu_errors|{state.page.key}"] = result.errors
        if not result.errors:
            st.session_state["followup_flash"] = t("submit.not_saved")
    st.rerun()


def _errors(state) -> dict:
    return st.session_state.get(f"fu_errors|{state.page.key}") or {}


def _intro(engine, state) -> None:
    st.subheader(t("followup.title"))
    if state.late:
        st.info(t("followup.late"))
    st.markdown(local(state.followup.intro))
    if st.button(t("followup.continue"), type="primary", key=f"fu|{state.page.key}"):
        _submit(engine, state, {})


def _recall(engine, state) -> None:
    errors = _errors(state)
    with st.form(f"fu_form|{state.page.key}", border=False):
        st.markdown(local(state.followup.recall_prompt))
        text = st.text_area(t("followup.recall.label"), height=220, max_chars=fup.MAX_RECALL_CHARS,
                            key=f"fu|{state.page.key}|text")
        if fup.RECALL_ITEM in errors:
            st.error(errors[fup.RECALL_ITEM])
        if st.form_submit_button(t("followup.continue"), type="primary"):
            _submit(engine, state, {fup.RECALL_ITEM: text})


def _scale_radio(scale, key: str, error: str | None):
    points = list(range(scale.low, scale.high + 1))
    labels = {p: t(k) for p, k in scale.labels.items()}

    def fmt(p: int) -> str:
        return f"{p} ({labels[p]})" if p in labels and len(points) <= 5 else str(p)

    value = st.radio(t(scale.text), points, index=None, horizontal=True, format_func=fmt, key=key)
    if len(points) > 5:
        st.caption(" · ".join(f"{p} = {labels[p]}" for p in sorted(labels)))
    if error:
        st.error(error)
    return value


def _recognition(engine, state) -> None:
    errors = _errors(state)
    st.markdown(t("followup.recognition.intro"))
    stills = state.page.stills
    with st.form(f"fu_form|{state.page.key}", border=False):
        answers = {}
        for n, sid in enumerate(stills, start=1):
            with st.container(border=True):
                st.caption(t("followup.recognition.still", n=n, total=len(stills)))
                st.image(still_url(state.study_id, sid), width=480)
                old = st.radio(t("followup.recognition.old"), [1, 0], index=None, horizontal=True,
                               format_func=lambda v: t("followup.recognition.yes") if v else t("followup.recognition.no"),
                               key=f"fu|{state.page.key}|old|{n}")
                conf = _scale_radio(fup.CONFIDENCE, f"fu|{state.page.key}|conf|{n}",
                                    errors.get(fup.old_item(sid)) or errors.get(fup.confidence_item(sid)))
                answers[fup.old_item(sid)] = old
                answers[fup.confidence_item(sid)] = conf
        if st.form_submit_button(t("followup.continue"), type="primary"):
            _submit(engine, state, answers)


def _clip(engine, state) -> None:
    errors = _errors(state)
    clips = [p for p in state.pages if p.kind == "clip"]
    n = next(i for i, p in enumerate(clips, start=1) if p.key == state.page.key)
    st.caption(t("followup.clip.counter", n=n, total=len(clips)))
    st.markdown(t("followup.clip.intro"))
    st.image(still_url(state.study_id, state.page.stimulus_id), width="stretch")
    with st.form(f"fu_form|{state.page.key}", border=False):
        answers = {s.id: _scale_radio(s, f"fu|{state.page.key}|{s.id}", errors.get(s.id)) for s in state.page.scales}
        if st.form_submit_button(t("followup.continue"), type="primary"):
            _submit(engine, state, answers)


def _complete(engine, state) -> None:
    completion = state.followup.completion
    st.markdown(local(completion.message))
    if completion.code:
        st.markdown(t("complete.code"))
        st.code(completion.code, language=None)
    url = state.redirect_url
    if url:
        prolific = (urlsplit(url).hostname or "").endswith("prolific.com")
        browser_session.redirect(url, completion.redirect_after_s, {
            "countdown": t("complete.redirect.countdown"),
            "now": t("complete.return") if prolific else t("complete.redirect.now"),
        })


RENDERERS = {"intro": _intro, "recall": _recall, "recognition": _recognition, "clip": _clip, "complete": _complete}


# --------------------------------------------------------------------------- the end of session 1


def personal_link_box(engine, state) -> None:
    """At the end of session 1 of an anonymous link: the personal link to each follow-up."""
    fus = getattr(state.study, "follow_ups", None) or []
    if not fus or state.prolific_pid:
        return
    token = followups.personal_link_token(engine, state.token)
    if not token:
        return
    from study.store.followups import completed_at

    done = completed_at(engine, state.participant_id)
    base = _base_url()
    for fu in fus:
        query = urlencode({"study": state.study_id, "followup": fu.name, "f": token})
        opens = fup.timing(fu, done, done).opens_at if done else None
        st.info(t("followup.personal_link", when=fup.when_text(opens, state.language) if opens else "",
                  window=f"{fu.window_hours:g}"))
        st.code(f"{base}/?{query}", language=None, wrap_lines=True)


def _base_url() -> str:
    try:
        url = st.context.url  # the page's own address, as the browser sees it
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    except Exception:
        return ""
