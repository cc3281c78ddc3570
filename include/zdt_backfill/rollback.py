"""Rollback: the backward end of expand/contract. Idempotent: running it twice is safe.

Steps, in order:

1. **stop**: the run lock moves to ``rolling_back``; any partition still copying
   fails its next checkpoint update and stops (the seed's "SIGTERM to the backfill
   process", done through the database so it reaches every worker);
2. **flip routing back** to ``legacy``. The seed flips the flag last; we flip it
   first so no reader is routed to a target that is being emptied;
3. **empty the target**: copy mode ``TRUNCATE`` (one statement, transactional on
   PostgreSQL, atomic DDL on MySQL); fill mode sets the filled columns back to NULL
   in keyset batches, one transaction each, so it never locks the whole table;
4. **reset sequences** owned by the target's columns (copy mode; PostgreSQL
   ``setval(seq, 1, false)``, the same as ``ALTER SEQUENCE ... RESTART`` but with the
   sequence name as a bound value; MySQL's ``TRUNCATE`` already resets AUTO_INCREMENT);
5. **clear caches**: Redis keys matching ``cache_key_pattern``, with ``SCAN`` +
   ``UNLINK`` (never ``KEYS``, which blocks Redis; ``UNLINK`` frees memory off the main thread).

The legacy data is never touched. Every destructive statement is logged first.
"""

from __future__ import annotations

import logging
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .checkpoint import CheckpointStore
from .chunker import IntegerKeysetChunker, Partition
from .config import RunConfig
from .copier import lock_key
from .db import Database
from .errors import RunStoppedError

log = logging.getLogger(__name__)

#: Attempts at TRUNCATE, each waiting at most lock_timeout_seconds for its lock.
TRUNCATE_ATTEMPTS = 10
#: Keys per SCAN call when clearing caches (a hint to Redis, not a limit).
REDIS_SCAN_COUNT = 1000


def stop(config: RunConfig, db: Database) -> bool:
    """Signal running partitions to stop.

    :returns: True (this run holds the lock, now ``rolling_back``).
    :raises RunStoppedError: this run does not hold the lock on the target (another run
        took it): nothing of that run may be rolled back from here.
    """
    store = CheckpointStore(db)
    with db.session() as conn:
        if store.tables_exist(conn) and store.set_state(conn, lock_key(config), config.run_id, "rolling_back"):
            return True
        raise RunStoppedError(
            f"run {config.run_id!r} does not hold the backfill lock on {lock_key(config)} "
            f"(now {store.state(conn, lock_key(config))}): refusing to roll back another run's target"
        )


def empty_target(config: RunConfig, db: Database) -> dict[str, Any]:
    """Truncate the target (copy) or NULL the filled columns in batches (fill)."""
    c, d = config, db.dialect
    if c.mode == "copy":
        sql = f"TRUNCATE TABLE {d.table(c.target_table, db.schema)}"

        def truncate() -> None:
            # A short lock wait, retried: while TRUNCATE queues for its exclusive lock,
            # the application's writes to the table queue behind it.
            with db.session(f"zdt_backfill:{c.run_id}:rollback", c.lock_timeout_seconds, c.statement_timeout_seconds) as conn:
                log.warning("destructive: %s", sql)
                db.execute(conn, sql)
                conn.commit()

        Retrying(
            retry=retry_if_exception(db.is_transient), wait=wait_exponential_jitter(initial=0.5, max=10),
            stop=stop_after_attempt(TRUNCATE_ATTEMPTS), reraise=True,
        )(truncate)
        return {"statement": sql}
    # fill mode: keyset batches over the whole key range
    k = d.quote(c.key)
    sets = ", ".join(f"{d.quote(col)} = NULL" for col in c.columns)
    any_set = " OR ".join(f"{d.quote(col)} IS NOT NULL" for col in c.columns)
    sql = f"UPDATE {d.table(c.source_table, db.schema)} SET {sets} WHERE {k} > %s AND {k} <= %s AND ({any_set})"
    log.warning("destructive, in batches of %d keys: %s", c.batch_size, sql)
    rows = batches = 0
    with db.session(f"zdt_backfill:{c.run_id}:rollback", c.lock_timeout_seconds, c.statement_timeout_seconds) as conn:
        lo, hi = db.query(conn, f"SELECT min({k}), max({k}) FROM {d.table(c.source_table, db.schema)}")[0]
        conn.rollback()
        if lo is not None:
            chunker = IntegerKeysetChunker(db, c.source_table, c.key, Partition(0, lo, hi), c.batch_size)
            while (chunk := chunker.next(conn)) is not None:
                rows += max(db.execute(conn, sql, (chunk.lo, chunk.hi)), 0)
                conn.commit()
                chunker.advance(chunk)
                batches += 1
    return {"statement": sql, "rows": rows, "batches": batches}


def reset_sequences(config: RunConfig, db: Database) -> list[str]:
    """Restart the sequences owned by the target's columns (copy mode, PostgreSQL)."""
    c, d = config, db.dialect
    if c.mode != "copy" or d.name != "postgres":
        return []
    done = []
    with db.session() as conn:
        seqs = db.query(
            conn,
            "SELECT pg_get_serial_sequence(%s, column_name) FROM information_schema.columns"
            " WHERE table_schema = coalesce(%s, current_schema()) AND table_name = %s"
            " AND pg_get_serial_sequence(%s, column_name) IS NOT NULL",
            (d.table(c.target_table, db.schema), db.schema, c.target_table, d.table(c.target_table, db.schema)),
        )
        for (seq,) in seqs:
            # seq comes back already quoted/qualified by PostgreSQL; pass it as regclass
            log.warning("destructive: SELECT setval(%s, 1, false)  -- restart the sequence", seq)
            db.query(conn, "SELECT setval(%s::regclass, 1, false)", (seq,))
            done.append(seq)
        conn.commit()
    return done


def clear_caches(config: RunConfig) -> dict[str, Any]:
    """Delete Redis keys matching ``cache_key_pattern`` with SCAN + UNLINK; returns the count."""
    if not config.cache_redis_url:
        return {"cleared": 0, "skipped": "no cache configured"}
    import redis

    client = redis.Redis.from_url(config.cache_redis_url)
    cleared = 0
    batch: list[bytes] = []
    log.warning("destructive: UNLINK keys matching %r (SCAN + UNLINK)", config.cache_key_pattern)
    for key in client.scan_iter(match=config.cache_key_pattern, count=REDIS_SCAN_COUNT):
        batch.append(key)
        if len(batch) >= REDIS_SCAN_COUNT:
            cleared += client.unlink(*batch)
            batch.clear()
    if batch:
        cleared += client.unlink(*batch)
    client.close()
    return {"cleared": cleared, "pattern": config.cache_key_pattern}
