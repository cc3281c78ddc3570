"""Repair: rewrite the keys validation named as missing, different or extra, from the source.

Spirit repairs a chunk whose checksum differs by re-copying it; pt-table-sync writes the
differing rows. Here each range validation found differing is diffed again *now* (in the
database, so the keys are current, not a stale list), and its keys are repaired in short
batch transactions under the backfill's session settings (short lock wait, statement
timeout), each retried on transient errors, between them the same throttle as the copy:

- ``missing`` / ``different``: ``INSERT ... SELECT ... WHERE key IN (...)`` reading the source
  rows under a shared lock, overwriting the target row (``ON CONFLICT DO UPDATE`` /
  ``ON DUPLICATE KEY UPDATE``); fill mode ``UPDATE ... SET col = expr WHERE key IN (...)``;
- ``extra``: ``DELETE`` of the target key, only while the source has no row for it (checked
  in the same statement, so a row the application inserted meanwhile is kept).

A batch that fails on data (a foreign key, a constraint, a conversion) is retried key by
key, so only the keys that really cannot be written count as data errors. The affected
ranges are then validated again; the decision reads that validation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..config import RunConfig
from ..db import Database
from ..dialects import Range
from ..signals.throttler import Throttler
from ..verify.checksum import differing_keys, target_casts

log = logging.getLogger(__name__)

#: Attempts per repair batch on transient errors (as the copy's batches).
REPAIR_ATTEMPTS = 5
#: Keys kept in the repair result per kind (the approval page and the report show them).
SHOWN_KEYS = 50


@dataclass
class RepairResult:
    """What a repair did: keys repaired per kind, keys that could not be written, time (s)."""

    ranges: int = 0
    repaired: dict[str, int] = field(default_factory=dict)
    keys: dict[str, list[Any]] = field(default_factory=dict)
    failed_keys: list[Any] = field(default_factory=list)
    data_errors: int = 0
    batches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def repair_ranges(
    config: RunConfig, db: Database, ranges: list[Range], throttler: Throttler | None = None,
    before_write: Any = None, fence: Callable[[Any], None] | None = None,
) -> RepairResult:
    """Repair every differing key of ``ranges``.

    :param ranges: the ranges whose checksums differed.
    :param throttler: the copy's throttle (rows/s ceiling, replica-lag gate); none when ``None``.
    :param before_write: called once with ``(sql_statements, counts)`` before the first write,
        so the caller records the destructive step (its exact SQL) before it happens.
    :param fence: the run's fence (:meth:`~zdt_backfill.state.runstate.RunHandle.fencer`), taken in
        each repair batch's transaction before it writes.
    :returns: a :class:`RepairResult`.
    :raises RunStoppedError: the fence did not hold (the batch in hand was not written).
    """
    c, d = config, db.dialect
    started = time.monotonic()
    result = RepairResult(ranges=len(ranges))
    tag = f"zdt_backfill:{c.run_id}:repair"
    with db.session() as conn:
        casts = target_casts(c, db, conn)
        work: dict[str, list[Any]] = {"missing": [], "different": [], "extra": []}
        for rng in ranges:
            for key, kind in differing_keys(c, db, conn, rng, casts):
                work[kind].append(key)
    upserts = work["missing"] + work["different"]
    total = len(upserts) + len(work["extra"])
    for kind, keys in work.items():
        result.keys[kind] = keys[:SHOWN_KEYS]
    if total == 0:
        result.seconds = time.monotonic() - started
        return result
    size = c.batch_size
    plan = []
    if upserts:
        plan.append(("upsert", d.repair_upsert_sql(c.source_table, c.target_table, c.key, c.columns,
                                                   min(size, len(upserts)), db.schema, c.mode == "copy", casts),
                     upserts))
    if work["extra"] and c.mode == "copy":
        plan.append(("delete", d.delete_extra_sql(c.source_table, c.target_table, c.key,
                                                  min(size, len(work["extra"])), db.schema), work["extra"]))
    if before_write:
        before_write([sql for _, sql, _ in plan], {k: len(v) for k, v in work.items()})
    retrying = Retrying(
        retry=retry_if_exception(db.is_transient),
        wait=wait_exponential_jitter(initial=0.5, max=30),
        stop=stop_after_attempt(REPAIR_ATTEMPTS),
        reraise=True,
    )
    with db.session(tag, c.lock_timeout_seconds, c.statement_timeout_seconds) as conn:
        for what, _, keys in plan:
            for i in range(0, len(keys), size):
                batch = keys[i:i + size]
                sql = (d.repair_upsert_sql(c.source_table, c.target_table, c.key, c.columns, len(batch), db.schema,
                                           c.mode == "copy", casts) if what == "upsert"
                       else d.delete_extra_sql(c.source_table, c.target_table, c.key, len(batch), db.schema))
                if throttler:
                    throttler.before_batch()
                try:
                    retrying(_write, db, conn, sql, batch, fence)
                except Exception as exc:
                    if not db.is_permanent(exc):
                        raise
                    _one_by_one(db, conn, c, what, batch, result, exc, casts, fence)
                result.batches += 1
                if throttler:
                    throttler.after_batch(len(batch))
        failed = set(result.failed_keys)
        for kind, keys in work.items():
            result.repaired[kind] = sum(1 for k in keys if k not in failed)
    result.seconds = time.monotonic() - started
    log.info("repair: %s in %d batch(es), %d key(s) could not be written, %.1fs",
             result.repaired, result.batches, len(result.failed_keys), result.seconds)
    return result


def _write(db: Database, conn: Any, sql: str, keys: list[Any], fence: Callable[[Any], None] | None = None) -> int:
    try:
        if fence:
            fence(conn)
        n = db.execute(conn, sql, tuple(keys))
        conn.commit()
        return n
    except BaseException:
        conn.rollback()
        raise


def _one_by_one(db: Database, conn: Any, c: RunConfig, what: str, batch: list[Any], result: RepairResult,
                first: Exception, casts: dict[str, Any], fence: Callable[[Any], None] | None = None) -> None:
    """A batch failed on data: write its keys one at a time to find the ones that cannot be written."""
    d = db.dialect
    sql = (d.repair_upsert_sql(c.source_table, c.target_table, c.key, c.columns, 1, db.schema, c.mode == "copy", casts)
           if what == "upsert" else d.delete_extra_sql(c.source_table, c.target_table, c.key, 1, db.schema))
    log.warning("repair batch of %d key(s) failed on data (%s); writing them one by one", len(batch), first)
    for key in batch:
        try:
            _write(db, conn, sql, [key], fence)
        except Exception as exc:
            if not db.is_permanent(exc):
                raise
            result.failed_keys.append(key)
            result.data_errors += 1
            log.error("repair of key %s failed on data: %s", key, exc)
