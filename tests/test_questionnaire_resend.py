"""The questionnaire's Continue in Chromium against a scripted Streamlit (no app server): a
press the server never acknowledges is sent again after 8, 16 and 32 s, with the same submit_id;
a render saying the server has it (data.answered), another page in the element, or the page's
removal stops the resends. The server's side (submission_id, page_data's answered) is tested
at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_util import component_page

ROOT = Path(__file__).resolve().parent.parent

from app_pages import questionnaire as qn  # noqa: E402
from study.instruments import Item  # noqa: E402

pytestmark = pytest.mark.browser

FOLDER = ROOT / "components" / "questionnaire"
ORIGIN = "http://questionnaire.test"
PAGE = f"""<!doctype html><html><body><div id="host">{(FOLDER / "questionnaire.html").read_text()}</div>
<script type="module">
  import mount from "/questionnaire.js";
  window.kqCalls = [];
  window.kqMount = (data) => mount({{ data: {{json: JSON.stringify(data)}}, parentElement: document.getElementById("host"),
                                      setTriggerValue: (name, value) => kqCalls.push([name, value]) }});
</script></body></html>"""


def page_json(page_key: str = "p1", answered: int | None = None) -> dict:
    item = Item(id="comment", text="Anything else?", type="text", required=False, description="d")
    return qn.page_data([item], ["comment"], page_key, "tok", answered=answered)


@pytest.fixture
def page():
    with component_page(ORIGIN, PAGE, "/questionnaire.js", [FOLDER.parent / "common.js", FOLDER / "questionnaire.js"]) as page:
        page.goto(f"{ORIGIN}/")
        page.wait_for_function("() => window.kqMount")
        page.evaluate("d => kqMount(d)", page_json())
        yield page


def submits(page) -> list[dict]:
    return [value for name, value in page.evaluate("() => kqCalls") if name == "submit"]


def run_for(page, ms: int) -> None:
    page.clock.run_for(ms)
    page.wait_for_timeout(20)


def test_an_unacknowledged_continue_is_sent_again_three_times(page):
    page.locator(".kq-submit").click()
    first = submits(page)[0]["submit_id"]
    assert len(submits(page)) == 1
    run_for(page, 7_900)
    assert len(submits(page)) == 1  # not before 8 s
    run_for(page, 200)
    run_for(page, 16_000)
    run_for(page, 32_000)
    sent = submits(page)
    assert [(s["submit_id"], s.get("resend")) for s in sent] == [(first, None), (first, 1), (first, 2), (first, 3)]
    assert all(s["page_key"] == "p1" and s["answers"] == sent[0]["answers"] for s in sent)
    run_for(page, 120_000)
    assert len(submits(page)) == 4  # and then no more: the button is the participant's again


def test_a_render_with_the_answer_acknowledged_stops_the_resends(page):
    page.locator(".kq-submit").click()
    first = submits(page)[0]["submit_id"]
    page.evaluate("d => kqMount(d)", page_json(answered=None))  # another element's rerun: no news
    run_for(page, 8_100)
    assert len(submits(page)) == 2
    page.evaluate("d => kqMount(d)", page_json(answered=first))  # the server has this press
    run_for(page, 60_000)
    assert len(submits(page)) == 2
    page.locator(".kq-submit").click()  # a second press is a new submission
    assert submits(page)[-1]["submit_id"] == first + 1


@pytest.mark.parametrize("how", ["another page", "removed"])
def test_a_page_the_server_moved_on_from_sends_nothing_more(page, how):
    page.locator(".kq-submit").click()
    if how == "removed":
        page.evaluate("() => document.getElementById('host').remove()")
    else:
        page.evaluate("d => kqMount(d)", page_json("p2"))
    run_for(page, 60_000)
    assert len(submits(page)) == 1


def test_the_server_side_of_the_acknowledgement():
    assert page_json(answered=3)["answered"] == 3 and page_json()["answered"] is None
    assert qn.submission_id({"page_key": "p", "submit_id": 4}) == 4
    for bad in (None, {}, {"submit_id": "4"}, {"submit_id": True}, {"submit_id": 0}, {"submit_id": 2.5},
                {"submit_id": 2**60}, json.loads('{"submit_id": -1}')):
        assert qn.submission_id(bad) is None
