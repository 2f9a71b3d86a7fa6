"""SQLite: a process's write transactions queue on its in-process lock (study/store/engine.py
_WRITE_LOCKS), not on SQLite's busy handler: a second writer does not even open its
connection while the first holds the lock, and goes on as soon as it is released."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from study.store import engine as store_engine


def test_a_second_writer_waits_on_the_process_lock_and_goes_on_at_release(tmp_path):
    engine = store_engine.make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    try:
        with store_engine._write(engine) as conn:
            conn.execute(sa.text("CREATE TABLE t (a INTEGER)"))
        connects = []
        sa.event.listen(engine, "engine_connect", lambda conn: connects.append(threading.current_thread().name))
        holding, release, started, done = threading.Event(), threading.Event(), threading.Event(), threading.Event()

        def first():
            with store_engine._write(engine) as conn:
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                holding.set()
                release.wait(10)

        def second():
            started.set()
            with store_engine._write(engine) as conn:
                conn.execute(sa.text("INSERT INTO t VALUES (2)"))
            done.set()

        a = threading.Thread(target=first, name="first")
        a.start()
        assert holding.wait(10)
        b = threading.Thread(target=second, name="second")
        b.start()
        assert started.wait(10)
        time.sleep(0.3)  # checks that nothing happens meanwhile
        assert not done.is_set() and connects == ["first"], connects
        t0 = time.monotonic()
        release.set()
        assert done.wait(10)
        # Woken at release, not after one of the busy handler's sleeps (it had slept 300 ms by then).
        assert time.monotonic() - t0 < 5
        a.join(10)
        b.join(10)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT a FROM t ORDER BY a")).scalars().all() == [1, 2]
    finally:
        engine.dispose()
