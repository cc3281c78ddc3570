"""What the shared row lock costs on PostgreSQL: WAL and time of the engine's copy against a
monolithic ``INSERT ... SELECT``, with the lock and without it (measurement only: without it a
delete committed during the batch could be resurrected; the engine never runs so).

Usage (a PostgreSQL database it may fill; BENCH_ROWS rows, default 1,000,000)::

    PYTHONPATH=include:scripts:bench .venv/bin/python bench/wal_cost.py postgresql://postgres@127.0.0.1:5432/test

Each approach starts after a ``CHECKPOINT`` on an empty target; ``pg_stat_wal`` gives the WAL
records, full-page images and bytes it wrote. Two alternating rounds; quote ratios within one.
"""

from __future__ import annotations

import os
import sys
import time

import common

from zdt_backfill import dialects
from zdt_backfill.db import Database

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))


def main(url: str) -> None:
    db = Database.from_url(url)
    common.seed(db, ROWS)

    def wal() -> list[int]:
        with db.session() as c:
            return [int(x) for x in db.query(c, "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")[0]]

    def measure(label: str, fn) -> None:
        common.reset_target(db)
        common.execute(db, "CHECKPOINT")
        a, t = wal(), time.perf_counter()
        fn()
        s, b = time.perf_counter() - t, wal()
        print(f"| {label} | {s:.2f} | {ROWS / s:,.0f} | {b[0] - a[0]:,} | {b[1] - a[1]:,} | {(b[2] - a[2]) / 2**20:.1f} |",
              flush=True)

    def engine(partitions: int) -> None:
        cfg = common.engine_config("dev", f"wal-{time.time()}", partitions=partitions, max_replica_lag_seconds=0)
        common.engine_copy(db, cfg)

    print("| approach | s | rows/s | WAL records | full-page images | WAL MiB |\n|---|---|---|---|---|---|")
    for _ in range(2):
        measure("monolithic", lambda: common.monolithic(db))
        for n in (1, 2):
            measure(f"engine, {n} partition(s)", lambda n=n: engine(n))
        lock = dialects.PostgresDialect.share_lock
        dialects.PostgresDialect.share_lock = ""  # measurement only: resurrected deletes become possible
        try:
            for n in (1, 2):
                measure(f"engine, {n} partition(s), no shared lock (unsafe)", lambda n=n: engine(n))
        finally:
            dialects.PostgresDialect.share_lock = lock


if __name__ == "__main__":
    main(sys.argv[1])
