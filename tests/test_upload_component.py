"""The study builder's upload component in Chromium, against a scripted upload route (no app
server): a file goes out with the ticket of the latest run, not the first one's. Each run may
bring another ticket (a study or zip opened starts a new draft) while the element, and so its
listener, stays; CI once saw an opened zip never arrive.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_util import component_page

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.browser

BUILDER = ROOT / "components" / "builder"
ORIGIN = "http://builder.test"
PAGE = f"""<!doctype html><html><body>{(BUILDER / "upload.html").read_text()}
<script type="module">
  import mount from "/upload.js";
  window.kbDone = [];
  window.kbMount = (ticket, run) => mount({{
    data: {{ticket, kind: "zip", accept: ".zip", label: "A zip"}}, parentElement: document.body,
    setTriggerValue: (key, value) => window.kbDone.push([run, key]) }});
</script></body></html>"""


def test_a_file_goes_out_with_the_latest_runs_ticket(tmp_path):
    zipped = tmp_path / "study.zip"
    zipped.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    posted: list[str] = []

    def upload_route(route):
        posted.append(route.request.url)
        route.fulfill(status=200, body='{"ok": true}', content_type="application/json")

    # joined as app_pages.browser_component joins them
    with component_page(ORIGIN, PAGE, "/upload.js", [BUILDER.parent / "common.js", BUILDER / "upload.js"]) as page:
        page.route(f"{ORIGIN}/api/builder/upload*", upload_route)
        page.goto(f"{ORIGIN}/")
        page.wait_for_function("() => window.kbMount")
        # the input is disabled until the script listens to it
        assert page.locator(".kb-input").is_disabled()
        page.evaluate("() => { kbMount('first-ticket', 1); kbMount('second-ticket', 2); }")
        assert page.locator(".kb-input").is_enabled()
        page.locator(".kb-input").set_input_files(str(zipped))
        page.wait_for_function("() => window.kbDone.length > 0")
        assert len(posted) == 1
        query = parse_qs(urlsplit(posted[0]).query)
        assert query["ticket"] == ["second-ticket"] and query["kind"] == ["zip"] and query["name"] == ["study.zip"]
        assert page.evaluate("() => window.kbDone") == [[2, "done"]]  # the latest run is told
        assert "study.zip: received" in page.locator(".kb-status").inner_text()
