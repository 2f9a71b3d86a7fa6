"""Headless Chromium on the researcher side: login, live counts while bots take part, the export.

The real server runs the demo study on its own SQLite file; the test enrols simulated
participants into that same file from this process and waits, without reloading the page, for
the dashboard's self-refreshing fragment to show the new counts. The export is then downloaded
through the Export page's button and checked against the database.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent

from browser_util import PASSWORD, launch, require_chromium, start_server  # noqa: E402
from study import store  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"
STUDY_ID = "kuleshov-demo"
N_BOTS = 3
WAIT_MS = 30_000
# The fragment refreshes every 3 s; on a busy 2-core machine a rerun can take several more.
LIVE_DEADLINE_S = 45
EXPECTED_FILES = {"datapackage.json", "dataset_description.json", "codebook.csv", "README.txt", "study.yaml",
                  "study_hash.txt", "provenance.json"} | {
    f"{name}.{ext}" for name in ("participants", "trials", "responses", "scores", "playback_events",
                                 "continuous_samples", "traces", "marks", "trace_attempts", "stimuli", "exclusions")
    for ext in ("csv", "parquet")}


def live_counts(page) -> tuple[str, str]:
    """The dashboard's hidden live counters, read together in one step so a refresh landing
    between two reads cannot pair an old total with a new completed count."""
    page.locator('[data-testid="live-total"]').first.wait_for(state="attached", timeout=WAIT_MS)
    total, completed = page.evaluate("""() => ['live-total', 'live-completed'].map(
        id => (document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '').trim())""")
    return total, completed


def db_counts(engine) -> tuple[str, str]:
    p = store.participants.c
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).where(p.study_id == STUDY_ID)).scalar_one()
        completed = conn.execute(sa.select(sa.func.count())
                                 .where(p.study_id == STUDY_ID, p.status == "completed")).scalar_one()
    return str(total), str(completed)


def watch_while_bot_runs(page, engine, simulate, round_: int, tokens: list[str], seen: list) -> None:
    """Run one simulated participant in a thread; poll the page until it shows the database's counts."""
    failure: list[BaseException] = []

    def bot() -> None:
        try:
            tokens.extend(simulate.simulate(engine, STUDY_ID, 1, seed=5 + round_))
        except BaseException as exc:  # re-raised by the main thread
            failure.append(exc)

    worker = threading.Thread(target=bot, daemon=True)
    worker.start()
    deadline = time.monotonic() + LIVE_DEADLINE_S
    while True:
        current = live_counts(page)
        if current != seen[-1]:
            seen.append(current)
        if not worker.is_alive():
            assert not failure, failure
            if current == db_counts(engine):
                return
        assert time.monotonic() < deadline, (
            f"dashboard still shows {current} after {LIVE_DEADLINE_S} s; database has {db_counts(engine)}; "
            f"seen {seen}; bot still running: {worker.is_alive()}")
        page.wait_for_timeout(300)


def log_in(page, password: str) -> None:
    field = page.locator('input[type="password"]')
    field.wait_for(timeout=WAIT_MS)
    field.fill(password)
    page.get_by_role("button", name="Log in").click()


def test_researcher_logs_in_watches_live_counts_and_downloads_export(tmp_path, sqlite_url):
    require_chromium()
    from playwright.sync_api import sync_playwright

    from study import simulate

    t_start = time.monotonic()
    server = start_server(sqlite_url, tmp_path, DEMO)
    engine = store.make_engine(sqlite_url)
    try:
        with sync_playwright() as pw:
            browser = launch(pw)
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/researcher")

            # A wrong password: refused with a message, the login form stays, nothing else shows.
            log_in(page, "not-the-password")
            page.get_by_text("Wrong password.").first.wait_for(timeout=WAIT_MS)
            assert page.locator('input[type="password"]').count() == 1
            body = page.inner_text("body")
            assert "Log out" not in body and "Dashboard" not in body, body[:500]

            log_in(page, PASSWORD)
            page.get_by_text("Log out").first.wait_for(timeout=WAIT_MS)
            page.locator("h1", has_text="Dashboard").first.wait_for(timeout=WAIT_MS)
            # The login form lingers (stale) until the dashboard's first run has finished.
            page.locator('input[type="password"]').wait_for(state="detached", timeout=WAIT_MS)
            page.locator('[data-testid="live-total"]').first.wait_for(state="attached", timeout=WAIT_MS)
            assert live_counts(page) == ("0", "0") == db_counts(engine)

            # A marker on the window survives only if the page is never reloaded.
            page.evaluate("window.__kuleshovNoReload = 1")
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url)
                    if frame == page.main_frame else None)

            # One bot at a time, each in a thread while the page is watched, so every arrival
            # must show up on its own (the page is never reloaded in between).
            tokens: list[str] = []
            seen = [live_counts(page)]
            for round_ in range(N_BOTS):
                before = db_counts(engine)
                watch_while_bot_runs(page, engine, simulate, round_, tokens, seen)
                after = db_counts(engine)
                assert int(after[0]) == int(before[0]) + 1, (before, after)
                assert seen[-1] == after, seen
            assert len(tokens) == N_BOTS
            final = db_counts(engine)
            assert final[0] == str(N_BOTS) and int(final[1]) >= 1, final
            # Every total from 0 to N_BOTS was shown, in order, and never went back.
            totals = [int(t) for t, _ in seen]
            assert totals == sorted(totals) and set(range(N_BOTS + 1)) <= set(totals), seen
            assert page.evaluate("window.__kuleshovNoReload") == 1
            assert navigations == [], navigations

            # The Export page, reached through the sidebar (a new URL would be a new session).
            page.locator('[data-testid="stSidebarNav"] a', has_text="Export").first.click()
            page.locator("h1", has_text="Export").first.wait_for(timeout=WAIT_MS)
            page.get_by_role("button", name="Prepare the dataset").click()
            download_button = page.get_by_role("button", name=f"Download {STUDY_ID}.zip")
            download_button.wait_for(timeout=60_000)
            with page.expect_download(timeout=WAIT_MS) as info:
                download_button.click()
            download = info.value
            assert download.suggested_filename == f"{STUDY_ID}.zip"
            saved = tmp_path / "download.zip"
            download.save_as(saved)
            browser.close()
        assert not errors, errors

        check_export(saved.read_bytes(), engine, tokens)
        check_dataset_folder(saved, tmp_path / "unzipped")
        a = store.audit_log.c
        with engine.connect() as conn:
            audited = [(row.actor, row.action) for row in conn.execute(sa.select(a.actor, a.action))]
        assert audited.count(("researcher-login", "login_failed")) == 1, audited
        assert audited.count(("researcher-login", "login")) == 1, audited
        assert ("researcher", "export") in audited, audited  # the researcher, by name (single-password mode)
        took = time.monotonic() - t_start
        print(f"researcher browser test: {took:.1f} s, dashboard counts seen {seen}")
    finally:
        engine.dispose()
        server.stop()


def check_export(blob: bytes, engine, tokens: list[str]) -> None:
    from analysis.export import PAYMENTS_FILE

    zf = zipfile.ZipFile(io.BytesIO(blob))
    assert zf.testzip() is None
    names = {n.split("/", 1)[1]: n for n in zf.namelist()}
    assert all(n.startswith(f"{STUDY_ID}/") for n in zf.namelist())
    assert EXPECTED_FILES | {PAYMENTS_FILE} <= set(names), sorted(set(EXPECTED_FILES) - set(names))

    package = json.loads(zf.read(names["datapackage.json"]))
    described = {r["path"] for r in package["resources"]}
    assert {"responses.csv", "participants.csv", "codebook.csv"} <= described, described

    p, r = store.participants.c, store.responses.c
    with engine.connect() as conn:
        people = conn.execute(sa.select(p.id, p.token, p.prolific_pid, p.pseudonym)
                              .where(p.study_id == STUDY_ID, p.is_pilot.is_(False))).all()
        n_responses = conn.execute(sa.select(sa.func.count()).select_from(store.responses)
                                   .join(store.participants, p.id == r.participant_id)
                                   .where(p.study_id == STUDY_ID, p.is_pilot.is_(False))).scalar_one()
    assert len(people) == N_BOTS and n_responses > 0
    assert sorted(row.token for row in people) == sorted(tokens)

    responses = pd.read_csv(io.BytesIO(zf.read(names["responses.csv"])))
    assert len(responses) == n_responses
    assert len(pd.read_parquet(io.BytesIO(zf.read(names["responses.parquet"])))) == n_responses
    assert set(responses["participant_id"]) <= {row.pseudonym for row in people}
    participants = pd.read_csv(io.BytesIO(zf.read(names["participants.csv"])))
    assert sorted(participants["participant_id"]) == sorted(row.pseudonym for row in people)
    codebook = pd.read_csv(io.BytesIO(zf.read(names["codebook.csv"])))
    for column in responses.columns:
        assert column in set(codebook["name"]), column
    study_hash = zf.read(names["study_hash.txt"]).decode().split()[0]
    assert hashlib.sha256(zf.read(names["study.yaml"])).hexdigest() == study_hash
    with engine.connect() as conn:
        assert study_hash == conn.execute(sa.select(store.studies.c.spec_hash)
                                          .where(store.studies.c.id == STUDY_ID)).scalar_one()

    # Tokens and Prolific ids only in the payments file; tokens not even there.
    secrets = [row.token for row in people] + [row.prolific_pid for row in people]
    for short, full in names.items():
        data = zf.read(full)
        if short == PAYMENTS_FILE:
            pay = pd.read_csv(io.BytesIO(data))
            assert sorted(pay["prolific_pid"]) == sorted(row.prolific_pid for row in people)
            assert not any(t.encode() in data for t in tokens)
            continue
        leaked = [s for s in secrets if s.encode() in data]
        assert not leaked, (short, leaked)


def check_dataset_folder(zip_path: Path, into: Path) -> None:
    """The downloaded folder is a valid Frictionless package and reads back with its declared types."""
    from frictionless import Package

    from analysis.load import read_csv_typed

    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(into)
    folder = into / STUDY_ID
    report = Package(folder / "datapackage.json").validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "message"])[:10]
    # CSV (typed by the descriptor) and Parquet hold the same table.
    for name in ("responses", "participants", "scores"):
        csv, parquet = read_csv_typed(folder, name), pd.read_parquet(folder / f"{name}.parquet")
        for column in csv.columns[csv.dtypes == "boolean"]:  # pandas reads a boolean column with gaps as objects
            parquet[column] = parquet[column].astype("boolean")
        pd.testing.assert_frame_equal(csv, parquet, check_dtype=False, obj=name)
