"""The participant page: renders the participant's current step, read from the database each run.

Nothing about progress lives in the Streamlit session: a reload, a second tab or a lost
connection finds the participant where the database says they are. The session only holds
what is being typed on the current page. Each submit is one call to store.submit_step, which
is idempotent (a second submit of the same step writes nothing).
"""

from __future__ import annotations

import time
from urllib.parse import quote

import streamlit as st

from app_pages import get_engine, questionnaire, ui
from app_pages.player import player
from study import flow, store
from study.errors import UserError
from study.texts import keys as text_keys
from study.texts import t


# --------------------------------------------------------------------------- entry


def page() -> None:
    ui.page_css()
    params = st.query_params
    engine = get_engine()
    token = params.get("t") or st.session_state.get("participant_token")
    if not token:
        study_id = params.get("study")
        if not study_id:
            _message(t("link.incomplete"))
            return
        token = _enrol(engine, study_id, params)
        if token is None:
            return
    state = store.get_state(engine, token)
    if state is None:
        _message(store.INVALID_LINK_MESSAGE)
        return
    render(engine, state)


def _enrol(engine, study_id: str, params) -> str | None:
    from app_pages.auth import is_pilot_key

    try:
        state = store.enrol(
            engine,
            study_id,
            prolific_pid=params.get("PROLIFIC_PID") or None,
            prolific_study_id=params.get("STUDY_ID") or None,
            prolific_session_id=params.get("SESSION_ID") or None,
            is_pilot=is_pilot_key(study_id, params.get("pilot")),
            user_agent=_user_agent(),
        )
    except store.StudyClosed as exc:
        _message(str(exc))
        return None
    except UserError:
        _message(store.INVALID_LINK_MESSAGE)
        return None
    st.session_state["participant_token"] = state.token
    # The token in the URL is what lets a reload, or the same link reopened later, resume.
    st.query_params.clear()
    st.query_params["t"] = state.token
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


def render(engine, state) -> None:
    if state.status == "ineligible_device":
        _ineligible(state)
        return
    if state.status in ("withdrawn", "declined", "timed_out"):
        _message(store.INACTIVE_MESSAGES[state.status])
        return
    if state.study_status == "closed" and state.active:
        _message(store.CLOSED_MESSAGE)
        return
    step = state.step
    flash = st.session_state.pop("participant_flash", None)
    if flash:
        st.info(flash)
    if flow.shows_progress(step):
        st.progress(state.progress)
    if step.title:
        st.subheader(step.title)
    RENDERERS[step.kind](engine, state)
    if state.active and flow.withdrawable(step):
        _withdraw_box(engine, state)


def _submit(engine, state, answers: dict, trial_meta: dict | None = None) -> None:
    """Store the page and show the next one; errors stay on the page, next to their items."""
    step = state.step
    errors = flow.validate_answers(step, answers)
    if not errors:
        result = store.submit_step(engine, state.token, step.key, answers, trial_meta=trial_meta)
        if result.ok:
            ui.forget(step.key)
            st.session_state.pop(f"errors|{step.key}", None)
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


def _continue(engine, state, label_key: str = "button.continue") -> None:
    if st.button(t(label_key), key=f"submit|{state.step.key}", type="primary"):
        _submit(engine, state, {})


def _device_check(engine, state) -> None:
    from app_pages import device_check

    st.markdown(t("device.intro"))
    made = device_check.attempts_made(state)
    if made:
        st.warning(t("device.retry", attempt=made + 1, total=state.study.device_check.audio_attempts))
    for problem in _errors(state.step).values():
        st.error(problem)
    first = state.sequence[0] if state.sequence else state.practice_id
    speed_url = clip_url(state, first) if first else None
    device_check.show(engine, state, speed_url, lambda answers: _submit(engine, state, answers))


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


def _instructions(engine, state) -> None:
    st.markdown(state.study.instructions)
    _continue(engine, state, "button.start")


def _consent(engine, state) -> None:
    st.markdown(state.study.consent.text)
    agree, decline = st.columns(2)
    with agree:
        if st.button(state.study.consent.agree_label, key="consent|agree", type="primary"):
            _submit(engine, state, {"consent": flow.Answer(flow.CONSENT_AGREE)})
    with decline:
        if st.button(t("consent.decline"), key="consent|decline"):
            _submit(engine, state, {"consent": flow.Answer(flow.CONSENT_DECLINE)})


def _items_page(engine, state) -> None:
    # One browser component for the whole page: its Continue is the page's only script run.
    questionnaire.ask(state.step, state, _errors(state.step), lambda answers: _submit(engine, state, answers))


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


def label_line(state, stimulus_id: str) -> str | None:
    """The source label this participant's condition shows with a clip (flow.shown_label), in words."""
    source = (state.stimuli.get(stimulus_id) or {}).get("source")
    shown = flow.shown_label(source, state.label_condition)
    return t("clip.label", source=t(f"source.{shown}")) if shown in ("human", "ai") else None


def _skip_event(engine, state, message: str | None) -> None:
    # The player's own seqs start at (seconds x 1000); this slot is past any of them.
    seq = (int(time.time()) % 2_000_000) * 1000 + 999
    store.record_events(engine, state.token, [{
        "seq": seq, "position": state.step.position, "stimulus_id": state.step.stimulus_id,
        "event": "skip", "client_time": time.time() * 1000, "detail": {"reason": message or "load failed"},
    }])


def _practice(engine, state) -> None:
    _clip(engine, state, with_label=False)


def _trial(engine, state) -> None:
    _clip(engine, state, with_label=True)


def _clip(engine, state, with_label: bool) -> None:
    step = state.step
    playback = state.study.playback
    label = label_line(state, step.stimulus_id) if with_label else None
    if label:
        st.markdown(label)
    stim = state.stimuli.get(step.stimulus_id) or {}
    continuous = None
    cr = getattr(playback, "continuous_rating", None)
    if cr is not None:
        continuous = {"label": cr.item, "min": cr.min, "max": cr.max, "low_label": cr.min_label,
                      "high_label": cr.max_label, "interval_ms": 500}
    status = player(
        key=f"player-{step.key}",
        instance=step.key,
        src=clip_url(state, step.stimulus_id),
        token=state.token,
        position=step.position,
        stimulus_id=step.stimulus_id,
        controls=playback.controls,
        allow_seek=playback.allow_seek,
        min_share=playback.min_watched_share,
        duration=stim.get("duration_s"),
        continuous=continuous,
        texts={key.removeprefix("player."): t(key) for key in text_keys("player.")},
    )
    skipped_key = f"skipped|{step.key}"
    share = status.share
    ready = status.enough or flow.watched_enough(share, state.study) or st.session_state.get(skipped_key)
    if not ready:
        stored = store.stored_watched_share(engine, state.participant_id, step.position)
        if stored is not None and flow.watched_enough(stored, state.study):
            ready, share = True, stored
    if status.failed and not ready:
        st.warning(t("clip.failed"))
        if playback.allow_skip_on_error and st.button(t("clip.skip"), key=f"skip|{step.key}"):
            _skip_event(engine, state, status.failure)
            st.session_state[skipped_key] = True
            st.rerun()
    if not ready:
        st.caption(t("clip.wait"))
        return
    st.divider()
    meta = {"watched_share": share}
    questionnaire.ask(step, state, _errors(step), lambda answers: _submit(engine, state, answers, trial_meta=meta))


# --------------------------------------------------------------------------- end


def _debrief(engine, state) -> None:
    rows = flow.debrief_info(state.study, state.stimuli, state.sequence)
    st.markdown(t("debrief.intro"))
    lines = [t("debrief.line", position=row["position"], title=row["title"],
               source=t("debrief.source.ai") if row["ai_generated"] else t("debrief.source.human"))
             for row in rows]
    st.markdown("\n".join(lines))
    if state.label_condition == "swapped":
        st.info(t("debrief.swapped"))
    elif state.label_condition == "true":
        st.caption(t("debrief.true"))
    _continue(engine, state, "button.finish")


def _complete(state) -> None:
    completion = state.study.completion
    st.markdown(completion.message)
    if completion.code:
        st.markdown(t("complete.code"))
        st.code(completion.code, language=None)
    if completion.redirect_url:
        st.link_button(t("complete.return"), completion.redirect_url, type="primary")


def _withdraw_box(engine, state) -> None:
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
        store.withdraw(engine, state.token)
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
    "complete": lambda engine, state: _complete(state),
}
