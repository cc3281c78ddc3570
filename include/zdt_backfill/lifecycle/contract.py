"""Contract: the forward end of expand/contract, one step per function.

1. :func:`flip_reads`: only on a passing validation recorded in the state table after the
   last repair or truncate, the read flag goes to ``new`` for ``ramp_percent`` (1 %) of
   reads while an error-rate signal is watched; a 5xx rate above 0.1 % flips it straight
   back to ``legacy`` and halts the run (the seed's rule). Otherwise reads go to 100 %, and
   the write flag tells the application to write the new schema only: the seed's
   Post-Backfill window starts.
2. the soak (:func:`soak_until`): ``soak_minutes`` (24 h on prod) must pass after that
   before the legacy schema may go; the Airflow layer waits it out in a deferrable sensor.
3. :func:`legacy_action` (``keep`` | ``rename`` | ``drop``): only after the soak, with its own
   approval, and only when the last validation matched exactly. Its DDL runs with a short
   lock wait, retried (:meth:`~.db.Database.run_ddl`), so the application is never queued
   behind it for longer than that.
4. :func:`reclaim_storage`: *online* only: PostgreSQL ``VACUUM (ANALYZE)``, MySQL ``ANALYZE TABLE``.
   The seed suggests ``VACUUM FULL`` / ``OPTIMIZE TABLE``; both rewrite the whole table under
   a strong lock (``VACUUM FULL`` holds ACCESS EXCLUSIVE for the whole rewrite: downtime;
   ``OPTIMIZE TABLE`` rebuilds InnoDB tables and floods replicas). Neither runs here; for a
   real rewrite on PostgreSQL use pg_repack, outside this DAG.
5. :func:`finish`: the target's sequence / AUTO_INCREMENT is moved past ``max(key)``, and the
   run is ``contracted``.

Every destructive statement is logged and recorded (exact SQL, reason) before it runs.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from ..config import RunConfig
from ..db import Database
from ..errors import PermanentError
from ..routing.flags import LEGACY, NEW, FlagStore
from ..routing.ramp import ramp
from ..signals.errorsignal import ErrorSignal
from ..state.runstate import (
    CONTRACTED,
    POST_FLIP,
    WAIT_LEASE_MARGIN_SECONDS,
    InvalidTransitionError,
    RunHandle,
)
from . import triggers

log = logging.getLogger(__name__)

#: Seconds between readings of the error-rate signal during the ramp.
RAMP_POLL_SECONDS = 5.0
#: Suffix of the archive name a renamed legacy table or column gets.
ARCHIVE_SUFFIX = "_zdt_archived"


class RampFailedError(PermanentError):
    """The error-rate signal went over the limit at the ramp's first step: reads were flipped back."""


def flip_reads(
    config: RunConfig, db: Database, handle: RunHandle, store: FlagStore, signal: ErrorSignal | None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Ramp reads to the new schema, then tell the application to write it only.

    :param store: where the application reads its routing flags.
    :param signal: the 5xx-rate signal watched during the ramp (``None``: unwatched).
    :returns: ``{"read_flag", "write_flag", "ramp": RampResult dict}``.
    :raises InvalidTransitionError: no passing validation after the last repair/truncate, or
        the run is not where contract may start.
    :raises RampFailedError: the signal went over ``max_5xx_rate_pct``; reads are back on legacy
        and the run is ``halted``.
    """
    c = config
    row = handle.row()
    if row is not None and row.run_id == c.run_id and row.state in POST_FLIP:
        return flip_writes(config, db, handle, store, ramp_result=None)  # a retried flip: the write flag again
    validation = handle.require_passing_validation(c.thresholds.max_error_rate_pct)
    watch = c.ramp_watch_minutes * 60
    handle.step("flip_routing", f"validation passed ({validation.get('mismatched', 0)} differing rows): ramping reads",
                lease_seconds=watch + WAIT_LEASE_MARGIN_SECONDS)
    result = ramp(store, c.routing_flag, c.run_id, signal, ramp_percent=c.ramp_percent, watch_seconds=watch,
                  max_error_rate_pct=c.thresholds.max_5xx_rate_pct, poll_seconds=min(RAMP_POLL_SECONDS, max(watch, 0.1)),
                  sleep=sleep)
    handle.record("routing", f"read flag ramp: {'ok' if result.ok else result.reason}", result.to_dict())
    if not result.ok:
        handle.step("halt", f"ramp failed, reads flipped back to legacy: {result.reason}")
        raise RampFailedError(f"{result.reason}; the read flag {c.routing_flag} is back on legacy and the run holds")
    return flip_writes(config, db, handle, store, ramp_result=result.to_dict())


def flip_writes(config: RunConfig, db: Database, handle: RunHandle, store: FlagStore,
                ramp_result: dict[str, Any] | None) -> dict[str, Any]:
    """The one-way door: the target's sequences move past ``max(key)`` (the application's first
    insert without a key must not collide with a copied one), the run enters ``soaking``
    (:data:`~zdt_backfill.state.runstate.POST_FLIP`: from now on only the contract's steps move
    it), and then the write flag tells the application to write the new schema only. The state
    moves first: a flag set that fails leaves the run soaking with the writes not yet flipped,
    which refuses the same destructive steps (safe) and a retried flip sets the flag again.

    :returns: ``{"read_flag", "write_flag", "ramp", "sequences"}``.
    """
    c = config
    sequences = advance_sequences(c, db, handle)
    handle.step("flip_writes", "reads on the new schema: flipping writes (the post-backfill window opens)",
                lease_seconds=c.soak_minutes * 60 + WAIT_LEASE_MARGIN_SECONDS)
    log.info("write flag %s -> %s (the application writes the new schema only)", c.write_flag, NEW)
    store.set(c.write_flag, NEW, c.run_id)
    # The new schema is authoritative from here: a late legacy write mirrored by an up trigger
    # would overwrite the application's newer one (fill mode: recompute its new columns).
    triggers.remove(c, db, handle, "write flip")
    if soak_until(handle, c.soak_minutes) is None:  # a retried flip keeps the first window's start
        handle.window("active_backfill", "end")
        handle.window("post_backfill", "start")
    # The lease now covers the soak: nobody works on the run while it soaks.
    handle.renew(c.soak_minutes * 60 + WAIT_LEASE_MARGIN_SECONDS)
    return {"read_flag": c.routing_flag, "write_flag": c.write_flag, "ramp": ramp_result, "sequences": sequences}


def soak_until(handle: RunHandle, soak_minutes: float) -> datetime | None:
    """When the soak ends: ``soak_minutes`` after the Post-Backfill window started (the write
    flag went to new), in the database's clock; ``None`` if that has not happened."""
    for e in reversed(handle.events("window")):
        if e.detail.get("window") == "post_backfill" and e.detail.get("edge") == "start":
            return e.at + timedelta(minutes=soak_minutes)
    return None


def soak_remaining_seconds(config: RunConfig, db: Database, handle: RunHandle) -> float | None:
    """Seconds of soak left (0 when over), by the database's clock; ``None`` when the writes
    were never flipped to the new schema (there is nothing to soak)."""
    end = soak_until(handle, config.soak_minutes)
    if end is None:
        return None
    return max(0.0, (end - _db_now(db)).total_seconds())


def archive_name(name: str) -> str:
    """The name a renamed legacy table or column gets (at most 63 characters)."""
    return name[: 63 - len(ARCHIVE_SUFFIX)] + ARCHIVE_SUFFIX


def legacy_statements(config: RunConfig, db: Database) -> list[str]:
    """The exact DDL ``legacy_action`` will run (empty for ``keep``)."""
    c, d, s = config, db.dialect, db.schema
    if c.legacy_action == "keep":
        return []
    if c.mode == "copy":
        if c.legacy_action == "drop":
            return [d.drop_table_sql(c.source_table, s)]
        return [d.rename_table_sql(c.source_table, archive_name(c.source_table), s)]
    if c.legacy_action == "drop":
        return [d.drop_column_sql(c.source_table, col, s) for col in c.legacy_columns]
    return [d.rename_column_sql(c.source_table, col, archive_name(col), s) for col in c.legacy_columns]


def legacy_action(config: RunConfig, db: Database, handle: RunHandle,
                  approval: tuple[str | None, str | None]) -> dict[str, Any]:
    """Keep, rename or drop the legacy table (copy) or ``legacy_columns`` (fill).

    Preconditions, read from the state table right before acting: the run is soaking (reads and
    writes were flipped), the soak has passed, the last validation (after the last repair or
    truncate) read every key and matched exactly, and the drop was approved. A drop a human
    rejected, or whose approval timed out, keeps the legacy schema: recorded as the human's choice,
    and the contract goes on to its end.

    :param approval: ``(option, who)``: ``("approve", user)``, ``("approve", "auto")``,
        ``("reject", user)``, ``("reject", "timeout")``, or ``(None, None)`` when nobody answered.
    :returns: ``{"action", "statements", ...}``; ``action`` ``keep`` with ``kept_because`` after a reject.
    :raises InvalidTransitionError: a precondition does not hold; nothing was changed.
    """
    c = config
    statements = legacy_statements(c, db)
    if not statements:
        log.info("legacy_action is keep: the legacy schema stays")
        return {"action": "keep", "statements": []}
    handle.step("legacy_action", f"legacy {c.legacy_action}: checking its preconditions")
    option, approved_by = approval
    if option == "reject":
        why = f"legacy {c.legacy_action} rejected by {approved_by}" if approved_by != "timeout" else (
            f"legacy {c.legacy_action}: the approval timed out (no answer means no drop)")
        handle.record("legacy_kept", why, {"action": "keep", "asked": c.legacy_action, "by": approved_by})
        log.warning("%s: the legacy schema stays; the run contracts with legacy kept", why)
        return {"action": "keep", "statements": [], "kept_because": why}
    handle.require_passing_validation(c.thresholds.max_error_rate_pct, exact=True, full=True)
    end = soak_until(handle, c.soak_minutes)
    now = _db_now(db)
    if end is None or now < end:
        raise InvalidTransitionError(f"the soak has not passed (ends {end}, now {now}): the legacy schema stays")
    if option != "approve" or not approved_by:
        raise InvalidTransitionError(f"legacy {c.legacy_action} was not approved")
    tag = f"zdt_backfill:{c.run_id}:legacy"
    # a trigger must never outlive a table it writes into, nor follow the legacy table's rename
    triggers.remove(c, db, handle, f"legacy {c.legacy_action}")
    for sql in statements:
        handle.destructive(c.legacy_action, sql, f"legacy_action={c.legacy_action}, approved by {approved_by}, soak ended {end}")
    db.run_ddl([(sql, ()) for sql in statements], tag, fence=handle.fencer(handle.fence_states("legacy_action")))
    return {"action": c.legacy_action, "statements": statements, "approved_by": approved_by}


def reclaim_storage(config: RunConfig, db: Database, handle: RunHandle) -> dict[str, Any]:
    """Online storage reclaim and fresh statistics on the target; returns the statement run."""
    c, d = config, db.dialect
    if c.reclaim_storage == "none":
        return {"statement": None}
    sql, autocommit = d.reclaim_storage_sql(c.target_table, db.schema)
    log.info("reclaim storage (online): %s", sql)
    db.run_ddl([(sql, ())], f"zdt_backfill:{c.run_id}:reclaim", autocommit=autocommit,
               fence=handle.fencer(handle.fence_states("reclaim_storage")))
    handle.record("reclaim", sql)
    return {"statement": sql}


def advance_sequences(config: RunConfig, db: Database, handle: RunHandle) -> list[str]:
    """Move the target's key sequence (PostgreSQL) or AUTO_INCREMENT (MySQL) past ``max(key)``,
    so the application's first insert into the new schema does not collide with a copied key."""
    c, d = config, db.dialect
    if c.mode != "copy":
        return []
    with db.session() as conn:
        max_key = db.query(conn, d.max_key_sql(c.target_table, c.key, db.schema))[0][0]
        if max_key is None:
            return []
        statements = d.advance_sequences(lambda sql, params: db.query(conn, sql, params), c.target_table, c.key,
                                         max_key, db.schema)
        conn.rollback()
    for s in statements:
        log.info("sequence past max(%s) = %s: %s", c.key, max_key, s.label)
    db.apply(statements, f"zdt_backfill:{c.run_id}:contract", fence=handle.fencer())  # only forward: any state
    done = [s.label for s in statements]
    if done:
        handle.record("sequences", "moved past max(key)", {"sequences": done})
    return done


def finish(config: RunConfig, db: Database, handle: RunHandle) -> dict[str, Any]:
    """Sequences past ``max(key)``, then the run is ``contracted``."""
    sequences = advance_sequences(config, db, handle)
    # the application writes the new schema only, past the soak: legacy is no longer kept in step
    triggers.remove(config, db, handle, "contract finish")
    handle.step("finish_contract", "contract complete")
    return {"state": CONTRACTED, "sequences": sequences}


def flip_back(config: RunConfig, handle: RunHandle, store: FlagStore) -> dict[str, Any]:
    """Reads and writes back to the legacy schema (rollback's first step after stop)."""
    c = config
    before = store.get(c.routing_flag)
    log.info("read flag %s: %s -> %s; write flag %s -> %s", c.routing_flag, before, LEGACY, c.write_flag, LEGACY)
    store.set(c.routing_flag, LEGACY, c.run_id)
    store.set(c.write_flag, LEGACY, c.run_id)
    handle.record("routing", "flags back to legacy", {"read_flag": c.routing_flag, "write_flag": c.write_flag})
    return {"flag": c.routing_flag, "from": before.to_dict() if before else None, "to": LEGACY.to_dict()}


def _db_now(db: Database) -> datetime:
    with db.session() as conn:
        return db.query(conn, db.dialect.now_sql())[0][0]
