"""Follow-up sessions in Chromium: the personal link shown at the end of session 1, the follow-up
by Prolific link and by personal link, too early (both links), too late (both links: allowed,
flagged late with the actual delay in the stored session), unknown, not eligible (no session 1,
session 1 not completed, excluded in session 1), and the loader linking both sessions.

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


N_SCALES = 5  # per seen clip: vividness, intrusions, valence and arousal now, watch more


def wait_count(page, selector: str, n: int) -> None:
    """Wait until exactly `n` elements match (fails with the count seen)."""
    try:
        page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n", arg=[selector, n],
                               timeout=TIMEOUT)
    except Exception:
        raise AssertionError(f"expected {n} x {selector}, saw {page.locator(selector).count()}:\n"
                             f"{page.inner_text('body')[:2000]}") from None


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
    # Streamlit draws a page element by element: wait until every still and every question of
    # the page is there before answering, or a question drawn late stays unanswered
    wait_count(page, '[data-testid="stImage"] img', n_stills)
    wait_count(page, '[data-testid="stRadio"]', 2 * n_stills)
    shot(page, f"{name}recognition")
    groups = page.locator('[data-testid="stRadio"]')
    for k in range(groups.count()):
        groups.nth(k).locator("[data-testid=stRadioOption]").first.click()
    wait_count(page, '[data-testid="stRadio"] input:checked', 2 * n_stills)  # every click took
    click(page, "Continue")
    for clip in range(n_seen):
        wait_text(page, f"Clip {clip + 1} of {n_seen}")
        # the previous clip's answered questions stay on screen until Streamlit replaces them in
        # place: wait for this clip's questions, all unanswered
        wait_count(page, '[data-testid="stRadio"]', N_SCALES)
        wait_count(page, '[data-testid="stRadio"] input:checked', 0)
        if clip == 0:
            shot(page, f"{name}clip")
        radios = page.locator('[data-testid="stRadio"]')
        for k in range(radios.count()):
            radios.nth(k).locator("[data-testid=stRadioOption]").last.click()
        wait_count(page, '[data-testid="stRadio"] input:checked', N_SCALES)
        click(page, "Continue")
    wait_text(page, "FUDAY1")
    shot(page, f"{name}complete")


def stored_session(engine, participant_id: int, name: str = "day1"):
    """The participant's follow_up_sessions row (None before the follow-up was started)."""
    import sqlalchemy as sa

    fs = store.tables.followup_sessions
    with engine.connect() as conn:
        return conn.execute(sa.select(fs).where(fs.c.participant_id == participant_id,
                                                fs.c.followup == name)).mappings().first()


def opens_text(engine, state) -> str:
    """When day1 opens for this participant, as the too-early page must say it."""
    from study import followup as fup
    from study.store import followups

    fu = store.get_study(engine, state.study_id).study.follow_ups[0]
    done = followups.completed_at(engine, state.participant_id)
    return fup.when_text(fup.timing(fu, done, done).opens_at, "en")


def test_followup_by_personal_and_prolific_link(fu_server, tmp_path):
    import sqlalchemy as sa
    from playwright.sync_api import sync_playwright

    from conftest import enrol
    from study.store import followups

    server, engine, clock = fu_server
    study_id = "kuleshov-demo"
    anon = session_one(engine, study_id)
    anon_late = session_one(engine, study_id)
    prolific = session_one(engine, study_id, prolific_pid="PROLIFICPID1")
    excluded = session_one(engine, study_id, prolific_pid="EXCLUDEDPID")
    halfway = enrol(engine, study_id, prolific_pid="HALFWAYPID")  # never completes session 1
    assert not halfway.completed
    with engine.begin() as conn:
        conn.execute(store.tables.participants.update().where(
            store.tables.participants.c.id == excluded.participant_id).values(
            excluded_reason="failed attention checks"))
    fu_link = f"{server.url}/?study={study_id}&followup=day1"
    prolific_link = f"{fu_link}&PROLIFIC_PID=PROLIFICPID1&STUDY_ID=x&SESSION_ID=y"
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
        # too early, by personal link and by Prolific link: when to come back, nothing stored
        for url, who in ((personal, anon), (prolific_link, prolific)):
            page.goto(url)
            wait_text(page, "This follow-up opens on")
            assert opens_text(engine, who) in page.inner_text("body")
            assert stored_session(engine, who.participant_id) is None
        shot(page, "too-early")
        # unknown and not eligible
        page.goto(f"{fu_link}&f=not-a-real-token")
        wait_text(page, "This follow-up link is not valid")
        shot(page, "unknown")
        page.goto(f"{fu_link}&PROLIFIC_PID=SOMEONEELSE")
        wait_text(page, "only for people who completed the first session")
        shot(page, "not-eligible")
        # a day later: the personal link opens the follow-up
        clock.write_text("25")
        # open now, but not for someone who did not complete session 1, nor for someone excluded
        # there (day1 does not say invite_excluded)
        for pid in ("HALFWAYPID", "EXCLUDEDPID"):
            page.goto(f"{fu_link}&PROLIFIC_PID={pid}")
            wait_text(page, "only for people who completed the first session")
            assert "Welcome back" not in page.inner_text("body")
        assert stored_session(engine, halfway.participant_id) is None
        assert stored_session(engine, excluded.participant_id) is None
        page.goto(personal)
        take_followup(page, n_seen=2, n_stills=3)
        # past the window (60 h after session 1): the Prolific link and a personal link still
        # work, flagged late with the actual delay
        clock.write_text("60")
        page2 = browser.new_page()
        page2.goto(prolific_link)
        wait_text(page2, "meant for an earlier time")
        shot(page2, "late-intro")
        take_followup(page2, n_seen=2, n_stills=3, name="late-")
        page2.goto(f"{fu_link}&f={followups.personal_link_token(engine, anon_late.token)}")
        wait_text(page2, "meant for an earlier time")
        page2.get_by_role("button", name="Continue").first.wait_for(timeout=TIMEOUT)
        browser.close()
    # the stored sessions: session number, the actual delay, late only past the window
    on_time, late, late_personal = (stored_session(engine, p.participant_id) for p in (anon, prolific, anon_late))
    assert on_time["session_number"] == late["session_number"] == late_personal["session_number"] == 2
    assert not on_time["late"] and late["late"] and late_personal["late"]
    assert on_time["delay_hours"] == pytest.approx(25, abs=0.2)
    assert late["delay_hours"] == pytest.approx(60, abs=0.2)
    assert late_personal["delay_hours"] == pytest.approx(60, abs=0.2)
    assert on_time["status"] == late["status"] == "completed" and late_personal["status"] == "started"
    with engine.connect() as conn:
        n_sessions = conn.execute(sa.select(sa.func.count()).select_from(store.tables.followup_sessions)).scalar()
    assert n_sessions == 3  # nothing for the too-early, unknown and not-eligible visits
    from analysis.load import load_followup

    frame = load_followup(engine, study_id)
    by = frame.groupby("participant_id")
    assert set(by.groups) == {anon.pseudonym, prolific.pseudonym}  # the started session has no answers yet
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
