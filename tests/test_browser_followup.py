"""Follow-up sessions in Chromium: the personal link shown at the end of session 1, the follow-up
by Prolific link and by personal link, too early, too late, unknown, and the export linking both.

Session 1 is taken through the store's real flow (the same submit_step the page calls; the
session-1 pages have their own browser tests); its completion page is then opened in Chromium,
which shows the personal link. The server's clock is moved forward through KULESHOV_CLOCK_FILE.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser_util import launch, require_chromium, start_server
from test_followup import followup_study, session_one

from study import store

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 30_000
SHOTS = Path(os.environ.get("FOLLOWUP_SHOTS", "")) if os.environ.get("FOLLOWUP_SHOTS") else None


def short_study(tmp_path: Path) -> str:
    path = followup_study(tmp_path, """
follow_ups:
  - name: day1
    delay_hours: 24
    window_hours: 24
    ask: {foils: 1}
    completion: {code: FUDAY1}
device_check:
  enabled: false
""", clips=2)
    return path


@pytest.fixture(scope="module")
def fu_server(tmp_path_factory):
    require_chromium()
    tmp = tmp_path_factory.mktemp("fu")
    url = f"sqlite:///{tmp / 'kuleshov.db'}"
    clock = tmp / "clock"
    clock.write_text("0")
    study = short_study(tmp)
    server = start_server(url, tmp, Path(study), extra_env={"KULESHOV_CLOCK_FILE": str(clock)})
    engine = store.make_engine(url)
    yield server, engine, clock
    engine.dispose()
    server.stop()


def wait_text(page, text: str) -> None:
    page.get_by_text(text, exact=False).first.wait_for(timeout=TIMEOUT)


def shot(page, name: str) -> None:
    if SHOTS is None:
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("phone", (390, 844)), ("laptop", (1366, 768))):
        page.set_viewport_size({"width": size[0], "height": size[1]})
        page.wait_for_timeout(400)
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=False)


def click(page, label: str) -> None:
    page.get_by_role("button", name=label).first.click()


def take_followup(page, n_seen: int, n_stills: int, name: str = "") -> None:
    wait_text(page, "Welcome back")
    shot(page, f"{name}intro")
    click(page, "Continue")
    page.locator("textarea").first.wait_for(timeout=TIMEOUT)
    page.locator("textarea").first.fill("A dawn over the water, I think.")
    shot(page, f"{name}recall")
    click(page, "Continue")
    wait_text(page, "Still 1 of")
    stills = page.locator('[data-testid="stImage"] img')
    stills.first.wait_for(timeout=TIMEOUT)
    # the page renders its stills one by one: wait for all of them (or fail on the count)
    try:
        page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= {n_stills}",
                               timeout=TIMEOUT)
    except Exception:
        pass
    assert stills.count() == n_stills
    shot(page, f"{name}recognition")
    groups = page.locator('[data-testid="stRadio"]')
    assert groups.count() == 2 * n_stills
    for k in range(groups.count()):
        groups.nth(k).locator("[data-testid=stRadioOption]").first.click()
    click(page, "Continue")
    for clip in range(n_seen):
        wait_text(page, f"Clip {clip + 1} of {n_seen}")
        if clip == 0:
            shot(page, f"{name}clip")
        radios = page.locator('[data-testid="stRadio"]')
        for k in range(radios.count()):
            radios.nth(k).locator("[data-testid=stRadioOption]").last.click()
        click(page, "Continue")
    wait_text(page, "FUDAY1")
    shot(page, f"{name}complete")


def test_followup_by_personal_and_prolific_link(fu_server, tmp_path):
    from playwright.sync_api import sync_playwright

    server, engine, clock = fu_server
    study_id = "kuleshov-demo"
    anon = session_one(engine, study_id)
    prolific = session_one(engine, study_id, prolific_pid="PROLIFICPID1")
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        # the end of session 1 shows the personal link
        page.goto(f"{server.url}/?t={anon.token}")
        wait_text(page, "personal link")
        shot(page, "session1-personal-link")
        link = page.locator("code").filter(has_text="followup=day1").first.inner_text().strip()
        assert "f=" in link and anon.token not in link
        personal = server.url + "/?" + link.split("?", 1)[1]
        # too early
        page.goto(personal)
        wait_text(page, "This follow-up opens on")
        assert "UTC" in page.inner_text("body")
        shot(page, "too-early")
        # unknown and not eligible
        page.goto(f"{server.url}/?study={study_id}&followup=day1&f=not-a-real-token")
        wait_text(page, "This follow-up link is not valid")
        shot(page, "unknown")
        page.goto(f"{server.url}/?study={study_id}&followup=day1&PROLIFIC_PID=SOMEONEELSE")
        wait_text(page, "only for people who completed the first session")
        shot(page, "not-eligible")
        # a day later: the personal link opens the follow-up
        clock.write_text("25")
        page.goto(personal)
        take_followup(page, n_seen=2, n_stills=3)
        # two days later, past the window: the Prolific link still works, flagged late
        clock.write_text("60")
        page2 = browser.new_page()
        page2.goto(f"{server.url}/?study={study_id}&followup=day1&PROLIFIC_PID=PROLIFICPID1&STUDY_ID=x&SESSION_ID=y")
        wait_text(page2, "meant for an earlier time")
        shot(page2, "late-intro")
        take_followup(page2, n_seen=2, n_stills=3, name="late-")
        browser.close()
    from analysis.load import load_followup

    frame = load_followup(engine, study_id)
    by = frame.groupby("participant_id")
    assert set(by.groups) == {anon.pseudonym, prolific.pseudonym}
    anon_rows = frame[frame.participant_id == anon.pseudonym]
    late_rows = frame[frame.participant_id == prolific.pseudonym]
    assert not anon_rows.late.any() and late_rows.late.all()
    assert anon_rows.delay_hours.iloc[0] == pytest.approx(25, abs=0.2)
    assert late_rows.delay_hours.iloc[0] == pytest.approx(60, abs=0.2)
    assert set(frame.session_number) == {2}
    # recognition: 2 seen + 1 foil per participant
    rec = anon_rows[anon_rows.measure == "recognised"]
    assert len(rec) == 3 and rec.seen.sum() == 2
    assert (anon_rows[anon_rows.measure == "vividness"].value == 7).all()
