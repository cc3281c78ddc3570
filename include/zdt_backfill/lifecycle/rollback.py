"""Rollback: the backward end of expand/contract. Idempotent: running it twice is safe.

Steps, each a function, in order:

1. :func:`stop`: the run goes to ``rolling_back``, read from and written to the state table
   (refused when another run holds the lock, or when the run contracted); any partition
   still copying fails its next checkpoint update and stops (the seed's "SIGTERM to the
   backfill process", done through the database so it reaches every worker);
2. routing back to ``legacy`` (:func:`~zdt_backfill.lifecycle.contract.flip_back`). The seed flips the flag last;
   it flips first here, so no reader is routed to a target that is being emptied;
3. :func:`empty_target`: copy mode ``TRUNCATE`` with a short lock wait, retried
   (:meth:`~.db.Database.run_ddl`: a queued ``TRUNCATE`` would queue the application's
   writes behind it); fill mode NULLs the filled columns through the copy's own batch loop
   (keyset chunks, one transaction each, throttled, lag-gated, checkpointed);
4. :func:`restore_sequences`: each sequence of the target back to the value recorded at
   pre-flight (PostgreSQL ``setval``; MySQL ``ALTER TABLE ... AUTO_INCREMENT``), not to 1;
5. :func:`clear_caches`: Redis keys matching ``cache_key_pattern``, with ``SCAN`` + ``UNLINK``
   (never ``KEYS``, which blocks Redis; ``UNLINK`` frees memory off the main thread);
6. :func:`finish`: the run is ``rolled_back``.

Once the run is ``rolled_back``, every step is a no-op. The legacy data is never touched.
Every destructive statement is logged and recorded (exact SQL, reason) before it runs.
"""

from __future__ import annotations

import logging
from typing import Any

from ..cancel import Cancel
from ..config import RunConfig
from ..copying.chunker import Partition
from ..copying.copier import ROLLBACK, PartitionCopier, checkpoint_run_id
from ..db import Database
from ..redact import mask_url, scrub
from ..signals.lag import LagProbe
from ..state.checkpoint import CheckpointStore
from ..state.runstate import ROLLED_BACK, ROLLING_BACK, RunHandle
from . import triggers

log = logging.getLogger(__name__)

#: Keys per SCAN call when clearing caches (a hint to Redis, not a limit).
REDIS_SCAN_COUNT = 1000


def already_rolled_back(handle: RunHandle) -> bool:
    """True when this run already rolled back (its steps are then no-ops).

    :raises InvalidTransitionError: the run is neither rolling back nor rolled back: no rollback
        step may run (the steps table's ``rollback`` step).
    :raises RunStoppedError: another run holds the lock.
    """
    row = handle.row()
    if row is not None and row.run_id == handle.run_id and row.state == ROLLED_BACK:
        log.info("run %s already rolled back: nothing to do", handle.run_id)
        return True
    handle.step("rollback", "a rollback step")
    return False


def stop(config: RunConfig, db: Database, handle: RunHandle, reason: str) -> dict[str, Any]:
    """Signal running partitions to stop: the run goes to ``rolling_back``.

    :raises RunStoppedError: another run holds the lock: nothing of it may be rolled back from here.
    :raises InvalidTransitionError: the run contracted (or is contracting).
    """
    row = handle.row()
    if row is not None and row.run_id == config.run_id and row.state == ROLLED_BACK:
        return {"stopped": False, "already": ROLLED_BACK}
    handle.step("stop", reason)
    handle.window("active_backfill", "end")
    return {"stopped": True}


def empty_target(config: RunConfig, db: Database, handle: RunHandle, probes: list[LagProbe] | None = None,
                 cancel: Cancel | None = None) -> dict[str, Any]:
    """Truncate the target (copy) or NULL the filled columns in checkpointed batches (fill);
    ``cancel`` stops the batches when the task is told to (:mod:`zdt_backfill.cancel`)."""
    c, d = config, db.dialect
    if already_rolled_back(handle):
        return {"skipped": "already rolled back"}
    # first: none may write into the target once it is emptied (fill: refill the NULLed columns)
    triggers.remove(c, db, handle, "rollback")
    if c.mode == "copy":
        sql = d.truncate_sql(c.target_table, db.schema)
        handle.destructive("truncate", sql, "rollback: empty the copy target", forget_checkpoints=c.run_id)
        db.run_ddl([(sql, ())], f"zdt_backfill:{c.run_id}:rollback", lock_wait_s=c.lock_timeout_seconds,
                   fence=handle.fencer((ROLLING_BACK,)))
        return {"statement": sql}
    sql = d.nullify_batch_sql(c.source_table, c.key, list(c.columns), db.schema)
    handle.destructive("nullify", sql, f"rollback: NULL the filled columns in keyset batches of {c.batch_size}",
                       forget_checkpoints=c.run_id)
    with db.session() as conn:
        earlier = CheckpointStore(db).progress(conn, checkpoint_run_id(c, ROLLBACK))
        if earlier:  # a retried rollback resumes its own checkpoint, over the same bounds
            lo, hi = earlier[0].lo, earlier[0].hi
        else:
            lo, hi = db.query(conn, *d.key_bounds_sql(c.source_table, c.key, db.schema))[0][:2]
    rows = batches = 0
    if lo is not None:
        # One partition over the whole key range at the start of the rollback (rows inserted
        # since planning included), through the copy's loop: its checkpoints, throttle, lag gate.
        result = PartitionCopier(c, db, Partition(0, lo, hi), probes=probes, handle=handle, phase=ROLLBACK,
                                 cancel=cancel).run()
        rows, batches = result.progress["rows_written"], result.progress["batches"]
    return {"statement": sql, "rows": rows, "batches": batches}


def restore_sequences(config: RunConfig, db: Database, handle: RunHandle, checked: bool = True) -> list[str]:
    """Restore the target's sequences (PostgreSQL) or AUTO_INCREMENT (MySQL) recorded at pre-flight.

    :param checked: require this run to be rolling back (``False``: a staging rehearsal's restore,
        which checks itself that this run held the lock).
    """
    c, d = config, db.dialect
    if c.mode != "copy" or (checked and already_rolled_back(handle)):
        return []
    statements = d.restore_sequences(handle.row().sequences, c.target_table, db.schema)
    for s in statements:
        shown = f"{s.sql} -- {s.params}" if s.params else s.sql
        handle.destructive("reset_sequences", shown, "rollback: restore the sequence recorded at pre-flight")
    db.apply(statements, f"zdt_backfill:{c.run_id}:rollback", lock_wait_s=c.lock_timeout_seconds,
             fence=handle.fencer((ROLLING_BACK,) if checked else None))
    return [s.label for s in statements]


def clear_caches(config: RunConfig, handle: RunHandle | None = None) -> dict[str, Any]:
    """Delete Redis keys matching ``cache_key_pattern`` with SCAN + UNLINK; returns the count."""
    if not config.cache_redis_url:
        return {"cleared": 0, "skipped": "no cache configured"}
    import redis

    client = redis.Redis.from_url(config.cache_redis_url, socket_timeout=10, socket_connect_timeout=5)
    cleared = 0
    batch: list[bytes] = []
    if handle is not None:
        handle.destructive("clear_caches", f"SCAN MATCH {config.cache_key_pattern} + UNLINK", "rollback: clear caches")
    else:
        log.warning("destructive: UNLINK keys matching %r (SCAN + UNLINK)", config.cache_key_pattern)
    try:
        for key in client.scan_iter(match=config.cache_key_pattern, count=REDIS_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= REDIS_SCAN_COUNT:
                cleared += client.unlink(*batch)
                batch.clear()
        if batch:
            cleared += client.unlink(*batch)
    except Exception as exc:  # redis quotes its URL in some errors: never its password
        text = scrub(str(exc), [config.cache_redis_url])
        if text == str(exc):
            raise
        raise RuntimeError(f"cache clear on {mask_url(config.cache_redis_url)} failed: {type(exc).__name__}: {text}") from None
    finally:
        client.close()
    return {"cleared": cleared, "pattern": config.cache_key_pattern}


def finish(config: RunConfig, db: Database, handle: RunHandle) -> dict[str, Any]:
    """The run is ``rolled_back`` (a no-op when it already is)."""
    if already_rolled_back(handle):
        return {"state": ROLLED_BACK, "already": True}
    handle.step("finish_rollback", "rollback complete")
    return {"state": ROLLED_BACK}


def restore_staging(config: RunConfig, db: Database, store: Any) -> dict[str, Any]:
    """A staging rehearsal's end: put staging back as it was before the rehearsal, so the next one
    starts from the same state. Both routing flags go back to legacy, the rehearsal's own target
    table is truncated (a short lock wait, retried), its sequences / AUTO_INCREMENT go back to the
    values recorded at pre-flight, and the run's checkpoints are forgotten. Each step is logged and
    recorded as a destructive step before it runs. Safe to run twice; touches nothing unless this
    run held the table's lock, and only the target table of this run's conf (copy mode).

    :param store: the run's routing flag store.
    :returns: ``{"summary", "steps"}``; ``steps`` empty when this run never held the lock.
    :raises ValueError: fill mode (a rehearsal restores a copy target only).
    """
    if config.mode != "copy" or config.target_table == config.source_table:
        raise ValueError("a staging rehearsal restores a copy target only (mode copy)")
    from .contract import flip_back

    handle = RunHandle(db, config, "rehearsal.restore")
    row = handle.row()
    if row is None or row.run_id != config.run_id:
        return {"summary": "nothing to restore: this rehearsal never held the table's lock", "steps": []}
    steps: list[str] = []
    flip_back(config, handle, store)
    steps.append(f"flags {config.routing_flag} and {config.write_flag} -> legacy")
    steps += triggers.remove(config, db, handle, "staging rehearsal restore")["statements"]
    sql = db.dialect.truncate_sql(config.target_table, db.schema)
    handle.destructive("truncate", sql, "staging rehearsal: restore the pre-rehearsal state (empty target)",
                       forget_checkpoints=config.run_id)
    db.run_ddl([(sql, ())], f"zdt_backfill:{config.run_id}:rehearsal", lock_wait_s=config.lock_timeout_seconds,
               fence=handle.fencer())  # this rehearsal still holds the table's lock
    steps.append(sql)
    steps += restore_sequences(config, db, handle, checked=False)
    with db.session() as conn:
        CheckpointStore(db).forget(conn, config.run_id)
        conn.commit()
    steps.append("checkpoints forgotten")
    if config.legacy_action != "keep":
        steps.append(f"WARNING: legacy_action {config.legacy_action} is not undone by the restore")
    handle.record("rehearsal_restore", "staging restored", {"steps": steps})
    return {"summary": "; ".join(steps), "steps": steps}
