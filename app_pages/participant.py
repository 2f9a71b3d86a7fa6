"""The participant page: renders the participant's current step, read from the database each run.

Nothing about progress lives in the Streamlit session: a reload, a second tab or a lost
connection finds the participant where the database says they are. The session only holds
what is being typed on the current page. Each submit is one call to store.submit_step, which
is idempotent (a second submit of the same step writes nothing).

Every page is drawn in the participant's language (stored with them, chosen at enrolment from
`?lang=` or the browser's Accept-Language among the study's languages, switchable on the
consent page): `texts.active` makes it the language of every catalogue text, `texts.local`
picks it from the study file's {language: text} settings.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlsplit

import streamlit as st

from app_pages import browser_session, get_engine, page_language, questionnaire, ui
from app_pages.player import player
from study import capture, flow, store, texts
from study.errors import UserError
from study.texts import keys as text_keys
from study.texts import local, t


# --------------------------------------------------------------------------- entry


# Where StoreWriter.submit leaves the state its transaction ended with, for the page drawn in the
# same script run (never kept past the run: page() takes it out at the start and the end).
FRESH_STATE = "participant_state_fresh"


def page() -> None:
    ui.page_css()
    params = st.query_params
    engine = get_engine()
    token = params.get("t") or st.session_state.get("participant_token")
    # A page submitted in this run's callback (the questionnaire's submit, a button) already has
    # the participant's new state, read in the submit's own transaction: reading it again cost a
    # second transaction per action (on PostgreSQL, a second wait for a pool connection).
    fresh = st.session_state.pop(FRESH_STATE, None)
    # Until a participant (and their study's languages) is known: any shipped language.
    lang = texts.choose_language(texts.languages(), params.get("lang"), _browser_languages())
    try:
        if params.get("followup"):
            # a follow-up link names its participant itself (study/store/followups.py)
            from app_pages import followup

            lang = followup.page(engine, params, lang)
            return
        with texts.active(lang):
            if not token:
                study_id = params.get("study")
                if not study_id:
                    _message(t("link.incomplete"))
                    return
                token = _resume_or_enrol(engine, study_id, params)
                if token is None:
                    return
            state = fresh if fresh is not None and fresh.token == token else store.get_state(engine, token)
            if state is None:
                _message(t("link.invalid"))
                return
        state = _asked_language(engine, state, params.get("lang"))
        lang = state.language
        with texts.active(lang):
            browser_session.keep_token(state.study_id, state.token, state.is_pilot)
            render(StoreWriter(engine), state)
    finally:
        st.session_state.pop(FRESH_STATE, None)
        page_language.declare(lang)


def _browser_languages() -> str | None:
    """The browser's Accept-Language header (or navigator.language, as Streamlit reports it)."""
    try:
        return st.context.headers.get("Accept-Language") or st.context.locale
    except Exception:
        return None


def _asked_language(engine, state, asked: str | None):
    """A `?lang=` on the consent page (a link, the switcher) changes the stored language."""
    if asked and asked != state.language and state.step.kind == "consent" and state.active:
        if store.set_language(engine, state.token, asked) == asked:
            return store.get_state(engine, state.token)
    return state


def _resume_or_enrol(engine, study_id: str, params) -> str | None:
    """The participant this study link stands for in this browser: kept, or newly enrolled.

    A Prolific link names its participant (enrol returns the same one for the same
    PROLIFIC_PID); an anonymous link asks the browser for the token it kept for this study, so
    the link reopened, or Back to it and a reload, never enrols a second participant.
    """
    from app_pages.auth import is_pilot_key

    is_pilot = is_pilot_key(study_id, params.get("pilot"))
    status = store.study_status(engine, study_id)
    if status is None:
        _message(store.INVALID_LINK_MESSAGE)
        return None
    if not params.get("PROLIFIC_PID"):
        if status == "closed":
            # Nobody enrols and nobody submits: no need to ask the browser who this is. (A
            # Prolific link goes on to enrol, which finds its participant and their end page.)
            _message(t("enrol.closed"))
            return None
        kept = browser_session.stored_token(study_id, is_pilot)
        if kept is None:
            return None  # the browser answers in a moment, and that reruns this page
        if kept and browser_session.resumable(store.get_state(engine, kept), study_id, is_pilot):
            _remember(kept)
            return kept
    return _enrol(engine, study_id, params, is_pilot)


def _remember(token: str) -> None:
    st.session_state["participant_token"] = token
    # The token in the URL is what lets a reload resume. One change of the query, never a
    # clear() then a set: each is a browser history entry, and Back onto an empty query
    # used to leave the participant's pages.
    st.query_params.from_dict({"t": token})


def _enrol(engine, study_id: str, params, is_pilot: bool) -> str | None:
    try:
        state = store.enrol(
            engine,
            study_id,
            prolific_pid=params.get("PROLIFIC_PID") or None,
            prolific_study_id=params.get("STUDY_ID") or None,
            prolific_session_id=params.get("SESSION_ID") or None,
            is_pilot=is_pilot,
            user_agent=_user_agent(),
            language=params.get("lang"),
            accept_language=_browser_languages(),
        )
    except store.StudyClosed as exc:
        _message(str(exc))
        return None
    except UserError:
        _message(store.INVALID_LINK_MESSAGE)
        return None
    _remember(state.token)
    return state.token


def _user_agent() -> str | None:
    try:
        return st.context.headers.get("User-Agent")
    except Exception:
        return None


def _message(text: str) -> None:
    st.markdown(f"### {t('message.title')}")
    st.info(text)


# --------------------------------------------------------------------------- steps


class StoreWriter:
    """Everything a participant's page does to the database, for one real participant.

    The renderers below reach the store only through a writer, so the same page code runs for
    a researcher's preview against app_pages.preview.PreviewWriter, which stores nothing.
    `engine` is for reads (the device check's expectations); `redirects`: the completion page
    sends the browser on to the study's redirect URL.
    """

    redirects = True

    def __init__(self, engine):
        self.engine = engine

    def submit(self, state, step_key: str, answers: dict, trial_meta: dict | None = None):
        result = store.submit_step(self.engine, state.token, step_key, answers, trial_meta=trial_meta)
        st.session_state[FRESH_STATE] = result.state  # what the database holds now (page())
        return result

    def set_language(self, state, language: str):
        return store.set_language(self.engine, state.token, language)

    def record_events(self, state, events: list[dict]) -> None:
        store.record_events(self.engine, state.token, events)

    def watched_share(self, state, position: int) -> float | None:
        if position == state.step.position and state.clip_share is not store.NOT_READ:
            return state.clip_share  # read with the state, in the submit that led here
        return store.stored_watched_share(self.engine, state.participant_id, position)

    def withdraw(self, state) -> None:
        store.withdraw(self.engine, state.token)


def render(writer, state) -> None:
    if state.status == "ineligible_device":
        _ineligible(state)
        return
    if state.status in ("withdrawn", "declined", "timed_out"):
        _message(t(f"status.{state.status}"))
        return
    if state.study_status == "closed" and state.active:
        _message(t("study.closed"))
        return
    step = state.step
    flash = st.session_state.pop("participant_flash", None)
    if flash:
        st.info(flash)
    if flow.shows_progress(step):
        st.progress(state.progress)
    if step.title:
        st.subheader(local(step.title))
    RENDERERS[step.kind](writer, state)
    if state.active and flow.withdrawable(step):
        _withdraw_box(writer, state)


def _submit(writer, state, answers: dict, trial_meta: dict | None = None) -> None:
    """Store the page and show the next one; errors stay on the page, next to their items."""
    step = state.step
    errors = flow.validate_answers(step, answers)
    if not errors:
        # A double click asks for a second run while the first is still storing; Streamlit stops
        # the first run at its next element, which can be after the store and before
        # participant_last_stored is set. So the attempt is noted before storing: a duplicate
        # that follows this session's own earlier attempt at the same page is no news.
        earlier_attempt = st.session_state.get("participant_last_attempt")
        st.session_state["participant_last_attempt"] = step.key
        result = writer.submit(state, step.key, answers, trial_meta=trial_meta)
        if result.ok:
            ui.forget(step.key)
            st.session_state.pop(f"errors|{step.key}", None)
            if result.duplicate and step.key not in (st.session_state.get("participant_last_stored"), earlier_attempt):
                # Another tab or window stored this page first (a double click here is no news):
                # these answers were not saved, and the page drawn next is where they really are.
                st.session_state["participant_flash"] = t("submit.answered_elsewhere")
            elif not result.duplicate:
                st.session_state["participant_last_stored"] = step.key
            st.rerun()
        errors = result.errors
        if not errors:
            # Not the current page (second tab) or no longer active: show where they really are.
            st.session_state["participant_flash"] = result.message or t("submit.not_saved")
            st.rerun()
    st.session_state[f"errors|{step.key}"] = errors
    st.rerun()


def _errors(step) -> dict[str, str]:
    return st.session_state.get(f"errors|{step.key}") or {}


def _submit_on_click(writer, state, answers: dict) -> None:
    """A button's on_click: runs before the page is drawn, with the page the button was on.

    In the body, a click on a page that another tab has already answered would find a newer
    page there and be lost without a word; here it reaches submit_step, which says so.
    """
    from streamlit.runtime.scriptrunner import RerunException

    try:
        with texts.active(state.language):  # callbacks run before page() sets the language
            _submit(writer, state, answers)
    except RerunException:
        pass  # this run draws the page anew anyway


def _continue(writer, state, label_key: str = "button.continue") -> None:
    st.button(t(label_key), key=f"submit|{state.step.key}", type="primary",
              on_click=_submit_on_click, args=(writer, state, {}))


def _device_check(writer, state) -> None:
    from app_pages import device_check

    st.markdown(t("device.intro"))
    made = device_check.attempts_made(state)
    if made:
        st.warning(t("device.retry", attempt=made + 1, total=state.study.device_check.audio_attempts))
    for problem in _errors(state.step).values():
        st.error(problem)
    first = state.sequence[0] if state.sequence else state.practice_id
    speed_url = clip_url(state, first) if first else None
    device_check.show(writer.engine, state, speed_url, lambda answers: _submit(writer, state, answers))


def _ineligible(state) -> None:
    """The polite end of a failed device check: why, what to do, and Prolific's way out."""
    info = state.device_info if isinstance(state.device_info, dict) else {}
    st.markdown(f"### {t('message.title')}")
    st.info(store.INACTIVE_MESSAGES["ineligible_device"])
    settings = state.study.device_check
    reasons = [t(f"device.reason.{reason}", min_width=settings.min_width, min_height=settings.min_height)
               for reason in info.get("failed") or []]
    if reasons:
        st.markdown(t("device.reasons_intro"))
        st.markdown("\n".join(f"- {line}" for line in reasons))
    if state.prolific_pid:
        st.warning(t("device.prolific"))


def _instructions(writer, state) -> None:
    st.markdown(local(state.study.instructions))
    _continue(writer, state, "button.start")


def _consent(writer, state) -> None:
    _language_switcher(writer, state)
    st.markdown(local(state.study.consent.text))
    agree, decline = st.columns(2)
    with agree:
        st.button(local(state.study.consent.agree_label), key="consent|agree", type="primary",
                  on_click=_submit_on_click, args=(writer, state, {"consent": flow.Answer(flow.CONSENT_AGREE)}))
    with decline:
        st.button(t("consent.decline"), key="consent|decline", on_click=_submit_on_click,
                  args=(writer, state, {"consent": flow.Answer(flow.CONSENT_DECLINE)}))


def _language_switcher(writer, state) -> None:
    """The study's languages, each by its own name; choosing one redraws every page in it."""
    offered = list(getattr(state.study, "languages", None) or [])
    if len(offered) < 2:
        return

    def switch(lang: str) -> None:
        writer.set_language(state, lang)

    # Buttons, not a radio: a radio's circles are 13 px, too small a target on a phone.
    st.markdown(t("language.choose"))
    for col, lang in zip(st.columns(len(offered)), offered, strict=True):
        with col:
            current = lang == state.language
            # Secondary, the current one disabled: the page's primary button stays its own action.
            st.button(t("language.name", lang), key=f"language|{lang}", type="secondary",
                      disabled=current, on_click=switch, args=(lang,))


def _items_page(writer, state) -> None:
    # One browser component for the whole page: its Continue is the page's only script run.
    questionnaire.ask(state.step, state, _errors(state.step), lambda answers: _submit(writer, state, answers))


# --------------------------------------------------------------------------- clips


def clip_url(state, stimulus_id: str) -> str:
    """The clip's https URL from the manifest, or base_url + file, or this server's clip route."""
    stim = state.stimuli.get(stimulus_id) or {}
    if stim.get("url"):
        return stim["url"]
    base = getattr(state.study.stimuli, "base_url", None)
    if base and stim.get("file"):
        return base.rstrip("/") + "/" + stim["file"].lstrip("/")
    return f"/clips/{quote(state.study_id, safe='')}/{quote(stimulus_id, safe='')}"


def captions_url(state, stimulus_id: str) -> str | None:
    """This server's route to the clip's WebVTT captions, if the manifest names a caption file."""
    if not (state.stimuli.get(stimulus_id) or {}).get("captions"):
        return None
    return f"/captions/{quote(state.study_id, safe='')}/{quote(stimulus_id, safe='')}"


def label_line(state, stimulus_id: str) -> str | None:
    """The source label this participant's condition shows with a clip (flow.shown_label), in words."""
    source = (state.stimuli.get(stimulus_id) or {}).get("source")
    shown = flow.shown_label(source, state.label_condition)
    return t("clip.label", source=t(f"source.{shown}")) if shown in ("human", "ai") else None


def next_clip(state):
    """The next step of the session that shows a clip (for preloading it), or None."""
    return next((s for s in state.steps[state.step_index + 1:] if s.has_clip), None)


def _skip_event(writer, state, message: str | None) -> None:
    # The player's own seqs start at (seconds x 1000); this slot is past any of them.
    seq = (int(time.time()) % 2_000_000) * 1000 + 999
    writer.record_events(state, [{
        "seq": seq, "position": state.step.position, "stimulus_id": state.step.stimulus_id,
        "event": "skip", "client_time": time.time() * 1000, "detail": {"reason": message or "load failed"},
    }])


def _practice(writer, state) -> None:
    # The practice clip teaches the control used during playback (continuous rating, marks).
    for note in capture.practice_notes(state.study):
        st.markdown(note)
    _clip(writer, state, with_label=False)


def _trial(writer, state) -> None:
    _clip(writer, state, with_label=True)


def _clip(writer, state, with_label: bool) -> None:
    step = state.step
    playback = state.study.playback
    label = label_line(state, step.stimulus_id) if with_label else None
    if label:
        st.markdown(label)
    stim = state.stimuli.get(step.stimulus_id) or {}
    upcoming = next_clip(state)
    src = clip_url(state, step.stimulus_id)
    status = player(
        key=f"player-{step.key}",
        # A new clip, version or language at this step (the preview switches them) is a new
        # player: the same one would keep playing what it was first given.
        instance=f"{step.key}|{step.stimulus_id}|{src}|{state.language}",
        src=src,
        captions=captions_url(state, step.stimulus_id),
        token=state.token,
        position=step.position,
        stimulus_id=step.stimulus_id,
        controls=playback.controls,
        allow_seek=playback.allow_seek,
        min_share=playback.min_watched_share,
        duration=stim.get("duration_s"),
        capture=capture.player_config(state.study),
        texts={key.removeprefix("player."): t(key) for key in text_keys("player.")},
        require_sound=getattr(playback, "require_sound", False),
        next_src=clip_url(state, upcoming.stimulus_id) if upcoming else None,
        next_stimulus_id=upcoming.stimulus_id if upcoming else None,
    )
    skipped_key = f"skipped|{step.key}"
    share = status.share
    ready = status.enough or flow.watched_enough(share, state.study) or st.session_state.get(skipped_key)
    if not ready:
        stored = writer.watched_share(state, step.position)
        if stored is not None and flow.watched_enough(stored, state.study):
            ready, share = True, stored
    if status.failed and not ready:
        st.warning(t("clip.failed"))
        if playback.allow_skip_on_error and st.button(t("clip.skip"), key=f"skip|{step.key}"):
            _skip_event(writer, state, status.failure)
            st.session_state[skipped_key] = True
            st.rerun()
    if not ready:
        st.caption(t("clip.wait"))
        return
    st.divider()
    meta = {"watched_share": share}
    questionnaire.ask(step, state, _errors(step), lambda answers: _submit(writer, state, answers, trial_meta=meta))


# --------------------------------------------------------------------------- end


def _debrief(writer, state) -> None:
    rows = flow.debrief_info(state.study, state.stimuli, state.sequence)
    st.markdown(t("debrief.intro"))
    lines = [t("debrief.line", position=row["position"], title=_title(state, row),
               source=t("debrief.source.ai") if row["ai_generated"] else t("debrief.source.human"))
             for row in rows]
    st.markdown("\n".join(lines))
    if state.label_condition == "swapped":
        st.info(t("debrief.swapped"))
    elif state.label_condition == "true":
        st.caption(t("debrief.true"))
    _continue(writer, state, "button.finish")


def _title(state, row) -> str:
    """A clip's title in the participant's language (manifest column title_<lang>), else its title."""
    titles = (state.stimuli.get(row["stimulus_id"]) or {}).get("titles") or {}
    return titles.get(state.language) or row["title"]


def _complete(writer, state) -> None:
    from app_pages import followup

    completion = state.study.completion
    st.markdown(local(completion.message))
    if completion.code:
        st.markdown(t("complete.code"))
        st.code(completion.code, language=None)
    if writer.redirects:  # not in a preview, which records nothing
        followup.personal_link_box(writer.engine, state)
    url = state.redirect_url
    if url and not writer.redirects:
        st.caption(t("preview.redirect", url=url))
    elif url:
        prolific = (urlsplit(url).hostname or "").endswith("prolific.com")
        browser_session.redirect(url, getattr(completion, "redirect_after_s", 5), {
            "countdown": t("complete.redirect.countdown"),
            "now": t("complete.return") if prolific else t("complete.redirect.now"),
        })


def _withdraw_box(writer, state) -> None:
    st.divider()
    confirm_key = "withdraw|confirm"
    if not st.session_state.get(confirm_key):
        if st.button(t("withdraw.ask"), key="withdraw|ask"):
            st.session_state[confirm_key] = True
            st.rerun()
        return
    st.warning(t("withdraw.confirm"))
    yes, no = st.columns(2)
    if yes.button(t("withdraw.yes"), key="withdraw|yes"):
        writer.withdraw(state)
        st.session_state.pop(confirm_key, None)
        st.rerun()
    if no.button(t("withdraw.no"), key="withdraw|no"):
        st.session_state.pop(confirm_key, None)
        st.rerun()


# How each kind of step (flow.KINDS) is shown; a new kind of step adds its renderer here.
RENDERERS = {
    "device_check": _device_check,
    "consent": _consent,
    "demographics": _items_page,
    "questions": _items_page,
    "attention": _items_page,
    "instructions": _instructions,
    "practice": _practice,
    "trial": _trial,
    "debrief": _debrief,
    "complete": _complete,
}
