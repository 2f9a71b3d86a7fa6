"""What one participant action costs the database: a page submitted in a callback is drawn from
the state its own transaction ended with, not read again (benchmarks/bench_sessions.py: on
PostgreSQL the second read was a second wait for a pool connection per action).

Walked through the real participant page with streamlit's AppTest (buttons' callbacks fire
there; the questionnaire component's do not, so the pages walked are button pages and the
clip page the last of them leads to)."""

from __future__ import annotations

from pathlib import Path

import pytest

from study import store

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "stimuli" / "demo" / "study.yaml"


def _page_script():
    from app_pages import get_engine, participant

    get_engine.clear()  # the test's database, not a previous test's
    participant.page()


def _study_without_device_check(tmp_path: Path) -> Path:
    """The demo study (clips and manifest copied) without the device check, whose sound test
    AppTest cannot pass: its first pages are then consent, two questionnaires and a button."""
    import shutil

    folder = tmp_path / "study"
    shutil.copytree(DEMO.parent, folder)
    text = (folder / "study.yaml").read_text(encoding="utf-8")
    (folder / "study.yaml").write_text(text.replace("id: kuleshov-demo", "id: reads-demo", 1)
                                       + "\ndevice_check:\n  enabled: false\n", encoding="utf-8")
    return folder / "study.yaml"


@pytest.fixture
def page_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    monkeypatch.setenv("KULESHOV_DATABASE_URL", url)
    eng = store.make_engine(url)
    store.upgrade(eng)
    study_id = store.register_study(eng, str(_study_without_device_check(tmp_path)), actor="test")
    try:
        yield eng, study_id
    finally:
        eng.dispose()


class Counted:
    """Wraps a store function and counts its calls."""

    def __init__(self, monkeypatch, name: str):
        self.calls = 0
        real = getattr(store, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)


def _open(token: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_page_script, default_timeout=60)
    at.query_params["t"] = token
    at.run()
    assert not at.exception, at.exception
    return at


def _click(at, key: str) -> None:
    buttons = [b for b in at.button if b.key == key]
    assert buttons, f"no button {key} on the page: {[b.key for b in at.button]}"
    buttons[0].click().run()
    assert not at.exception, at.exception


def test_a_submitted_page_is_drawn_without_reading_the_participant_again(page_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    eng, study_id = page_db
    token = store.enrol(eng, study_id, prolific_pid="reads-1").token
    at = AppTest.from_function(_page_script, default_timeout=60)
    at.query_params["t"] = token
    at.run()
    assert not at.exception, at.exception
    reads = Counted(monkeypatch, "get_state")
    shares = Counted(monkeypatch, "stored_watched_share")
    walked = []
    # Every page before the first clip is a button page in the demo study (consent, instructions)
    # or a questionnaire; click the buttons until a page without one (a questionnaire or a clip).
    for _ in range(10):
        state = store.get_state(eng, token)
        buttons = [b for b in at.button if b.key in ("consent|agree", f"submit|{state.step.key}")]
        if not buttons:
            break
        before = reads.calls
        buttons[0].click().run()
        assert not at.exception, at.exception
        after = store.get_state(eng, token)
        assert after.step_index == state.step_index + 1, f"{state.step.key} was not stored"
        walked.append(state.step.key)
        # The click's run stored the page and drew the next one from the submit's own state.
        assert reads.calls == before, f"the run after {state.step.key} read the participant again"
    assert "consent" in walked and len(walked) >= 2, walked
    # A plain rerun (no submit) reads the participant from the database, as every run must.
    before = reads.calls
    at.run()
    assert reads.calls == before + 1


def test_a_submitted_page_is_drawn_without_reading_the_participant_again(page_db, monkeypatch):
    eng, study_id = page_db
    token = store.enrol(eng, study_id, prolific_pid="reads-1").token
    at = _open(token)
    assert store.get_state(eng, token).step.key == "consent"
    reads = Counted(monkeypatch, "get_state")
    _click(at, "consent|agree")
    # The click's run stored the page and drew the next one from the submit's own state.
    assert store.get_state(eng, token).step.key == "demographics"
    assert reads.calls == 1, "the run after the consent read the participant again"  # 1: this test's own read
    # A plain rerun (no submit) reads the participant from the database, as every run must.
    at.run()
    assert not at.exception, at.exception
    assert reads.calls == 2


def test_the_clip_page_after_a_submit_needs_no_query_for_its_stored_share(page_db, monkeypatch):
    """The first run of a clip page drawn after a submit knows the clip's stored share from the
    submit's transaction; a rerun of the page (no submit: a reload) asks the database."""
    import random

    from study.simulate import Bot

    eng, study_id = page_db
    bot = Bot(eng, study_id, 1, random.Random(1), 0.0, False)
    token = bot.state.token
    state = bot.state
    while state.step.kind != "instructions":  # consent and the questionnaires before the clips
        state = store.submit_step(eng, token, state.step.key, bot.answers_for(state.step)).state
    next_step = state.steps[state.step_index + 1]
    assert next_step.has_clip, next_step.key
    at = _open(token)
    reads, shares = Counted(monkeypatch, "get_state"), Counted(monkeypatch, "stored_watched_share")
    _click(at, f"submit|{state.step.key}")
    assert store.get_state(eng, token).step.key == next_step.key
    assert (reads.calls, shares.calls) == (1, 0), "the clip page's first run queried again"  # 1: the line above
    at.run()
    assert not at.exception, at.exception
    assert (reads.calls, shares.calls) == (2, 1)
