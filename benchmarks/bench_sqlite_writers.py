"""SQLite write transactions from many threads of one process, through store's own _write.

50 threads, each a write transaction (a read and an 8-row insert) every 0.1-0.3 s for 15 s;
prints the transactions' p50/p95/p99 (waiting for the write lock included). Run it against two
checkouts to compare them:

    python benchmarks/bench_sqlite_writers.py /path/to/checkout

Last results (3 December 2026, 2 cores, load average 7.5-8.4 from other work; each checkout
twice, alternately): before the in-process write lock (study/store/engine.py _WRITE_LOCKS)
p50 10.0 / 8.7 ms, p95 310 / 259 ms, p99 1196 / 1204 ms, 2,668 / 2,748 transactions; with it
p50 5.2 / 5.7 ms, p95 226 / 200 ms, p99 594 / 352 ms, 3,108 / 3,178 transactions.
"""
import random, sys, threading, time, os
import sqlalchemy as sa
sys.path.insert(0, sys.argv[1])
from study.store import engine as E
path = f"/tmp/kuleshov_writers_{os.getpid()}.db"
eng = E.make_engine(f"sqlite:///{path}")
with E._write(eng) as c:
    c.exec_driver_sql("create table t(a integer, b text)")
lat = []; stop = time.monotonic() + 15
def worker(i):
    rng = random.Random(i)
    while time.monotonic() < stop:
        time.sleep(rng.uniform(0.1, 0.3))
        t0 = time.perf_counter()
        with E._write(eng) as c:
            c.exec_driver_sql("select count(*) from t").scalar()
            c.exec_driver_sql("insert into t values (?, ?)", [(i, "x" * 50)] * 8)
        lat.append(time.perf_counter() - t0)
ts = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
[t.start() for t in ts]; [t.join() for t in ts]
eng.dispose()
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
lat.sort(); n = len(lat)
print(f"{sys.argv[1]}: {n} transactions, p50 {lat[n//2]*1000:.1f} ms, p95 {lat[int(n*.95)]*1000:.1f} ms, p99 {lat[int(n*.99)]*1000:.1f} ms")
