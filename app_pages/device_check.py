"""Python side of the device check before consent (components/device_check, Streamlit components v2).

The page computes on the server what the browser is asked and what it is judged against
(`study.device_check.expectations`: the study's codec strings and the clips' highest bitrate),
makes the sounds (WAV files from the participant's secret seed, so the answers never reach the
browser), and passes the browser's one report, with those expectations, to the usual
`flow.validate_answers` + `store.submit_step` path, which judges it (`study.device_check.judge`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import streamlit as st

from app_pages import browser_component, component_data

from study import device_check, store
from study import texts as catalogue
from study.flow import DEVICE_REPORT, Answer

TEXT_PREFIX = "device_ui."
SPEED_BYTES = 512 * 1024


_component = browser_component("kuleshov.device_check", "device_check", "device_check.html",
                               css=("device_check.css",), js=("device_check.js",))


def ui_texts() -> dict[str, str]:
    return {key[len(TEXT_PREFIX):]: catalogue.t(key) for key in catalogue.keys(TEXT_PREFIX)}


def expectations_for(engine, state) -> device_check.Expectations:
    """What this participant's study version expects (codec strings, bitrate), cached per process."""
    key = (state.study_id, state.study_version)
    hit = _EXPECT.get(key)
    if hit is None:
        info = store.get_study(engine, state.study_id, version=state.study_version)
        hit = device_check.expectations(info.manifest, info.manifest_dir, state.study.device_check)
        if len(_EXPECT) > 256:
            _EXPECT.clear()
        _EXPECT[key] = hit
    return hit


_EXPECT: dict[tuple, device_check.Expectations] = {}


def attempts_made(state) -> int:
    info = state.device_info if isinstance(state.device_info, dict) else {}
    return len(info.get("audio_attempts") or [])


def page_data(state, expect: device_check.Expectations, speed_url: str | None) -> dict:
    """Everything the browser needs, and nothing it could read the answers from."""
    settings = state.study.device_check
    seed = device_check.seed_of(state.device_info, state.token)
    attempt = attempts_made(state)
    audio = None
    if settings.audio_test:
        audio = device_check.data_url(device_check.beeps_wav(device_check.digits(seed, attempt), seed))
    phones = None
    if settings.headphone_check:
        phones = [device_check.data_url(device_check.headphone_wav(q, a)) for q, a in device_check.headphone_plan(seed)]
    return {
        "page_key": f"device_check:{attempt}",
        "codecs": list(expect.codecs),
        "min_width": settings.min_width,
        "min_height": settings.min_height,
        "audio": audio,
        "headphones": phones,
        "speed_url": speed_url if settings.min_speed_factor else None,
        "speed_bytes": SPEED_BYTES,
        "texts": ui_texts(),
    }


def answers_from_submission(payload, page_key: str, expect: device_check.Expectations) -> dict | None:
    """The submit as flow answers (the browser's report beside the server's expectations), or None if stale."""
    if not isinstance(payload, Mapping) or payload.get("page_key") != page_key:
        return None
    return {DEVICE_REPORT: Answer({"report": payload.get("report"), "expect": expect})}


def show(engine, state, speed_url: str | None, submit: Callable[[dict], None]) -> None:
    """Mount the check; its one report goes to `submit` in the run the browser's submit caused."""
    from streamlit.runtime.scriptrunner import RerunException

    expect = expectations_for(engine, state)
    data = page_data(state, expect, speed_url)
    key = "device_check"

    def on_submit() -> None:
        result = st.session_state.get(key)
        payload = result.get("submit") if isinstance(result, Mapping) else getattr(result, "submit", None)
        answers = answers_from_submission(payload, data["page_key"], expect)
        if answers is None:
            return
        try:
            submit(answers)
        except RerunException:
            pass

    _component(key=key, data=component_data(data), on_submit_change=on_submit)
