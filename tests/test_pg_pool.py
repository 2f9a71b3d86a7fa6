"""PostgreSQL pool: a connection in steady use is not pinged; one that lay idle is, and a dead
one is replaced without the caller seeing an error (study/store/engine.py PG_PING_IDLE_S)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from study.store import engine as store_engine


def _terminate_others(url: str) -> int:
    """Ends every other connection to the test database (as a PostgreSQL restart would)."""
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all())
    finally:
        admin.dispose()


def _pings(engine) -> list:
    calls = []
    real = engine.dialect.do_ping

    def ping(dbapi_conn):
        calls.append(1)
        return real(dbapi_conn)

    engine.dialect.do_ping = ping
    return calls


def test_steady_use_needs_no_ping(pg_url):
    engine = store_engine.make_engine(pg_url)
    try:
        pings = _pings(engine)
        for _ in range(20):
            with store_engine._read(engine) as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert pings == []
    finally:
        engine.dispose()


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(pg_url, monkeypatch):
    engine = store_engine.make_engine(pg_url)
    try:
        with store_engine._read(engine) as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        pings = _pings(engine)
        monkeypatch.setattr(store_engine, "PG_PING_IDLE_S", 0.0)  # every pooled connection counts as idle
        assert _terminate_others(pg_url) >= 1
        with store_engine._read(engine) as conn:  # no error: the ping found it dead, a new one was made
            second = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert pings and second != first
    finally:
        engine.dispose()


def test_a_connection_in_use_when_the_server_went_away_fails_once_then_recovers(pg_url):
    engine = store_engine.make_engine(pg_url)
    try:
        with store_engine._read(engine) as conn:
            conn.execute(sa.text("SELECT 1"))
        _terminate_others(pg_url)
        with pytest.raises(sa.exc.OperationalError):
            with store_engine._read(engine) as conn:
                conn.execute(sa.text("SELECT 1"))
        with store_engine._read(engine) as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
