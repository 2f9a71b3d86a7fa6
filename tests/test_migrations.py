"""Migrations: the migrated schema equals the models, and upgrading keeps existing data."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from study import store


def test_migrated_schema_matches_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), store.Base.metadata)
    assert diff == []
    assert store.current_revision(engine) == store.head_revision()


def test_upgrade_is_idempotent(engine):
    assert store.upgrade(engine) == store.head_revision()


def test_upgrade_from_0001_keeps_every_row(db_url):
    eng = store.make_engine(db_url)
    try:
        assert store.upgrade(eng, "0001") == "0001"
        now = store.utcnow()
        with eng.begin() as conn:
            # Raw SQL against the 0001 schema: the models already describe head.
            conn.execute(sa.text(
                "INSERT INTO studies (id, title, version, status, spec_yaml, spec_hash, manifest, participants_enrolled,"
                " created_at, updated_at) VALUES ('s1', 'T', '1', 'open', 'id: s1', 'abc', '[]', 1, :now, :now)"),
                {"now": now})
            conn.execute(sa.text(
                "INSERT INTO participants (id, study_id, token, pseudonym, participant_number, label_condition,"
                " list_index, status, attention_failed, step_index, step_key, is_pilot, study_version, started_at,"
                " updated_at) VALUES (1, 's1', 'tok', 'P0001', 1, 'none', 0, 'in_progress', 0, 3, 'trial:1', false,"
                " '1', :now, :now)"), {"now": now})
            conn.execute(sa.text(
                "INSERT INTO trials (id, participant_id, position, stimulus_id, watched_share)"
                " VALUES (1, 1, 1, 'c1', 0.5)"))
            conn.execute(sa.text(
                "INSERT INTO responses (participant_id, trial_id, step_key, instrument_id, item_id, value_num,"
                " untouched, created_at) VALUES (1, 1, 'trial:1', 'sam', 'valence', 7, false, :now)"), {"now": now})
            conn.execute(sa.text(
                "INSERT INTO playback_events (participant_id, position, stimulus_id, seq, event, server_time)"
                " VALUES (1, 1, 'c1', 0, 'play', :now)"), {"now": now})
        assert store.upgrade(eng) == store.head_revision() == "0009"
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT pseudonym, device_info FROM participants")).one() == ("P0001", None)
            # 0005: participants from before languages existed saw English
            assert conn.execute(sa.text("SELECT language FROM participants")).scalar_one() == "en"
            assert conn.execute(sa.text("SELECT id, spec_yaml, stimuli_dir FROM studies")).one() == ("s1", "id: s1", None)
            assert conn.execute(sa.text("SELECT value_num FROM responses")).scalar_one() == 7
            # 0004: the study's current file becomes its first frozen version
            assert conn.execute(sa.text("SELECT study_id, version, spec_yaml, spec_hash FROM study_versions")).one() == (
                "s1", "1", "id: s1", "abc")
            assert conn.execute(sa.text("SELECT watched_share FROM trials")).scalar_one() == 0.5
            # 0006: the playback columns exist and are empty for trials stored before them
            assert conn.execute(sa.text("SELECT play_count, replayed, skipped, seconds_hidden, share_muted,"
                                        " seconds_stalled, load_ms, seconds_offline FROM trials")).one() == (None,) * 8
            assert conn.execute(sa.text("SELECT count(*) FROM playback_events")).scalar_one() == 1
            indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("playback_events")}
        assert "ix_playback_events_stimulus_id_event" in indexes
    finally:
        eng.dispose()


def test_plain_postgresql_url_is_accepted():
    assert store.normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert store.normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert store.normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_pragmas(sqlite_url):
    eng = store.make_engine(sqlite_url)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        eng.dispose()


def test_cli_db_upgrade_and_current(sqlite_url, capsys):
    import argparse

    assert store.cli_db(argparse.Namespace(action="current", url=sqlite_url)) == 0
    assert "behind" in capsys.readouterr().out
    assert store.cli_db(argparse.Namespace(action="upgrade", url=sqlite_url)) == 0
    assert store.cli_db(argparse.Namespace(action="current", url=sqlite_url)) == 0
    assert "up to date" in capsys.readouterr().out
