"""Diagnostics: the seed's symptom queries, run read-only, each with a verdict.

From *Optimizing Backfill Scripts*: lock waits (``information_schema.innodb_trx`` in LOCK
WAIT, PostgreSQL sessions waiting on a lock), replication lag (``Seconds_Behind_Master``,
received-minus-replayed WAL), row-lock contention (``Innodb_row_lock%``, ungranted locks),
connection counts (``Threads_running``, active sessions); plus the backfill's own sessions,
found by their tag, with the statement that stops one. Used by the ``diagnose`` task of the
DAG and by ``zdt-backfill diagnose``. Nothing here writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..config import DEFAULT_MAX_LOAD
from ..db import Database
from .lag import ReplicaLagProbe

log = logging.getLogger(__name__)

OK, WARN, CRITICAL = "ok", "warn", "critical"

#: The seed's symptom "Replication lag > 300s" is critical; over the 2 s gate is a warning.
LAG_WARN_SECONDS, LAG_CRITICAL_SECONDS = 2.0, 300.0


@dataclass(frozen=True)
class Finding:
    """One symptom: ``check`` name, ``verdict`` (``ok``, ``warn``, ``critical``), the figure,
    what it means, and the query that found it (so an operator can run it again)."""

    check: str
    verdict: str
    value: Any
    detail: str
    query: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        return f"{self.verdict.upper():8} {self.check:22} {self.value!s:>10}  {self.detail}"


def _verdict(value: float | None, warn: float, critical: float | None = None) -> str:
    if value is None:
        return WARN
    if critical is not None and value >= critical:
        return CRITICAL
    return WARN if value >= warn else OK


def diagnose(db: Database, replicas: list[Database] | None = None) -> list[Finding]:
    """Run every symptom query on the primary ``db`` (and lag on each replica).

    :returns: the findings, in a fixed order.
    """
    d = db.dialect
    out: list[Finding] = []
    with db.session() as conn:
        for check, sql, warn, critical, describe in d.symptom_queries():
            try:
                rows = db.query(conn, sql)
                conn.rollback()
            except Exception as exc:
                conn.rollback()
                out.append(Finding(check, WARN, None, f"could not run: {exc}".splitlines()[0], sql))
                continue
            value, detail = describe(rows)
            out.append(Finding(check, _verdict(value, warn, critical) if warn is not None else OK, value, detail, sql))
    for r in replicas or []:
        probe = ReplicaLagProbe(r)
        try:
            reading = probe.read()
            verdict = _verdict(reading.seconds, LAG_WARN_SECONDS, LAG_CRITICAL_SECONDS)
            detail = f"{reading.status} ({reading.source}{': ' + reading.detail if reading.detail else ''})"
            out.append(Finding(f"replica_lag {r.name}", verdict, reading.seconds, detail, d.replica_status_sql()[0]))
        except ValueError as exc:
            out.append(Finding(f"replica_lag {r.name}", CRITICAL, None, str(exc), d.replica_status_sql()[0]))
        finally:
            probe.close()
    for f in out:
        (log.warning if f.verdict != OK else log.info)("diagnose %s", f.line())
    return out


__all__ = ["CRITICAL", "DEFAULT_MAX_LOAD", "Finding", "OK", "WARN", "diagnose"]
