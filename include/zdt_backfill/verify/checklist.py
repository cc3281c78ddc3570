"""The seed's post-backfill checklist, each item a check with its numbers.

Every item is ``{"name", "status": "pass" | "fail" | "warn" | "n/a", "detail", ...numbers}``:

- ``row_count_parity``: source and target rows counted by validation (``fail`` when they differ;
  ``n/a`` for a sampled validation);
- ``whole_table_checksum``: only where the tables are expected byte-identical (same columns, every
  expression the column itself; ``n/a`` when a column is transformed, the normal case), from the
  full validation, which hashed every key's row of both tables in throttled key-range chunks. The
  seed's ``CHECKSUM TABLE ... EXTENDED`` (MySQL) and ``md5(string_agg(row ORDER BY key))``
  (PostgreSQL) are never run: each reads the whole table in one unthrottled statement on the
  primary, holding its metadata lock for the whole read (``n/a`` after a sampled validation);
- ``no_nulls_left``: no target value NULL where the expected value is not (``fail``). A full
  validation that found no difference already compared every key's values (its outer ranges are
  open; a NULL hashes as ``N``, never as a value), so the item passes from it without a query;
  otherwise (sampled, or differences found) one join of both tables counts them;
- ``no_orphaned_foreign_keys``: single-column foreign keys from or to the target, read from the
  catalog, orphans counted by an anti-join (``fail``);
- ``cache_hit_ratio``: ``Innodb_buffer_pool_reads / Innodb_buffer_pool_read_requests < 0.01``, the
  ``blks_read`` share on PostgreSQL (``warn`` only);
- ``replicas_caught_up``: replica lag by heartbeat under ``max_replica_lag_seconds`` (``warn``
  only: the catch-up sensor is the gate).

A ``fail`` on a data item (:data:`DATA_ITEMS`) holds the run (:func:`~zdt_backfill.lifecycle.decision.decide_branch`).
Every query runs in a tagged session with the run's lock timeout and statement timeout
(``lock_timeout_seconds``, ``statement_timeout_seconds``): an item cut off by either is ``warn``
with the error, never a wait on the application's locks.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..config import RunConfig
from ..db import Database
from .checksum import ValidationResult

log = logging.getLogger(__name__)

#: Items whose ``fail`` keeps the run from going forward.
DATA_ITEMS = ("row_count_parity", "no_nulls_left", "no_orphaned_foreign_keys")
#: Largest cache miss ratio that passes (the seed's 0.01).
MAX_CACHE_MISS_RATIO = 0.01


def _session(c: RunConfig, db: Database) -> Any:
    """A checklist session: tagged, with the run's lock and statement timeouts."""
    return db.session(f"zdt_backfill:{c.run_id}:checklist", c.lock_timeout_seconds, c.statement_timeout_seconds)


def item(name: str, status: str, detail: str, **numbers: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, **numbers}


def failed_data_items(checklist: list[dict[str, Any]]) -> list[str]:
    """``"name: detail"`` of each data item that failed."""
    return [f"{i['name']}: {i.get('detail')}" for i in checklist or [] if i.get("name") in DATA_ITEMS
            and i.get("status") == "fail"]


def run_checklist(config: RunConfig, db: Database, v: ValidationResult, probes: list[Any]) -> list[dict[str, Any]]:
    """Every item, in order; an item whose query fails is ``warn`` with the error (never raises)."""
    out = [_count_parity(v)]
    for name, check in (("whole_table_checksum", _table_checksum), ("no_nulls_left", _nulls_left),
                        ("no_orphaned_foreign_keys", _orphans), ("cache_hit_ratio", _cache_hit)):
        try:
            out.append(check(config, db, v))
        except Exception as exc:  # a checklist query failed: say so, do not stop the run
            log.warning("checklist item %s failed to run: %s", name, exc)
            out.append(item(name, "warn", f"could not run: {exc}"))
    out.append(_replicas(config, probes))
    for i in out:
        log.info("checklist %s: %s (%s)", i["name"], i["status"], i["detail"])
    return out


def _count_parity(v: ValidationResult) -> dict[str, Any]:
    if v.mode == "sampled":
        return item("row_count_parity", "n/a", "sampled validation: rows of the sample only",
                    source_rows=v.source_rows, target_rows=v.target_rows)
    ok = v.source_rows == v.target_rows
    return item("row_count_parity", "pass" if ok else "fail",
                f"{v.source_rows} source rows, {v.target_rows} target rows",
                source_rows=v.source_rows, target_rows=v.target_rows)


_BARE = re.compile(r'^\s*[`"]?([A-Za-z_][A-Za-z0-9_$]*)[`"]?\s*$')


def _table_checksum(c: RunConfig, db: Database, v: ValidationResult) -> dict[str, Any]:
    name = "whole_table_checksum"
    if c.mode != "copy":
        return item(name, "n/a", "fill mode: source and target are one table")
    transformed = [t for t, e in c.columns.items() if not (m := _BARE.match(e)) or m.group(1).lower() != t.lower()]
    with _session(c, db) as conn:
        cols = {t: [(r[0].lower(), str(r[1]).lower()) for r in db.query(conn, db.dialect.columns_sql(), (db.schema, t))]
                for t in (c.source_table, c.target_table)}
        conn.rollback()
    if transformed or cols[c.source_table] != cols[c.target_table]:
        why = (f"transformed column(s) {', '.join(transformed)}" if transformed
               else "the tables' columns differ")
        return item(name, "n/a", f"not expected byte-identical: {why}")
    if v.mode != "full":
        return item(name, "n/a", "sampled validation: a whole-table checksum is one unthrottled read of the "
                    "whole table on the primary, not run here; a full validation gives this item")
    ok = v.mismatched == 0 and v.count_parity and not v.unexplained_ranges
    return item(name, "pass" if ok else "fail",
                f"from the full validation: {v.mismatched} differing row(s) of {v.source_rows}, every key's row "
                "hashed in throttled key-range chunks of both tables (CHECKSUM TABLE / md5(string_agg) not run: "
                "one unthrottled whole-table read)", differing=v.mismatched, implied_by_validation=True)


def _nulls_left(c: RunConfig, db: Database, v: ValidationResult) -> dict[str, Any]:
    if v.mode == "full" and not v.mismatched and not v.unexplained_ranges and v.count_parity:
        return item("no_nulls_left", "pass", "0 target value(s) NULL where the expected value is not: implied by "
                    "the full validation, which compared every key's values (open outer ranges; a NULL hashes as "
                    "'N', never as a value) and found no difference; no table-wide query",
                    nulls=0, by_column={}, implied_by_validation=True)
    target = c.target_table if c.mode == "copy" else c.source_table
    sql, params = db.dialect.nulls_left_sql(c.source_table, target, c.key, c.columns, db.schema, c.mode == "copy")
    with _session(c, db) as conn:
        row = db.query(conn, sql, params)[0]
        conn.rollback()
    per = {col: int(n) for col, n in zip(c.columns, row, strict=True) if int(n)}
    total = sum(per.values())
    return item("no_nulls_left", "fail" if total else "pass",
                f"{total} target value(s) NULL where the expected value is not" + (f": {per}" if per else ""),
                nulls=total, by_column=per, implied_by_validation=False)


def _orphans(c: RunConfig, db: Database, _v: ValidationResult) -> dict[str, Any]:
    target = c.target_table if c.mode == "copy" else c.source_table
    found = []
    with _session(c, db) as conn:
        fks = db.query(conn, db.dialect.foreign_keys_sql(), (db.schema, target, db.schema, target))
        conn.rollback()
        for fk, child, ccol, parent, pcol in fks:
            n = int(db.query(conn, db.dialect.orphans_sql(str(child), str(ccol), str(parent), str(pcol), db.schema))[0][0])
            conn.rollback()
            found.append({"constraint": str(fk), "child": f"{child}.{ccol}", "parent": f"{parent}.{pcol}",
                          "orphans": n})
    total = sum(f["orphans"] for f in found)
    if not found:
        return item("no_orphaned_foreign_keys", "n/a", f"no single-column foreign key from or to {target}",
                    orphans=0, foreign_keys=[])
    return item("no_orphaned_foreign_keys", "fail" if total else "pass",
                f"{total} orphaned row(s) over {len(found)} foreign key(s)", orphans=total, foreign_keys=found)


def _cache_hit(c: RunConfig, db: Database, _v: ValidationResult) -> dict[str, Any]:
    with _session(c, db) as conn:
        misses, requests = db.query(conn, db.dialect.cache_hit_sql())[0]
        conn.rollback()
    misses, requests = float(misses or 0), float(requests or 0)
    ratio = misses / requests if requests else 0.0
    return item("cache_hit_ratio", "pass" if ratio < MAX_CACHE_MISS_RATIO else "warn",
                f"miss ratio {ratio:.4f} ({misses:.0f} of {requests:.0f} reads from disk; limit {MAX_CACHE_MISS_RATIO})",
                miss_ratio=round(ratio, 6), hit_ratio=round(1 - ratio, 6))


def _replicas(c: RunConfig, probes: list[Any]) -> dict[str, Any]:
    if not probes:
        return item("replicas_caught_up", "n/a", "no replica probed")
    from ..signals.lag import max_lag  # noqa: PLC0415

    worst, per = max_lag(probes)
    limit = c.max_replica_lag_seconds if c.max_replica_lag_seconds is not None else c.thresholds.forward_max_lag_seconds
    ok = worst is not None and all(x is not None for x in per.values()) and worst <= limit
    return item("replicas_caught_up", "pass" if ok else "warn",
                f"worst lag {worst if worst is not None else 'unknown'}s (limit {limit}s)", lag_seconds=per)
