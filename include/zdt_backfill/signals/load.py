"""Load signals of the primary and the user's throttle query (collectors of :mod:`.throttler`).

:class:`LoadCollector` reads the server's load (see :meth:`~zdt_backfill.dialects.Dialect.load_sql`):
``Threads_running``, row-lock waits, deadlocks, history list length on MySQL; active backends,
ungranted locks, deadlocks, autovacuum on the tables, WAL rate on PostgreSQL. Counters become
rates per second between readings. :class:`ThrottleQuery` is gh-ost's ``--throttle-query``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ..db import Database
from ..expressions import check_query

log = logging.getLogger(__name__)


class LoadCollector:
    """Load signals of the primary (see :meth:`~zdt_backfill.dialects.Dialect.load_sql`). Counters become
    rates per second between two readings; the first reading has no rate (``None``).

    :param db: the primary.
    :param tables: the source and target tables (PostgreSQL: autovacuum running on them).
    """

    COUNTERS = frozenset({"row_lock_waits", "row_lock_time_ms", "deadlocks", "wal_bytes"})

    def __init__(self, db: Database, tables: tuple[str, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.tables = tables
        self.clock = clock
        self._conn: Any = None
        self._last: tuple[float, dict[str, float]] | None = None

    def read(self) -> dict[str, float | None]:
        try:
            if self._conn is None:
                self._conn = self.db.connect()
            d = self.db.dialect
            sql, params = d.load_sql(self.db.schema, self.tables)
            row = d.parse_load(self.db.query_dicts(self._conn, sql, params))
            self._conn.rollback()
        except Exception as exc:  # the primary's own batches will fail too; do not crash here
            log.warning("load signals unreadable: %s", exc)
            self.close()
            return {}
        now = self.clock()
        raw = {k: (float(v) if v is not None else None) for k, v in row.items()}
        out: dict[str, float | None] = {k: v for k, v in raw.items() if k not in self.COUNTERS}
        last = self._last
        for k in self.COUNTERS & raw.keys():
            prev = last[1].get(k) if last else None
            dt = now - last[0] if last else 0
            out[f"{k}_per_s"] = ((raw[k] - prev) / dt) if (prev is not None and raw[k] is not None and dt > 0) else None
        # Innodb_row_lock_time_avg averages every wait since the server started; the average
        # over the last interval is the live signal (the seed: "< 50 ms").
        if last and raw.get("row_lock_waits") is not None and last[1].get("row_lock_waits") is not None:
            waits = raw["row_lock_waits"] - last[1]["row_lock_waits"]
            spent = (raw.get("row_lock_time_ms") or 0) - (last[1].get("row_lock_time_ms") or 0)
            out["row_lock_time_avg_ms"] = spent / waits if waits > 0 else 0.0
        out.pop("row_lock_time_ms_per_s", None)
        self._last = (now, {k: v for k, v in raw.items() if v is not None})
        return out

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None


class ThrottleQuery:
    """gh-ost's ``--throttle-query``: one read-only ``SELECT`` returning a number (CPU %, a
    queue depth...), compared with ``throttle_query_max``. Unreadable reads as NaN (holds).

    The query passes :func:`~zdt_backfill.expressions.query_problems` (one plain ``SELECT``,
    allow-listed functions, nothing that writes, waits or locks), and runs in a read-only
    transaction that is rolled back, with a statement timeout of ``timeout_seconds`` (at most
    5 s) on both engines: PostgreSQL ``statement_timeout``, MySQL ``max_execution_time``,
    MariaDB ``max_statement_time``. A query that runs longer reads as NaN: the batch loop holds
    and goes on asking, it is never wedged.

    :raises ConfigError: (constructor) the query is not one read-only ``SELECT``.
    """

    def __init__(self, db: Database, query: str, timeout_seconds: float = 5.0) -> None:
        check_query(query, "throttle_query", db.dialect.name)
        self.db = db
        self.query = query
        self.timeout_seconds = min(5.0, timeout_seconds)

    def read(self) -> float:
        try:
            with self.db.session(tag="zdt_backfill throttle query", lock_timeout_s=self.timeout_seconds,
                                 statement_timeout_s=self.timeout_seconds) as conn:
                self.db.execute(conn, self.db.dialect.read_only_begin_sql())
                rows = self.db.query(conn, self.query.replace("%", "%%"))
                conn.rollback()
            return float(rows[0][0]) if rows and rows[0] and rows[0][0] is not None else float("nan")
        except Exception as exc:
            log.warning("throttle query failed (holding): %s", exc)
            return float("nan")
