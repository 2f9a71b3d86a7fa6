"""The player's resend queue in Chromium, against a scripted events route (no app server):
events the server refused are never sent again, events it accepted are not resent, events
left unjudged are, and a server that keeps failing gets a bounded number of tries.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_util import component_page

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.browser

PLAYER = ROOT / "components" / "player"
ORIGIN = "http://player.test"
PAGE = f"""<!doctype html><html><body>{(PLAYER / "player.html").read_text()}
<script type="module">
  import mount from "/player.js";
  window.kpRecord = () => {{}};
  window.kpMount = (data) => mount({{ data, parentElement: document.body, setStateValue: () => {{}} }});
</script></body></html>"""


@pytest.fixture
def page():
    # joined as app_pages/player.py joins them
    with component_page(ORIGIN, PAGE, "/player.js",
                        [PLAYER.parent / "common.js", PLAYER / "continuous.js", PLAYER / "player.js"]) as page:
        page.route(f"{ORIGIN}/clip.mp4", lambda route: None)  # never answers: no load error to flush
        yield page


def _mount_and_collect(page, answer):
    """Mount the player; `answer(events)` gives (status, json) for each POST. Returns the posts."""
    posts: list[list[dict]] = []

    def events_route(route):
        events = json.loads(route.request.post_data)["events"]
        posts.append(events)
        status, body = answer(events)
        route.fulfill(status=status, body=json.dumps(body), content_type="application/json")

    page.route(f"{ORIGIN}/api/events", events_route)
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("() => window.kpMount")
    page.evaluate("""() => kpMount({instance: "i1", token: "tok", events_url: "/api/events", src: "/clip.mp4",
                                    position: 1, stimulus_id: "ai_01", seq_base: 1000, min_share: 1})""")
    _more_events(page, 5)
    return posts


def _more_events(page, n):
    page.evaluate("""(n) => { const v = document.querySelector(".kp-video");
                              for (let i = 0; i < n; i++) v.dispatchEvent(new Event("waiting")); }""", n)


def _advance(page, posts, seconds, until=None):
    for _ in range(int(seconds)):
        page.clock.run_for(1000)
        page.wait_for_timeout(20)  # let fetch and the route handler run in real time
        if until is not None and until():
            return


def test_refused_events_are_dropped_and_unjudged_ones_resent(page):
    def answer(events):
        if len(posts) == 1:  # first batch: refuse the first event, leave the last one unjudged
            return 400, {"error": "1 of n events refused", "received": len(events), "recorded": len(events) - 2,
                         "accepted": list(range(1, len(events) - 1)),
                         "refused": [{"index": 0, "seq": events[0]["seq"], "reason": "events[0]: test"}]}
        return 200, {"received": len(events), "recorded": len(events), "accepted": list(range(len(events))),
                     "refused": []}

    posts = _mount_and_collect(page, answer)
    _advance(page, posts, 6, until=lambda: len(posts) >= 1)  # the 4 s flush timer
    assert posts, "the player posted nothing"
    first = posts[0]
    assert len(first) >= 2, first
    refused_seq, unjudged_seq = first[0]["seq"], first[-1]["seq"]
    _advance(page, posts, 12, until=lambda: len(posts) >= 2)
    later = [ev["seq"] for batch in posts[1:] for ev in batch]
    assert unjudged_seq in later  # neither accepted nor refused: sent again
    assert refused_seq not in later  # refused: never again
    assert not set(ev["seq"] for ev in first[1:-1]) & set(later)  # accepted: not resent


def test_server_errors_get_a_bounded_number_of_tries(page):
    posts = _mount_and_collect(page, lambda events: (500, {"error": "boom"}))
    # backoff 2, 4, 8, 16, 30, 30, 30 s: eight tries within about two minutes, then none
    _advance(page, posts, 400)
    first_seq = posts[0][0]["seq"]
    tries = sum(first_seq in [ev["seq"] for ev in batch] for batch in posts)
    assert tries == 8, [len(b) for b in posts]


def test_a_new_instance_on_the_same_root_takes_the_video_over_alone(page):
    """Another clip at the same step (the preview switches list or version) mounts a new player
    on the same <video>: the old one's listeners, captions track and preloader go with it."""
    page.route(f"{ORIGIN}/api/events", lambda route: route.fulfill(
        status=200, body='{"accepted": [], "refused": []}', content_type="application/json"))
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("() => window.kpMount")
    calls = page.evaluate("""async () => {
      const mount = (await import("/player.js")).default;
      const calls = [];
      const data = (instance) => ({instance, token: "tok", events_url: "/api/events", src: "/clip.mp4",
                                   captions_src: "/c.vtt", position: 1, stimulus_id: instance, seq_base: 1000,
                                   min_share: 1, error_text: "error of " + instance});
      const comp = (instance) => ({data: data(instance), parentElement: document.body,
                                   setStateValue: (name, value) => calls.push([name, value && value.instance])});
      mount(comp("i1"));
      mount(comp("i2"));
      const v = document.querySelector(".kp-video");
      v.dispatchEvent(new Event("error"));
      return {calls, tracks: v.querySelectorAll("track").length,
              error: document.querySelector(".kp-error-text").textContent};
    }""")
    assert calls["calls"] == [["failure", "i2"]]
    assert calls["tracks"] == 1
    assert calls["error"] == "error of i2"
