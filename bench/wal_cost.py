"""What the shared row lock costs on PostgreSQL: WAL and time of the engine's copy against a
monolithic ``INSERT ... SELECT``, with the lock and without it (measurement only: without it a
delete committed during the batch could be resurrected; the engine never runs so).

Usage (a PostgreSQL database it may fill, or ``pair``: a local primary + streaming replica
started under .local/bench/wal-pair, as ``make bench`` runs; BENCH_ROWS rows, default 1,000,000)::

    PYTHONPATH=include:scripts:bench .venv/bin/python bench/wal_cost.py postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=include:scripts:bench .venv/bin/python bench/wal_cost.py pair

Each approach starts after a ``CHECKPOINT`` on an empty target (and, with a replica, once it has
caught up); ``pg_stat_wal`` gives the WAL records, full-page images and bytes it wrote.
BENCH_ROUNDS alternating rounds (default 3); the last line is each approach's fastest round as a
ratio of the fastest monolithic one. Quote ratios within one run.
"""

from __future__ import annotations

import sys
import time

import common

import localdb
from zdt_backfill import dialects
from zdt_backfill.db import Database

ROWS = common.ROWS


def main(target: str) -> None:
    pair = localdb.start_postgres_pair(common.BASE / "wal-pair") if target == "pair" else None
    try:
        run(Database.from_url(common.url(pair.primary) if pair else target), pair)
    finally:
        if pair:
            localdb.stop(common.BASE / "wal-pair")


def run(db: Database, pair: localdb.Pair | None) -> None:
    common.seed(db, ROWS)
    best: dict[str, float] = {}

    def wal() -> list[int]:
        with db.session() as c:
            return [int(x) for x in db.query(c, "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal")[0]]

    def measure(label: str, fn) -> None:
        common.reset_target(db)
        if pair:
            localdb.wait_replica_caught_up(pair, timeout=600)
        common.execute(db, "CHECKPOINT")
        a, t = wal(), time.perf_counter()
        fn()
        s, b = time.perf_counter() - t, wal()
        best[label] = min(best.get(label, s), s)
        print(f"| {label} | {s:.2f} | {ROWS / s:,.0f} | {b[0] - a[0]:,} | {b[1] - a[1]:,} | {(b[2] - a[2]) / 2**20:.1f} |",
              flush=True)

    def engine(partitions: int) -> None:
        cfg = common.engine_config(db, "dev", f"wal-{time.time()}", partitions=partitions, max_replica_lag_seconds=0)
        common.engine_copy(db, cfg)

    print("| approach | s | rows/s | WAL records | full-page images | WAL MiB |\n|---|---|---|---|---|---|")
    for _ in range(common.ROUNDS):
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
    print("fastest round vs monolithic: " + ", ".join(f"{k} {best['monolithic'] / v:.3f}" for k, v in best.items()))


if __name__ == "__main__":
    main(sys.argv[1])
