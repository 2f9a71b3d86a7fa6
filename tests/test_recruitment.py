"""Recruitment help: the Prolific study URL, completion code and URL, and the anonymous link."""

from __future__ import annotations

from study.protocol.schema import Completion
from study.recruitment import PROLIFIC_QUERY, recruitment

BASE = "https://study.example.org/"


def test_prolific_link_completion_code_and_url():
    c = Completion(code="C0DE42", redirect_url="https://app.prolific.com/submissions/complete?cc={code}")
    r = recruitment(BASE, "my-study", c)
    assert r.prolific_link == ("https://study.example.org/?study=my-study&PROLIFIC_PID={{%PROLIFIC_PID%}}"
                               "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
    assert PROLIFIC_QUERY in r.prolific_link
    assert r.anonymous_link == "https://study.example.org/?study=my-study"
    assert r.completion_code == "C0DE42"
    assert r.completion_url == r.anonymous_completion_url == "https://app.prolific.com/submissions/complete?cc=C0DE42"
    assert r.notes == []


def test_per_participant_parts_shown_as_placeholders_and_empty_when_anonymous():
    c = Completion(code="a b", redirect_url="https://panel.example.org/done?pid={PROLIFIC_PID}&c={code}&p={participant}")
    r = recruitment(BASE, "s", c)
    assert r.completion_url == "https://panel.example.org/done?pid=<PROLIFIC_PID>&c=a%20b&p=<pseudonym>"
    assert r.anonymous_completion_url == "https://panel.example.org/done?pid=&c=a%20b&p=<pseudonym>"
    assert any("anonymous link" in n for n in r.notes)


def test_missing_completion_settings_are_pointed_out():
    r = recruitment(BASE, "s", Completion(code="XYZ"))
    assert r.completion_url is None and r.completion_code == "XYZ"
    assert "redirect_url: https://app.prolific.com/submissions/complete?cc={code}" in r.notes[0]
    r = recruitment(BASE, "s", Completion())
    assert r.completion_code is None and "neither completion.code nor completion.redirect_url" in r.notes[0]
    r = recruitment(BASE, "s", Completion(redirect_url="https://app.prolific.com/submissions/complete?cc={code}"))
    assert r.completion_url == "https://app.prolific.com/submissions/complete?cc="
    assert "sets no completion.code" in r.notes[0]


def test_study_id_is_escaped_in_the_link():
    assert recruitment(BASE, "a&b", Completion()).anonymous_link == "https://study.example.org/?study=a%26b"
