"""Shared fixtures. Database tests run on SQLite and on PostgreSQL.

PostgreSQL: KULESHOV_TEST_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Each test gets its own freshly created database, dropped afterwards. Where no server answers,
the PostgreSQL variants skip with a message, unless KULESHOV_REQUIRE_POSTGRES=1 (set by CI),
in which case they fail.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from study.config import setting

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference"  # lme4/lmerTest datasets and values, see its README
DEMO_STUDY = ROOT / "stimuli" / "demo" / "study.yaml"

PG_URL = setting("KULESHOV_TEST_PG_URL")
REQUIRE_PG = setting("KULESHOV_REQUIRE_POSTGRES") == "1"


def pass_device_check(engine, state):
    """Answer the device check before consent as a working desktop browser would; returns the new state.

    For tests about the steps after it: the check itself is tested in test_device_check.py and
    test_browser_device_check.py. A participant past the check (or without one) is returned as is.
    """
    from types import SimpleNamespace

    from study import flow, store

    if state is None or state.step.kind != "device_check" or not state.active:
        return state
    answers = flow.kind_of(state.step).bot_answers(SimpleNamespace(state=state), state.step)
    result = store.submit_step(engine, state.token, state.step.key, answers)
    assert result.ok and result.state.step.kind != "device_check", (result.errors, result.message)
    return result.state


def enrol(engine, study_id, **kw):
    """store.enrol, then past the device check (see pass_device_check)."""
    from study import store

    return pass_device_check(engine, store.enrol(engine, study_id, **kw))


def pytest_collection_modifyitems(config, items):
    """Mark every PostgreSQL variant `postgres`, so `-m "not postgres"` runs none of them.

    A test reaches PostgreSQL through `pg_url` or the postgresql parameter of `db_url` (also
    through `engine`, which uses `db_url`); marking here keeps the marker from being forgotten.
    """
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_url" in getattr(item, "fixturenames", ()) or params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)


def _pg_admin_engine():
    import sqlalchemy as sa

    eng = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # no server: skip or fail, as the environment asks
        eng.dispose()
        msg = f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}"
        if REQUIRE_PG:
            pytest.fail(msg + " (KULESHOV_REQUIRE_POSTGRES=1)")
        pytest.skip(msg)
    return eng


@pytest.fixture
def pg_url():
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    import sqlalchemy as sa

    admin = _pg_admin_engine()
    name = f"kuleshov_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'kuleshov.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kuleshov.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url):
    """An engine on a migrated, empty database (SQLite and PostgreSQL)."""
    from study import store

    eng = store.make_engine(db_url)
    store.upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def reference_dir():
    assert REFERENCE.is_dir(), f"reference data not found at {REFERENCE}"
    return REFERENCE
