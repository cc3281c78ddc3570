"""Contract: the forward end of expand/contract.

1. flip the routing flag to ``new`` (the application reads the new schema);
2. drop the legacy table (copy mode) or columns (fill mode), only when conf says
   ``drop_legacy: true``; otherwise keep them for a later, separate contract;
3. reclaim storage *online*: PostgreSQL ``VACUUM (ANALYZE)``, MySQL ``ANALYZE TABLE``.

The seed suggests ``VACUUM FULL`` / ``OPTIMIZE TABLE``. Both rewrite the whole table:
``VACUUM FULL`` holds an ACCESS EXCLUSIVE lock (no reads, no writes) for the whole
rewrite, which is downtime; ``OPTIMIZE TABLE`` on InnoDB rebuilds the table and
floods replicas with the rebuild. Neither runs here. ``reclaim_storage: "none"``
skips even the online step. (For a real rewrite without long locks on PostgreSQL,
use pg_repack, outside this DAG.)

Every destructive statement is logged before it runs.
"""

from __future__ import annotations

import logging
from typing import Any

from .checkpoint import CheckpointStore
from .config import RunConfig
from .copier import lock_key
from .db import Database

log = logging.getLogger(__name__)

NEW = "new"
LEGACY = "legacy"


def flip_routing(config: RunConfig, db: Database, value: str) -> dict[str, Any]:
    """Set the routing flag to ``value`` (``new`` or ``legacy``); returns ``{flag, from, to}``."""
    store = CheckpointStore(db)
    with db.session() as conn:
        store.create_tables(conn)
        before = store.get_flag(conn, config.routing_flag)
        store.set_flag(conn, config.routing_flag, value, config.run_id)
    log.info("routing flag %s: %s -> %s", config.routing_flag, before, value)
    return {"flag": config.routing_flag, "from": before, "to": value}


def drop_legacy(config: RunConfig, db: Database, mismatched_rows: int = 0) -> dict[str, Any]:
    """Drop the legacy table/columns if ``drop_legacy`` is set and validation found no
    differing row; returns what was done.

    The forward threshold (99.99 %) tolerates a few differing rows for the routing flip;
    dropping the legacy data would make them permanent, so any difference keeps it.
    """
    c, d = config, db.dialect
    if not c.drop_legacy:
        log.info("drop_legacy is false: legacy schema kept")
        return {"dropped": [], "kept": True}
    if mismatched_rows:
        log.warning("drop_legacy refused: validation found %d differing row(s); legacy schema kept", mismatched_rows)
        return {"dropped": [], "kept": True, "refused": f"{mismatched_rows} differing row(s)"}
    if c.mode == "copy":
        statements = [f"DROP TABLE {d.table(c.source_table, db.schema)}"]
        dropped = [c.source_table]
    else:
        statements = [
            f"ALTER TABLE {d.table(c.source_table, db.schema)} DROP COLUMN {d.quote(col)}" for col in c.legacy_columns
        ]
        dropped = [f"{c.source_table}.{col}" for col in c.legacy_columns]
    with db.session(f"zdt_backfill:{c.run_id}:contract", c.lock_timeout_seconds, c.statement_timeout_seconds) as conn:
        for sql in statements:
            log.warning("destructive: %s", sql)
            db.execute(conn, sql)
        conn.commit()
    return {"dropped": dropped, "kept": False}


def reclaim_storage(config: RunConfig, db: Database) -> dict[str, Any]:
    """Online storage reclaim and fresh statistics on the target; returns the statement run."""
    c, d = config, db.dialect
    if c.reclaim_storage == "none":
        return {"statement": None}
    table = d.table(c.target_table, db.schema)
    sql = f"VACUUM (ANALYZE) {table}" if d.name == "postgres" else f"ANALYZE TABLE {table}"
    log.info("reclaim storage (online): %s", sql)
    if d.name == "postgres":
        db.run_autocommit(sql)
    else:
        with db.session() as conn:
            db.query(conn, sql)  # ANALYZE TABLE returns a result set
            conn.commit()
    return {"statement": sql}


def finish(config: RunConfig, db: Database, state: str) -> bool:
    """Release the run lock by moving it to a final state (``contracted``, ``rolled_back``, ``failed``)."""
    store = CheckpointStore(db)
    with db.session() as conn:
        if not store.tables_exist(conn):
            return False
        return store.set_state(conn, lock_key(config), config.run_id, state)
