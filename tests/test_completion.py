"""The completion redirect: placeholders checked at validation, filled and escaped per participant."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from study import completion
from study.protocol import validate_study_file

MINIMAL = "title: A test study\nconsent:\n  text: You may take part.\n"
STUBS = [SimpleNamespace(id=c, source=s, pair_id=None, file=f"{c}.mp4", url=None)
         for c, s in (("h1", "human"), ("a1", "ai"), ("h2", "human"), ("a2", "ai"))]


def problems(tmp_path, redirect: str, extra: str = "") -> list:
    path = tmp_path / "study.yaml"
    path.write_text(MINIMAL + f"completion:\n  redirect_url: '{redirect}'\n{extra}", encoding="utf-8")
    (tmp_path / "manifest.csv").write_text("id,file,source\n", encoding="utf-8")
    return [p for p in validate_study_file(path, manifest_loader=lambda _p: (list(STUBS), []))
            if p.severity == "error"]


def test_every_placeholder_is_filled_and_escaped():
    url = completion.redirect_for(
        "https://panel.example.org/done/{participant}?pid={PROLIFIC_PID}&s={STUDY_ID}&x={SESSION_ID}&cc={code}#{code}",
        prolific_pid="a&b=c d/é", prolific_study_id="S1", prolific_session_id="?#", pseudonym="P0007", code="C0DE")
    assert url == ("https://panel.example.org/done/P0007?pid=a%26b%3Dc%20d%2F%C3%A9&s=S1&x=%3F%23&cc=C0DE#C0DE")
    # Whatever the link carried, it stays one query value and cannot add parameters.
    query = parse_qs(urlsplit(url).query)
    assert query["pid"] == ["a&b=c d/é"] and set(query) == {"pid", "s", "x", "cc"}


def test_missing_values_become_empty_and_braces_can_be_literal():
    assert completion.redirect_for("https://x.org/?a={PROLIFIC_PID}&b={code}") == "https://x.org/?a=&b="
    assert completion.redirect_for("https://x.org/{{raw}}?p={participant}", pseudonym="P1") == "https://x.org/{raw}?p=P1"
    assert completion.redirect_for(None) is None
    assert completion.redirect_for("https://app.prolific.com/submissions/complete?cc=ABC") == \
        "https://app.prolific.com/submissions/complete?cc=ABC"


@pytest.mark.parametrize("url,words", [
    ("https://x.org/?id={prolific_pid}", "unknown placeholder {prolific_pid} (did you mean {PROLIFIC_PID}?); "
                                         "known: {PROLIFIC_PID}, {STUDY_ID}, {SESSION_ID}, {participant}, {code}"),
    ("https://x.org/?id={participnt}", "(did you mean {participant}?)"),
    ("https://x.org/?id={PID}", "unknown placeholder {PID}"),
    ("https://x.org/?id={code:>8}", "may not carry a format"),
    ("https://x.org/?id={code", "unmatched brace"),
    ("https://{participant}.x.org/", "not in the host"),
    ("{code}://x.org/", "must be a full https:// address"),
    ("javascript:alert(1)", "must be a full https:// address"),
    ("http://app.prolific.com/x?cc={code}", "plain http is only allowed to localhost"),
    ("ftp://x.org/", "must be a full https:// address"),
])
def test_validate_names_the_bad_redirect(tmp_path, url, words):
    found = problems(tmp_path, url)
    hits = [p for p in found if p.where.endswith("completion.redirect_url") and words in p.message]
    assert hits, f"{url}: {[str(p) for p in found]}"
    assert all("Traceback" not in p.message for p in found)


@pytest.mark.parametrize("url", [
    "https://app.prolific.com/submissions/complete?cc={code}",
    "https://x.sona-systems.com/webstudy_credit.aspx?experiment_id=1&credit_token=ab&survey_code={PROLIFIC_PID}",
    "https://connect.cloudresearch.com/participant/project/ABC/complete?pid={PROLIFIC_PID}&p={participant}",
    "http://127.0.0.1:8000/done?p={participant}",
    "http://localhost/done",
])
def test_good_redirects_pass(tmp_path, url):
    assert problems(tmp_path, url) == []


def test_countdown_is_bounded(tmp_path):
    found = problems(tmp_path, "https://x.org/", extra="  redirect_after_s: 600\n")
    assert [p.where.split(": ", 1)[1] for p in found] == ["completion.redirect_after_s"]


def test_participant_state_fills_its_own_values():
    from study.store.sessions import ParticipantState

    study = SimpleNamespace(completion=SimpleNamespace(
        code="XYZ", redirect_url="https://x.org/c?cc={code}&pid={PROLIFIC_PID}&p={participant}&s={SESSION_ID}"))
    base = dict(participant_id=1, token="tok", pseudonym="P0003", study_id="s", label_condition="none",
                list_index=0, participant_number=3, is_pilot=False, step_index=0, step=None, steps=(),
                sequence=[], practice_id=None, study=study, stimuli={}, item_order=[], answers={},
                prolific_pid="pp 1", prolific_session_id="ss")
    assert ParticipantState(status="started", **base).redirect_url is None
    assert ParticipantState(status="completed", **base).redirect_url == "https://x.org/c?cc=XYZ&pid=pp%201&p=P0003&s=ss"


def test_a_browser_kept_token_resumes_only_its_own_study_and_kind():
    from app_pages.browser_session import resumable

    state = SimpleNamespace(study_id="demo", is_pilot=False)
    assert resumable(state, "demo", False)
    assert not resumable(state, "other-study", False)
    assert not resumable(state, "demo", True)
    assert not resumable(None, "demo", False)
