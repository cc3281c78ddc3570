"""Backfill metrics through Airflow's own metrics (``airflow.sdk.observability.stats``): StatsD,
DogStatsD or OpenTelemetry, whichever ``[metrics]`` turns on; nothing is sent when none is.

Names (prefix ``[metrics] statsd_prefix``, ``airflow`` by default), tags ``table`` and
``partition`` where the backend takes tags:

==========================================  =======  ===================================================
``zdt_backfill.rows_copied``                counter  rows written by each batch (as it commits)
``zdt_backfill.batches``                    counter  batches committed
``zdt_backfill.batch_seconds``              timer    one batch statement's time (ms on StatsD)
``zdt_backfill.throttled_seconds.<reason>`` counter  seconds a partition waited, per reason (``rate``,
                                                     ``replica_lag``, ``load``, ...), at each attempt's end
``zdt_backfill.replica_lag_seconds``        gauge    the highest replica lag a partition attempt saw
``zdt_backfill.transient_yields``           counter  lock waits / deadlocks retried (not errors)
``zdt_backfill.mismatches``                 gauge    differing rows left by the last validation
``zdt_backfill.repairs``                    counter  keys repaired from the source
``zdt_backfill.rows_per_second``            gauge    the run's effective rate (rows written / copy wall time)
``zdt_backfill.crashed_attempts``           counter  partition attempts whose worker died
==========================================  =======  ===================================================

The engine stays free of Airflow: the operators call these with the engine's results.
Metrics never fail a task: a backend error is logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "zdt_backfill"


def _stats() -> Any:
    from airflow.sdk.observability import stats

    return stats


def _safe(fn: Any, name: str, *args: Any, **kwargs: Any) -> None:
    try:
        fn(f"{PREFIX}.{name}", *args, **kwargs)
    except Exception as exc:  # a metrics backend never fails a backfill
        log.debug("metric %s dropped: %s", name, exc)


def batch(table: str, partition: str, rows: int, seconds: float) -> None:
    """One committed batch: ``rows`` written in ``seconds``."""
    s, tags = _stats(), {"table": table, "partition": partition}
    _safe(s.incr, "rows_copied", int(rows), tags=tags)
    _safe(s.incr, "batches", 1, tags=tags)
    _safe(s.timing, "batch_seconds", float(seconds) * 1000.0, tags=tags)


def partition_attempt(table: str, partition: str, result: dict[str, Any]) -> None:
    """A partition attempt's end (:class:`~zdt_backfill.copying.copier.PartitionResult` as a dict)."""
    s, tags = _stats(), {"table": table, "partition": partition}
    for reason, seconds in sorted((result.get("throttled_seconds") or {}).items()):
        _safe(s.incr, f"throttled_seconds.{s.normalize_name_for_stats(str(reason))}", float(seconds), tags=tags)
    if result.get("max_replica_lag_seconds") is not None:
        _safe(s.gauge, "replica_lag_seconds", float(result["max_replica_lag_seconds"]), tags=tags)
    if result.get("retries"):
        _safe(s.incr, "transient_yields", int(result["retries"]), tags=tags)


def run_report(table: str, r: dict[str, Any]) -> None:
    """The run's figures from its report: mismatches, repairs, effective rate, crashed attempts."""
    s, tags = _stats(), {"table": table}
    v = r.get("validation") or {}
    if v.get("mismatched") is not None:
        _safe(s.gauge, "mismatches", int(v["mismatched"]), tags=tags)
    repaired = (r.get("repair") or {}).get("repaired")
    if isinstance(repaired, dict):
        repaired = sum(int(x or 0) for x in repaired.values())
    if repaired:
        _safe(s.incr, "repairs", int(repaired), tags=tags)
    if r.get("rows_per_second") is not None:
        _safe(s.gauge, "rows_per_second", float(r["rows_per_second"]), tags=tags)
    if r.get("crashes"):
        _safe(s.incr, "crashed_attempts", int(r["crashes"]), tags=tags)
