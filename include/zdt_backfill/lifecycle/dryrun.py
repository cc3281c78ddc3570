"""Dry run: what a backfill would do, writing nothing.

:func:`dry_run` runs pre-flight's read-only checks (:func:`~zdt_backfill.lifecycle.preflight.inspect`), then for
the first batch of each planned partition ``EXPLAIN``\\ s the real batch statement
(PostgreSQL ``EXPLAIN (FORMAT JSON)`` under :meth:`~zdt_backfill.dialects.Dialect.plan_pinning`, MySQL
``EXPLAIN FORMAT=JSON``), flags a full scan of the source (PostgreSQL ``Seq Scan``, MySQL
``access_type: ALL``), and on MySQL also explains the statement without its ``FORCE INDEX``
hint, so a full scan the optimizer would choose is shown next to the forced variant that
fixes it. It lists the partition boundaries and the first few keyset batch boundaries of
each (read with :meth:`~zdt_backfill.dialects.Dialect.chunk_end_sql`), and estimates the duration at the
profile's rate.

Everything runs in one session that is rolled back and closed: no control table, no run
lock, no checkpoint, no row. ``EXPLAIN`` without ``ANALYZE`` does not execute the statement.
The result is a JSON-ready dict (the seed's ``explain_plan.json``).
"""

from __future__ import annotations

import math
from typing import Any

from ..config import RunConfig
from ..db import Database
from ..keys import resolve_key
from .preflight import explain_plan, inspect

#: How many batch boundaries are listed per partition by default.
FIRST_BATCHES = 3


def estimate_duration(rows: int, batch_size: int, max_rows_per_second: float | None,
                      cost_per_batch: float | None) -> dict[str, Any]:
    """The duration at the profile's rate: ``rows / max_rows_per_second``; unthrottled, only
    the optimizer's cost (no time: the server's speed is not known without running it)."""
    batches = math.ceil(rows / batch_size) if rows > 0 else 0
    out: dict[str, Any] = {"rows_estimate": rows, "batch_size": batch_size, "batches_estimate": batches,
                           "max_rows_per_second": max_rows_per_second,
                           "explain_cost_per_batch": cost_per_batch,
                           "explain_cost_total": None if cost_per_batch is None else round(cost_per_batch * batches, 2)}
    if max_rows_per_second is None:
        out.update(seconds=None, rate="unthrottled",
                   text="unthrottled: no rate to estimate from; the EXPLAIN cost is the optimizer's only")
    else:
        seconds = rows / max_rows_per_second
        out.update(seconds=round(seconds, 1), rate=f"{max_rows_per_second:g} rows/s",
                   text=f"~{_human(seconds)} at {max_rows_per_second:g} rows/s")
    return out


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------- the dry run
def _explained(db: Database, conn: Any, stmt: str, params: tuple, table: str) -> dict[str, Any]:
    d, plan = db.dialect, explain_plan(db, conn, stmt, params)
    return {"statement": stmt, "params": list(params), "full_scan": bool(d.full_scans(plan, table)),
            "access": d.access_summary(plan, table), "cost": d.plan_cost(plan), "plan": plan}


def dry_run(config: RunConfig, db: Database, first_batches: int = FIRST_BATCHES) -> dict[str, Any]:
    """Pre-flight, ``EXPLAIN`` of each partition's first batch, partition and batch boundaries
    and a duration estimate, in one session that is rolled back: nothing is written.

    :raises PreflightError: a fatal pre-flight check failed (nothing was written either).
    :returns: a JSON-ready dict.
    """
    from ..verify.checksum import target_casts

    d = db.ensure_flavour()
    c = config = resolve_key(config, db)  # the primary key when the conf names none
    with db.session() as conn:  # rolled back and closed on exit
        plan = inspect(config, db, conn, probes=[])
        types = target_casts(c, db, conn)  # the one typed projection, as the copier builds it
        if c.mode == "copy":
            stmt = d.copy_batch_sql(c.source_table, c.target_table, c.key, c.columns, db.schema, plan.key_index, types)
        else:
            stmt = d.fill_batch_sql(c.source_table, c.key, c.columns, db.schema, types)
        chunk_sql = d.chunk_end_sql(c.source_table, c.key, db.schema)
        # the copy's first batch size (a time-targeted run starts small and grows with measured speed)
        first_size = c.batch_sizer().size

        partitions, full_scans, first_cost = [], [], None
        for p in plan.partitions:
            batches, watermark = [], p["lo"] - 1
            for _ in range(max(1, first_batches)):
                if watermark >= p["hi"]:
                    break
                end, keys = db.query(conn, chunk_sql, (watermark, p["hi"], first_size))[0]
                if end is None:
                    break
                batches.append({"lo_exclusive": watermark, "hi": int(end), "keys": int(keys)})
                watermark = int(end)
            conn.rollback()
            entry: dict[str, Any] = {**p, "first_batches": batches}
            if batches:
                params = (batches[0]["lo_exclusive"], batches[0]["hi"])
                entry["explain"] = _explained(db, conn, stmt, params, c.source_table)
                bare = d.without_index_hint(stmt)
                if bare is not None:
                    # The batch forces the key index; show what the optimizer picks without it.
                    unforced = _explained(db, conn, bare, params, c.source_table)
                    entry["explain_without_force_index"] = unforced
                    entry["force_index_fix"] = stmt if unforced["full_scan"] else None
                if entry["explain"]["full_scan"]:
                    full_scans.append(p["index"])
                if first_cost is None:
                    first_cost = entry["explain"]["cost"]
            else:
                entry["explain"] = None  # no keys in this partition: nothing to explain
            partitions.append(entry)
        conn.rollback()

    return {
        "dry_run": True,
        "writes": "none: every statement ran in a session that was rolled back; EXPLAIN without ANALYZE",
        "engine": d.name,
        "database": db.name,
        "source_table": c.source_table,
        "target_table": c.target_table,
        "mode": c.mode,
        "key": c.key,
        "key_index": plan.key_index,
        "profile": c.profile.name,
        "policy_refusals": c.policy_problems(),
        "batch_size": c.batch_size,
        "first_batch_size": first_size,
        "min_key": plan.min_key,
        "max_key": plan.max_key,
        "batch_statement": stmt,
        "full_scan": bool(full_scans),
        "full_scan_partitions": full_scans,
        "checks": [ch.to_dict() for ch in plan.checks],
        "partitions": partitions,
        "estimate": estimate_duration(plan.rows_estimate, c.batch_size, c.max_rows_per_second, first_cost),
    }
