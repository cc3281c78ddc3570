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

import json
import math
from typing import Any

from ..config import RunConfig
from ..db import Database
from .preflight import _walk, inspect

#: How many batch boundaries are listed per partition by default.
FIRST_BATCHES = 3


# ---------------------------------------------------------------------- flagging (pure)
def pg_full_scans(explain: Any, table: str) -> list[dict[str, Any]]:
    """The ``Seq Scan`` nodes on ``table`` in a PostgreSQL ``EXPLAIN (FORMAT JSON)`` document."""
    return [n for n in _walk(explain) if n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == table]


def mysql_full_scans(explain: Any, table: str) -> list[dict[str, Any]]:
    """The table accesses of ``table`` with ``access_type: ALL`` in a MySQL/MariaDB
    ``EXPLAIN FORMAT=JSON`` document."""
    return [n for n in _walk(explain) if n.get("table_name") == table and n.get("access_type") == "ALL"]


def access_summary(engine: str, explain: Any, table: str) -> str:
    """One line naming how ``table`` is read in an ``EXPLAIN`` JSON document."""
    if engine == "postgres":
        nodes = [n for n in _walk(explain) if "Node Type" in n and n.get("Relation Name") == table]
        if not nodes:
            return f"no scan of {table} in the plan"
        return ", ".join(
            n["Node Type"] + (f" using {n['Index Name']}" if n.get("Index Name") else "") for n in nodes
        )
    nodes = [n for n in _walk(explain) if n.get("table_name") == table and "access_type" in n]
    if not nodes:
        return f"no access to {table} in the plan"
    return ", ".join(f"access_type={n.get('access_type')} key={n.get('key')}" for n in nodes)


def explain_cost(engine: str, explain: Any) -> float | None:
    """The optimizer's total cost of a plan: PostgreSQL ``Total Cost`` of the top node, MySQL
    ``query_block.cost_info.query_cost``; ``None`` when the server reports none (MariaDB 10.x)."""
    try:
        if engine == "postgres":
            doc = explain[0] if isinstance(explain, list) else explain
            return float(doc["Plan"]["Total Cost"])
        for n in _walk(explain):
            if isinstance(n.get("cost_info"), dict) and "query_cost" in n["cost_info"]:
                return float(n["cost_info"]["query_cost"])
            if "cost" in n and isinstance(n["cost"], (int, float)):  # MariaDB 11
                return float(n["cost"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None


def flag_full_scan(engine: str, explain: Any, table: str) -> bool:
    """True when the plan reads ``table`` with a full table scan."""
    scans = pg_full_scans(explain, table) if engine == "postgres" else mysql_full_scans(explain, table)
    return bool(scans)


def without_force_index(sql: str) -> str:
    """A MySQL batch statement without its ``FORCE INDEX (...)`` hint: what the optimizer
    would do on its own."""
    start = sql.find(" FORCE INDEX (")
    if start < 0:
        return sql
    end = sql.index(")", start)
    return sql[:start] + sql[end + 1:]


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
def _explain(db: Database, conn: Any, stmt: str, params: tuple) -> Any:
    d = db.dialect
    try:
        for s in d.plan_pinning():  # undone by the rollback below (SET is transactional)
            db.execute(conn, s)
        if d.name == "postgres":
            doc = db.query(conn, "EXPLAIN (FORMAT JSON) " + stmt, params)[0][0]
        else:
            doc = db.query(conn, "EXPLAIN FORMAT=JSON " + stmt, params)[0][0]
    finally:
        conn.rollback()
    if isinstance(doc, (bytes, bytearray)):
        doc = doc.decode()
    return json.loads(doc) if isinstance(doc, str) else doc


def _explained(db: Database, conn: Any, stmt: str, params: tuple, table: str) -> dict[str, Any]:
    plan = _explain(db, conn, stmt, params)
    engine = db.dialect.name
    return {"statement": stmt, "params": list(params), "full_scan": flag_full_scan(engine, plan, table),
            "access": access_summary(engine, plan, table), "cost": explain_cost(engine, plan), "plan": plan}


def dry_run(config: RunConfig, db: Database, first_batches: int = FIRST_BATCHES) -> dict[str, Any]:
    """Pre-flight, ``EXPLAIN`` of each partition's first batch, partition and batch boundaries
    and a duration estimate, in one session that is rolled back: nothing is written.

    :raises PreflightError: a fatal pre-flight check failed (nothing was written either).
    :returns: a JSON-ready dict.
    """
    from ..verify.checksum import target_casts

    c, d = config, db.dialect
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
                if d.name == "mysql":
                    # The batch forces the key index; show what the optimizer picks without it.
                    unforced = _explained(db, conn, without_force_index(stmt), params, c.source_table)
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
