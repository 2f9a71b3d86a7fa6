"""The HTML report in Chromium on a laptop (1280x800) and a phone (390x844): nothing wider than
the page except inside the tables' scrolling boxes, captions whole, chart legends below the plot.

The report is the synthetic full study of test_report.py (every section shown).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent

from browser_util import launch, require_chromium  # noqa: E402
from test_report import full_trials  # noqa: E402

from analysis import report, results  # noqa: E402

pytestmark = [pytest.mark.browser]

# Elements (outside a table's scrolling box) whose right edge passes the window's.
TOO_WIDE = """() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.overflow'))
  .map(e => e.tagName + ' in ' + ((e.closest('section') || {}).id || 'page') + ': ' + (e.textContent || '').slice(0, 50))"""


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    trials = full_trials()
    res = results.analyze(trials, excluded=pd.DataFrame([
        {"level": "participant", "participant_id": "p900", "stimulus_id": None,
         "reason": "failed 2 attention checks (at most 1 allowed)"}]))
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(report.build_report(trials, results=res, title="Synthetic full study"), encoding="utf-8")
    return path


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_report_fits_a_laptop_and_a_phone(page_file, width, height):
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.as_uri())
            page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length > 20")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.evaluate(TOO_WIDE) == []
            # every result table scrolls inside its own box; its caption stays outside, whole
            assert page.evaluate("Array.from(document.querySelectorAll('table.results'))"
                                 ".every(t => t.parentElement.classList.contains('overflow'))")
            assert page.evaluate("Array.from(document.querySelectorAll('p.caption'))"
                                 ".every(c => c.getBoundingClientRect().right <= window.innerWidth)")
            # legends sit below the plot area, not beside it (beside, they took half a phone's width)
            below = page.evaluate("""Array.from(document.querySelectorAll('.plotly-graph-div')).filter(
                d => d.querySelector('.legend')).map(d => d.querySelector('.legend').getBoundingClientRect().top
                >= d.querySelector('.xaxislayer-above, .xtick') .getBoundingClientRect().bottom)""")
            assert below and all(below)
            first = page.locator("#summary p.decision").inner_text()
            assert first.startswith("valence (primary outcome): ")
        finally:
            browser.close()
