"""The device check before consent, on the server: the report's shape, the verdict, the sounds, the store.

The browser side is tested in Chromium (test_browser_device_check.py); here hostile and broken
reports must give a sentence naming the field (never a traceback, never a stored row), and the
sounds must carry the answer they are judged against (decoded from the WAV samples).
"""

from __future__ import annotations

import copy
import io
import json
import wave
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from study import device_check as dc
from study import flow, store
from study.protocol.schema import DeviceCheck

from conftest import DEMO_STUDY

MIME = 'video/mp4; codecs="avc1.4D401E, mp4a.40.2"'
EXPECT = dc.Expectations(codecs=(MIME,), bitrate_kbps=400.0)
SEED = "0123456789abcdef"


def good_report(**changes) -> dict:
    report = {"version": 1, "screen": {"width": 1920, "height": 1080}, "window": {"width": 1280, "height": 800},
              "pixel_ratio": 2, "touch": False, "max_touch_points": 0,
              "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                            "Chrome/156.0.0.0 Safari/537.36",
              "platform": "Linux", "language": "en-GB",
              "codecs": [{"mime": MIME, "can_play": "probably", "mse": True}],
              "speed": {"bytes": 524288, "ms": 500.0, "error": None},
              "audio": {"typed": dc.digits(SEED, 0), "plays": 1, "error": None},
              "headphones": None, "stopped": None}
    report.update(changes)
    return report


def settings(**changes) -> DeviceCheck:
    return DeviceCheck(**changes)


# --------------------------------------------------------------------------- the report's shape


HOSTILE = [
    ("not an object", "must be an object, not str"),
    ({"version": 2}, "has version 2"),
    (good_report(extra=1), "unknown fields: extra"),
    (good_report(window={"width": "1280", "height": 800}), "window must be {width, height}"),
    (good_report(window={"width": float("nan"), "height": 800}), "window must be"),
    (good_report(screen={"width": 1e12, "height": 1}), "screen must be"),
    (good_report(pixel_ratio=True), "pixel_ratio must be a number"),
    (good_report(touch="yes"), "touch must be true or false"),
    (good_report(user_agent="x" * 501), "user_agent must be text of at most 500"),
    (good_report(language="en\x00"), "language must be text"),
    (good_report(platform="\ud800"), "platform must be text"),
    (good_report(codecs="all"), "codecs must be a list"),
    (good_report(codecs=[{"mime": MIME, "can_play": "yes", "mse": True}]), "codecs[0].can_play must be one of"),
    (good_report(codecs=[{"mime": MIME, "can_play": "", "mse": "no"}]), "codecs[0].mse must be"),
    (good_report(codecs=[]), "does not say whether the browser plays video/mp4"),
    (good_report(codecs=[{"mime": "x/y", "can_play": "", "mse": None}] * 51), "at most 50 entries"),
    (good_report(speed={"bytes": -1, "ms": 3}), "speed must be"),
    (good_report(audio={"typed": "1" * 21, "plays": 1}), "audio must be"),
    (good_report(audio={"typed": ["1"], "plays": 1}), "audio must be"),
    (good_report(headphones={"picks": [0, 1, 2]}), "headphones.picks must be 6 choices"),
    (good_report(headphones={"picks": [True] * 6}), "headphones.picks must be 6 choices"),
    (good_report(stopped="bored"), "stopped must be one of"),
]


@pytest.mark.parametrize("report,expected", HOSTILE, ids=[e for _, e in HOSTILE])
def test_a_bad_report_is_refused_with_a_sentence_naming_the_field(report, expected):
    problem = dc.report_problem(report, list(EXPECT.codecs))
    assert problem is not None and expected in problem


def test_a_good_report_has_no_problem():
    assert dc.report_problem(good_report(), list(EXPECT.codecs)) is None
    assert dc.report_problem(good_report(speed=None, audio=None, headphones={"picks": [0] * 6}), []) is None


def test_flow_validation_wraps_the_problem_for_the_participant():
    step = flow.Step("device_check", "device_check")
    sent = {flow.DEVICE_REPORT: flow.Answer({"report": good_report(touch=1), "expect": EXPECT})}
    assert flow.validate_answers(step, sent) == {flow.DEVICE_REPORT: (
        "The check of your browser could not be read (touch must be true or false). Please reload the page and "
        "try again.")}
    # Expectations come from the server: a browser cannot send its own.
    forged = {flow.DEVICE_REPORT: flow.Answer({"report": good_report(), "expect": {"codecs": []}})}
    assert "no device report" in flow.validate_answers(step, forged)[flow.DEVICE_REPORT]
    assert flow.validate_answers(step, {flow.DEVICE_REPORT: flow.Answer({"report": good_report(),
                                                                          "expect": EXPECT})}) == {}


# --------------------------------------------------------------------------- the verdict


def test_a_working_device_passes_and_its_measurements_are_kept():
    v = dc.judge(good_report(), settings(), EXPECT, SEED)
    assert (v.passed, v.failed, v.retry_audio) == (True, (), False)
    info = v.device_info
    assert info["browser"] == "Chrome 156" and info["pixel_ratio"] == 2 and info["screen_width"] == 1920
    assert info["speed_kbps"] == 8388.6 and info["speed_needed_kbps"] == 600.0  # 524288 B x 8 / 500 ms; 1.5 x 400
    assert info["audio_attempts"] == [{"expected": dc.digits(SEED, 0), "typed": dc.digits(SEED, 0), "plays": 1,
                                       "error": None, "ok": True}]


@pytest.mark.parametrize("change,reason", [
    ({"codecs": [{"mime": MIME, "can_play": "", "mse": False}]}, "codec"),
    ({"window": {"width": 359, "height": 800}}, "window"),
    ({"window": {"width": 1280, "height": 399}}, "window"),
    ({"speed": {"bytes": 10_000, "ms": 500.0, "error": None}}, "connection"),  # 160 kbit/s < 600
])
def test_each_hard_failure_ends_the_check_with_its_reason(change, reason):
    v = dc.judge(good_report(**change), settings(), EXPECT, SEED)
    assert (v.passed, v.failed, v.retry_audio) == (False, (reason,), False)
    assert v.device_info["failed"] == [reason] and v.device_info["audio_attempts"] == []


def test_a_speed_that_could_not_be_measured_does_not_fail_and_no_factor_means_no_check():
    blocked = good_report(speed={"bytes": 0, "ms": 0, "error": "TypeError"})
    v = dc.judge(blocked, settings(), EXPECT, SEED)
    assert v.passed and v.device_info["speed_kbps"] is None and v.device_info["speed_error"] == "TypeError"
    slow = good_report(speed={"bytes": 10_000, "ms": 500.0, "error": None})
    assert dc.judge(slow, settings(min_speed_factor=0), EXPECT, SEED).passed


def test_a_codec_only_mse_supports_still_plays():
    report = good_report(codecs=[{"mime": MIME, "can_play": "", "mse": True}])
    assert dc.judge(report, settings(), EXPECT, SEED).passed


def test_the_sound_test_allows_its_attempts_then_fails():
    s = settings(audio_attempts=3)
    wrong = good_report(audio={"typed": "999", "plays": 2, "error": None})
    first = dc.judge(wrong, s, EXPECT, SEED)
    assert (first.passed, first.failed, first.retry_audio) == (False, (), True)
    second = dc.judge(wrong, s, EXPECT, SEED, before=first.device_info)
    assert second.retry_audio and len(second.device_info["audio_attempts"]) == 2
    # The next attempt plays another sequence and is judged against it.
    right_now = good_report(audio={"typed": " ".join(dc.digits(SEED, 2)), "plays": 1, "error": None})
    assert dc.judge(right_now, s, EXPECT, SEED, before=second.device_info).passed
    third = dc.judge(wrong, s, EXPECT, SEED, before=second.device_info)
    assert (third.passed, third.failed, third.retry_audio) == (False, ("audio",), False)
    assert [a["expected"] for a in third.device_info["audio_attempts"]] == [dc.digits(SEED, k) for k in range(3)]


def test_no_sound_test_when_the_study_switches_it_off():
    v = dc.judge(good_report(audio=None), settings(audio_test=False), EXPECT, SEED)
    assert v.passed and v.device_info["audio_ok"] is None


def test_the_headphone_check_needs_five_of_six():
    plan = dc.headphone_plan(SEED)
    right = [q for q, _ in plan]
    s = settings(headphone_check=True)
    assert dc.judge(good_report(headphones={"picks": right}), s, EXPECT, SEED).passed
    one_off = right[:5] + [(right[5] + 1) % 3]
    assert dc.judge(good_report(headphones={"picks": one_off}), s, EXPECT, SEED).passed
    # Someone on loudspeakers picks the antiphase tone, which cancels in the air.
    speakers = [a for _, a in plan]
    v = dc.judge(good_report(headphones={"picks": speakers}), s, EXPECT, SEED)
    assert v.failed == ("headphones",) and v.device_info["headphone_right"] == 0


def test_browser_names():
    assert dc.browser_name("Mozilla/5.0 (Windows NT 10.0; rv:133.0) Gecko/20100101 Firefox/133.0") == "Firefox 133"
    assert dc.browser_name("... Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86") == "Edge 131"
    assert dc.browser_name("(iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                           "Version/18.1 Mobile/15E148 Safari/604.1") == "Safari 18"
    assert dc.browser_name("curl/8") == "other"


# --------------------------------------------------------------------------- the sounds


def samples(wav: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.uint8).astype(float) - 128
    return data.reshape(-1, channels), rate


def count_beep_groups(wav: bytes) -> str:
    """Listen to the sound test as a participant would: count the beeps in each group."""
    data, rate = samples(wav)
    window = int(rate * 0.01)
    envelope = np.convolve(np.abs(data[:, 0]), np.ones(window) / window, mode="same")
    loud = envelope > 20
    # Runs of sound and of silence, in samples.
    edges = np.flatnonzero(np.diff(loud.astype(int))) + 1
    runs = np.split(loud, edges)
    groups, beeps = [], 0
    for run in runs:
        if run[0] and len(run) > rate * 0.05:
            beeps += 1
        elif not run[0] and len(run) > rate * 0.5 and beeps:
            groups.append(beeps)
            beeps = 0
    return "".join(map(str, groups))


def test_the_beeps_carry_the_digits_they_are_judged_against():
    for attempt in range(6):
        answer = dc.digits(SEED, attempt)
        assert len(answer) == 3 and set(answer) <= set("12345")
        assert count_beep_groups(dc.beeps_wav(answer, SEED)) == answer
    assert len({dc.digits(f"seed{k}", 0) for k in range(50)}) > 20  # the seed decides


def test_the_headphone_tones_one_quieter_one_in_antiphase():
    for quiet, anti in dc.headphone_plan(SEED):
        data, rate = samples(dc.headphone_wav(quiet, anti))
        assert quiet != anti
        tone = int(rate * 0.8)
        starts = [int(rate * 0.2) + i * (tone + int(rate * 0.5)) for i in range(3)]
        rms = [np.sqrt(np.mean(data[s:s + tone, 0] ** 2)) for s in starts]
        assert min(range(3), key=rms.__getitem__) == quiet
        assert rms[quiet] / max(rms) == pytest.approx(10 ** (-6 / 20), abs=0.03)
        for i, s in enumerate(starts):
            left, right = data[s:s + tone, 0], data[s:s + tone, 1]
            corr = np.corrcoef(left, right)[0, 1]
            assert corr < -0.99 if i == anti else corr > 0.99


def test_the_page_gets_sounds_but_never_the_seed_or_the_digits():
    from app_pages import device_check as page

    study = SimpleNamespace(device_check=settings(headphone_check=True))
    state = SimpleNamespace(study=study, device_info={"seed": SEED}, token="tok")
    data = page.page_data(state, EXPECT, "/clips/s/c")
    text = json.dumps(data)
    assert SEED not in text and "expected" not in text
    assert data["audio"].startswith("data:audio/wav;base64,") and len(data["headphones"]) == 6
    assert data["codecs"] == [MIME] and data["page_key"] == "device_check:0"
    assert set(page.ui_texts()) >= {"play", "continue", "answer_label", "window_small"}


# --------------------------------------------------------------------------- through the store


@pytest.fixture
def demo(engine):
    return store.register_study(engine, DEMO_STUDY)


def submit(engine, state, report, expect=EXPECT):
    answers = {flow.DEVICE_REPORT: flow.Answer({"report": report, "expect": expect})}
    return store.submit_step(engine, state.token, "device_check", answers)


def test_a_hostile_report_writes_nothing_and_says_why(engine, demo):
    state = store.enrol(engine, demo)
    assert state.step.key == "device_check" and set(state.device_info) == {"seed"}
    for report, _ in HOSTILE:
        result = submit(engine, state, copy.deepcopy(report))
        assert not result.ok and list(result.errors) == [flow.DEVICE_REPORT]
        assert "could not be read" in result.errors[flow.DEVICE_REPORT]
    again = store.get_state(engine, state.token)
    assert (again.status, again.step.key, again.device_info) == ("started", "device_check", state.device_info)


def test_failing_ends_the_session_and_is_stored(engine, demo):
    state = store.enrol(engine, demo, prolific_pid="PFAIL")
    report = good_report(window={"width": 300, "height": 500})
    result = submit(engine, state, report)
    assert result.ok and result.state.status == "ineligible_device" and result.state.step.key == "device_check"
    with engine.connect() as conn:
        p = conn.execute(sa.select(store.participants).where(store.participants.c.token == state.token)).mappings().one()
        responses = conn.execute(sa.select(sa.func.count()).select_from(store.responses)).scalar_one()
    assert p["status"] == "ineligible_device" and p["excluded_reason"] == "device check failed: window"
    assert p["device_info"]["failed"] == ["window"] and p["device_info"]["seed"] == state.device_info["seed"]
    assert responses == 0
    # The session has ended: consent can no longer be given, and the same Prolific ID gets the same session.
    later = store.submit_step(engine, state.token, "consent", {"consent": flow.Answer("agree")})
    assert not later.ok and "cannot be taken on this device" in later.message
    assert store.enrol(engine, demo, prolific_pid="PFAIL").status == "ineligible_device"


def test_passing_moves_on_to_consent_and_bots_pass(engine, demo):
    state = store.enrol(engine, demo)
    seed = dc.seed_of(state.device_info, state.token)
    report = good_report(audio={"typed": dc.digits(seed, 0), "plays": 1, "error": None})
    result = submit(engine, state, report)
    assert result.ok and result.state.step.key == "consent" and result.state.status == "started"
    assert result.state.device_info["passed"] is True
    # A bot (kuleshov simulate) answers the check through the same path.
    bot_state = store.enrol(engine, demo)
    answers = flow.kind_of(bot_state.step).bot_answers(SimpleNamespace(state=bot_state), bot_state.step)
    assert store.submit_step(engine, bot_state.token, "device_check", answers).state.step.key == "consent"


def test_the_measurements_reach_participants_csv_and_failures_are_not_exclusions(engine, demo):
    from analysis import load

    passed = store.enrol(engine, demo)
    seed = dc.seed_of(passed.device_info, passed.token)
    submit(engine, passed, good_report(audio={"typed": dc.digits(seed, 0), "plays": 2, "error": None}))
    failed = store.enrol(engine, demo)
    submit(engine, failed, good_report(codecs=[{"mime": MIME, "can_play": "", "mse": False}]))
    untouched = store.enrol(engine, demo)  # still on the check
    people = load.load_participants(engine, demo).set_index("participant_id")
    ok, bad, new = (people.loc[s.pseudonym] for s in (passed, failed, untouched))
    assert (ok["device_check_passed"], ok["device_browser"], ok["device_window_width"], ok["device_pixel_ratio"]) == \
        (True, "Chrome 156", 1280, 2.0)
    assert (ok["device_audio_attempts"], ok["device_audio_ok"], ok["device_speed_kbps"]) == (1, True, 8388.6)
    assert json.loads(ok["device_codecs"]) == [{"can_play": "probably", "mime": MIME, "mse": True}]
    assert pd.isna(ok["device_check_failed"]) and pd.isna(ok["device_headphone_ok"])
    assert (bad["status"], bad["device_check_passed"], bad["device_check_failed"], bad["device_codecs_ok"]) == \
        ("ineligible_device", False, "codec", False)
    assert pd.isna(bad["device_audio_attempts"]) is False and bad["device_audio_attempts"] == 0
    assert pd.isna(new["device_check_passed"]) and pd.isna(new["device_browser"])
    assert "seed" not in " ".join(people.columns) and passed.device_info["seed"] not in people.to_csv()
    _, excluded = load.exclusions(pd.DataFrame(columns=load.TRIAL_META_COLUMNS), people.reset_index(), None)
    assert failed.pseudonym not in set(excluded["participant_id"])


def test_the_retry_and_ineligible_pages_show_only_catalogue_text_with_the_reason(tmp_path, monkeypatch):
    from test_texts import _Allowed, _render, _shown

    from study import texts

    url = f"sqlite:///{tmp_path / 'pages.db'}"
    monkeypatch.setenv("KULESHOV_DATABASE_URL", url)
    eng = store.make_engine(url)
    store.upgrade(eng)
    study_id = store.register_study(eng, str(DEMO_STUDY), actor="test")
    try:
        allowed = _Allowed({texts.t("step.device_check.title")})
        state = store.enrol(eng, study_id, prolific_pid="dev-page-1")
        submit(eng, state, good_report(audio={"typed": "000", "plays": 1, "error": None}))
        retry = _shown(_render(state.token))
        assert texts.t("device.retry", attempt=2, total=3) in retry
        assert [s for s in retry if not allowed(s)] == []
        submit(eng, state, good_report(window={"width": 200, "height": 300}))
        shown = _shown(_render(state.token))
        assert texts.t("status.ineligible_device") in shown and texts.t("device.prolific") in shown
        assert texts.t("device.reason.window", min_width=360, min_height=400) in " ".join(shown)
        assert [s for s in shown if not allowed(s) and not s.startswith("- ")] == []
        # Without a Prolific ID there is no Prolific wording.
        other = store.enrol(eng, study_id)
        submit(eng, other, good_report(codecs=[{"mime": MIME, "can_play": "", "mse": None}]))
        shown = _shown(_render(other.token))
        assert texts.t("device.prolific") not in shown and texts.t("device.reason.codec") in " ".join(shown)
    finally:
        eng.dispose()


def test_any_json_gets_a_sentence_or_a_verdict_never_an_exception():
    from hypothesis import given, settings as hsettings
    from hypothesis import strategies as st

    leaf = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=30)
    json_like = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                             | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=20)
    keys = st.sampled_from(sorted(good_report()))

    @hsettings(max_examples=300, deadline=None)
    @given(st.one_of(json_like, st.tuples(keys, json_like)))
    def check(case):
        report = good_report(**{case[0]: case[1]}) if isinstance(case, tuple) else case
        problem = dc.report_problem(report, list(EXPECT.codecs))
        if problem is None:
            verdict = dc.judge(report, settings(headphone_check=True), EXPECT, SEED)
            json.dumps(verdict.device_info, allow_nan=False)  # storable as JSON on both databases
        else:
            assert isinstance(problem, str) and problem

    check()


def test_the_expectations_come_from_the_probed_clips_unless_the_study_names_codecs(engine, demo):
    info = store.get_study(engine, demo)
    expect = dc.expectations(info.manifest, info.manifest_dir, settings())
    assert expect.codecs == (MIME,)  # every demo clip: H.264 Main level 3.0 with AAC-LC, read from the avcC box
    rates = [c["size_bytes"] * 8 / 1000 / c["duration_s"] for c in info.manifest]
    assert expect.bitrate_kbps == round(max(rates), 1) and expect.bitrate_kbps > 0
    named = dc.expectations(info.manifest, info.manifest_dir, settings(codecs=['video/webm; codecs="vp9, opus"']))
    assert named.codecs == ('video/webm; codecs="vp9, opus"',)
    with pytest.raises(ValueError, match="is not a MIME type"):
        settings(codecs=["avc1.64001e"])
