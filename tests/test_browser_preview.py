"""Headless Chromium: a researcher previews a study as a participant, and not one row is written.

The real server runs a short variant of the demo study (three clips of two counterbalancing
lists). The preview link refuses an anonymous visitor (login form, no enrolment); after login
every step is shown through the step picker (browser_util.preview_every_step, which the study
builder's test uses too), the label condition and the list are switched and the clip label
follows, a clip is played (its events answered as settled by the server and dropped), its
ratings are validated as usual and then accepted, and every table has as many rows as before.
"""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from browser_util import (  # noqa: E402
    PASSWORD,
    PREVIEW_BANNER,
    launch,
    log_in_if_asked,
    page_report,
    preview_close_options,
    preview_every_step,
    preview_pick,
    require_chromium,
    row_counts,
    start_server,
    wait_idle,
    wait_until,
)
from study import store, texts  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
STUDY_ID = "preview-test"
WAIT_MS = 30_000


def short_study(tmp_path: Path) -> Path:
    """The demo with three clips per participant, one of each pair: two lists."""
    spec = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    spec["id"] = STUDY_ID
    spec["stimuli"]["manifest"] = str(DEMO.parent / spec["stimuli"].get("manifest", "manifest.csv"))
    spec["design"].update(clips_per_participant=3, pairs="one_per_participant")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def label_text(source: str) -> str:
    return texts.t("clip.label", "en", source=texts.t(f"source.{source}", "en")).replace("**", "")


def test_preview_every_step_switch_condition_and_list_and_write_nothing(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    from test_browser_participant import answer_page

    server = start_server(sqlite_url, tmp_path, short_study(tmp_path))
    engine = store.make_engine(sqlite_url)
    try:
        plan = store.preview_plan(engine, STUDY_ID)
        assert len(plan.lists) == 2
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            posted: list = []
            page.on("response", lambda r: posted.append(r) if r.url.endswith(("/api/events", "/api/traces")) else None)

            # Anonymous: the login form, never a preview and never an enrolment.
            page.goto(f"{server.url}/?study={STUDY_ID}&preview=1")
            page.locator('input[type="password"]').wait_for(timeout=WAIT_MS)
            wait_idle(page)
            body = page.inner_text("body")
            assert "The preview is for researchers" in body and PREVIEW_BANNER not in body, body[:500]
            assert "t=" not in page.url
            assert row_counts(engine)["participants"] == 0

            log_in_if_asked(page)
            before = row_counts(engine)  # after the login (which is audited as every login is)

            keys = preview_every_step(page, server.url, STUDY_ID)
            assert keys == [s.key for s in plan.steps(0)]
            assert "t=" not in page.url

            # Label condition and list: the clip's label follows both.
            # A position whose clip has another source in list 1 than in list 0.
            pos = next(n for n in range(1, 4) if plan.ctx.stimuli[plan.sequence(0)[n - 1]]["source"]
                       != plan.ctx.stimuli[plan.sequence(1)[n - 1]]["source"])
            source = {i: plan.ctx.stimuli[plan.sequence(i)[pos - 1]]["source"] for i in range(2)}
            preview_pick(page, "Step", f"Clip {pos} of 3 (trial:{pos})")
            assert page.get_by_text(label_text("human")).count() == 0 and page.get_by_text(label_text("ai")).count() == 0
            preview_pick(page, "Label condition", "swapped")
            swapped = {"human": "ai", "ai": "human"}
            page.get_by_text(label_text(swapped[source[0]])).first.wait_for(timeout=WAIT_MS)
            preview_pick(page, "List", f"1: {', '.join(plan.lists[1])}")
            page.get_by_text(label_text(swapped[source[1]])).first.wait_for(timeout=WAIT_MS)
            preview_pick(page, "Label condition", "true")
            page.get_by_text(label_text(source[1])).first.wait_for(timeout=WAIT_MS)
            assert "condition=true" in page.url and "list=1" in page.url and f"step=trial%3A{pos}" in page.url
            # ... and so does the clip: the player holds list 1's, not the one it was first given
            wanted = f"/{quote(plan.sequence(1)[pos - 1], safe='')}"
            shown_src = lambda: page.locator(".kp-video:visible").first.get_attribute("src") or ""  # noqa: E731
            wait_until(lambda: shown_src().endswith(wanted), WAIT_MS / 1000, f"the player holding {wanted}", shown_src)

            # The clip plays; its events go to the server, which settles and drops them.
            # (after the last switch's script run: a click on the player it replaces is lost;
            # with the options popover closed: its panel covers the Start button)
            wait_idle(page)
            preview_close_options(page)
            page.locator(".kp-start:visible").click()
            page.locator(".kp-video:visible").first.wait_for(timeout=WAIT_MS)
            wait_until(lambda: page.evaluate("v => v.currentTime > 0", page.locator(".kp-video:visible").first.element_handle()),
                       WAIT_MS / 1000, "the clip playing after Start", lambda: page_report(page, server))
            page.locator(f'.kq-root[data-page="trial:{pos}"]').wait_for(timeout=40_000)
            page.wait_for_timeout(1500)
            assert posted, "the player sent no events"
            for response in posted:
                assert response.status == 200, (response.url, response.status)
                assert response.json()["preview"] is True and response.json()["recorded"] == 0

            # Ratings: validated as for a participant, then accepted and the preview moves on.
            page.locator(".kq-submit:visible").click()
            page.get_by_text(texts.t("error.required", "en")).first.wait_for(timeout=WAIT_MS)
            state = store.preview_state(plan, token=store.new_preview_token(), condition="true", list_index=1,
                                        step_key=f"trial:{pos}")
            answer_page(page, state.step, state.item_order, random.Random(3))
            page.locator(".kq-submit:visible").click()
            after = plan.steps(1)[[s.key for s in plan.steps(1)].index(f"trial:{pos}") + 1]
            page.locator("h3", has_text=texts.local(after.title, "en")).first.wait_for(timeout=WAIT_MS)
            assert f"step={after.key.replace(':', '%3A')}" in page.url

            assert row_counts(engine) == before
            assert not errors, errors
            browser.close()
    finally:
        engine.dispose()
        server.stop()


def test_the_studies_page_opens_the_preview_in_the_same_session(tmp_path, sqlite_url):
    """The Studies page's preview link keeps the login (a new tab would need a second one)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    server = start_server(sqlite_url, tmp_path, short_study(tmp_path))
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{server.url}/researcher-studies")
            page.locator('input[type="password"]').wait_for(timeout=WAIT_MS)
            page.locator('input[type="password"]').fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.locator("h1", has_text="Studies").first.wait_for(timeout=WAIT_MS)
            before = row_counts(sqlite_url)
            page.evaluate("window.__kuleshovNoReload = 1")
            page.get_by_role("link", name="Preview as a participant").first.click()
            page.get_by_text(PREVIEW_BANNER).first.wait_for(timeout=WAIT_MS)
            assert page.evaluate("window.__kuleshovNoReload") == 1  # the same page, the same session
            assert f"study={STUDY_ID}" in page.url and "preview=1" in page.url
            assert page.locator('input[type="password"]').count() == 0
            assert preview_every_step(page, server.url, STUDY_ID)[-1] == "complete"
            assert row_counts(sqlite_url) == before
            browser.close()
    finally:
        server.stop()
