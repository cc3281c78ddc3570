"""The batch loop of one partition: keyset chunks, one transaction per batch.

Each batch, in one transaction:

1. find the chunk's last key (:class:`~.chunker.IntegerKeysetChunker`);
2. copy the chunk with one set-based statement (``INSERT ... SELECT`` insert-if-absent,
   or ``UPDATE ... WHERE key range AND still NULL``);
3. move the checkpoint watermark (guarded on the old watermark and the run lock);
4. commit.

The batch session is set up once: short lock waits, a statement timeout, a run tag, and
the plan pinned to the key index (:meth:`~.dialects.Dialect.plan_pinning`).

A crash anywhere loses at most the uncommitted batch; the next attempt reads the
checkpoint and resumes after the last committed chunk, so nothing is copied twice
or skipped. Transient errors (lock wait timeout, deadlock, lost connection) are
retried with exponential backoff and jitter by tenacity, reconnecting when needed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .checkpoint import CheckpointStore, PartitionProgress
from .chunker import Chunk, IntegerKeysetChunker, Partition
from .config import RunConfig
from .db import Database
from .errors import BatchError
from .lag import LagProbe
from .throttler import Throttler

log = logging.getLogger(__name__)

#: Attempts per batch before the partition fails (and the Airflow task retry, which
#: resumes from the checkpoint, takes over). GitLab's batched migrations retry 3 times.
BATCH_ATTEMPTS = 5
#: Backoff between attempts: 0.5 s doubling up to 30 s, with jitter.
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


def lock_key(config: RunConfig) -> str:
    """The run-lock key of a config's target table: ``schema.table`` (``.table`` without schema)."""
    return f"{config.schema or ''}.{config.target_table}"


@dataclass
class PartitionResult:
    """What one partition did in this attempt plus its checkpoint totals."""

    partition: dict[str, Any]
    progress: dict[str, Any]
    attempt_rows: int = 0
    attempt_batches: int = 0
    attempt_seconds: float = 0.0
    throttled_seconds: dict[str, float] = field(default_factory=dict)
    max_replica_lag_seconds: float = 0.0
    retries: int = 0
    resumed_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PartitionCopier:
    """Copies one partition, resuming from its checkpoint.

    :param config: the run.
    :param db: the database holding source and target.
    :param partition: the key range to copy.
    :param key_index: the index on the key (MySQL forces it), from pre-flight.
    :param probes: replica lag probes for the lag gate.
    :param on_batch: called after each committed batch with ``(progress, chunk, rows, seconds)``;
        the Airflow layer logs one line per batch from it.
    """

    def __init__(
        self,
        config: RunConfig,
        db: Database,
        partition: Partition,
        key_index: str | None = None,
        probes: list[LagProbe] | None = None,
        on_batch: Callable[[PartitionProgress, Chunk, int, float], None] | None = None,
        throttler: Throttler | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.partition = partition
        self.store = CheckpointStore(db)
        self.lock_key = lock_key(config)
        self.chunker = IntegerKeysetChunker(db, config.source_table, config.key, partition, config.batch_size)
        self.throttler = throttler or Throttler(
            config.rate_per_partition(),
            config.batch_size,
            probes,
            config.max_replica_lag_seconds,
            config.replica_wait_timeout_seconds,
        )
        d = db.dialect
        if config.mode == "copy":
            self.batch_sql = d.copy_batch_sql(
                config.source_table, config.target_table, config.key, config.columns, db.schema, key_index
            )
        else:
            self.batch_sql = d.fill_batch_sql(config.source_table, config.key, config.columns, db.schema)
        self.on_batch = on_batch
        self.retries = 0
        self._resync = False
        self._conn: Any = None

    # ------------------------------------------------------------------ connection
    def _connection(self) -> Any:
        if self._conn is None:
            c = self.config
            self._conn = self.db.connect()
            self.db.configure(
                self._conn, f"zdt_backfill:{c.run_id}:p{self.partition.index}", c.lock_timeout_seconds,
                c.statement_timeout_seconds,
            )
            for sql in self.db.dialect.plan_pinning():
                self.db.execute(self._conn, sql)
            self._conn.commit()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def _before_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        self._resync = True
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "partition %s: transient error on attempt %d, retrying in %.1fs: %s",
            self.partition.label, state.attempt_number, state.next_action.sleep if state.next_action else 0, exc,
        )
        self._drop_connection()  # a fresh connection also recovers from a killed session

    # ------------------------------------------------------------------ one batch
    def _batch(self, progress: PartitionProgress) -> tuple[Chunk, int] | None:
        conn = self._connection()
        if self._resync:
            # After an error the commit may have happened with its acknowledgement lost:
            # restart from what the checkpoint says was committed.
            committed = self.store.watermark(conn, self.config.run_id, self.partition.index)
            if committed != self.chunker.watermark:
                log.info("partition %s: the last batch had committed; resuming after key %d",
                         self.partition.label, committed)
                self.chunker.open_at_watermark(committed)
            self._resync = False
        try:
            chunk = self.chunker.next(conn)
            if chunk is None:
                conn.rollback()
                return None
            rows = self.db.execute(conn, self.batch_sql, (chunk.lo, chunk.hi))
            self.store.advance(
                conn, self.config.run_id, self.lock_key, self.partition.index, chunk.lo, chunk.hi, max(rows, 0),
                chunk.keys,
            )
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                self._conn = None
            raise
        return chunk, max(rows, 0)

    # ------------------------------------------------------------------ the loop
    def run(self) -> PartitionResult:
        """Copy the partition to its end; return what was done.

        :raises RunStoppedError: the run was stopped (rollback) or lost its lock.
        :raises CheckpointConflictError: another worker copies the same partition.
        :raises ThrottleTimeoutError: replicas lagged past the gate for too long.
        :raises BatchError: a constraint violation, bad data or bad SQL in a batch
            (permanent: the batch rolled back; the checkpoint is before it).
        :raises Exception: a transient database error that persisted through
            :data:`BATCH_ATTEMPTS` attempts.
        """
        cfg = self.config
        started = time.monotonic()
        with self.db.session() as conn:
            progress = self.store.open_partition(
                conn, cfg.run_id, self.partition.index, self.partition.lo, self.partition.hi
            )
        resumed = progress.watermark if progress.watermark >= self.partition.lo else None
        if resumed is not None:
            log.info(
                "partition %s: resuming from checkpoint watermark %d (%d rows, %d batches already committed)",
                self.partition.label, progress.watermark, progress.rows_written, progress.batches,
            )
        self.chunker.open_at_watermark(progress.watermark)
        retrying = Retrying(
            retry=retry_if_exception(self.db.is_transient),
            wait=wait_exponential_jitter(initial=BACKOFF_INITIAL_SECONDS, max=BACKOFF_MAX_SECONDS),
            stop=stop_after_attempt(BATCH_ATTEMPTS),
            before_sleep=self._before_retry,
            reraise=True,
        )
        rows_total = batches = 0
        try:
            while True:
                self.throttler.before_batch()
                t0 = time.monotonic()
                try:
                    done = retrying(self._batch, progress)
                except Exception as exc:
                    if self.db.is_permanent(exc):
                        raise BatchError(
                            f"partition {self.partition.label}: batch after key {self.chunker.watermark} failed "
                            f"and a retry cannot fix it: {exc}"
                        ) from exc
                    raise
                if done is None:
                    break
                chunk, rows = done
                seconds = time.monotonic() - t0
                self.chunker.advance(chunk)
                self.chunker.feedback(chunk, rows, seconds)
                rows_total += rows
                batches += 1
                progress.watermark = chunk.hi
                progress.rows_written += rows
                progress.batches += 1
                if self.on_batch:
                    self.on_batch(progress, chunk, rows, seconds)
                self.throttler.after_batch(rows)
        finally:
            self._drop_connection()
            elapsed = time.monotonic() - started
            throttled = sum(self.throttler.throttled_seconds.values())
            with self.db.session() as conn:
                self.store.add_counters(
                    conn, cfg.run_id, self.partition.index, retries=self.retries,
                    throttled_seconds=throttled, seconds=elapsed,
                )
        with self.db.session() as conn:
            self.store.finish_partition(conn, cfg.run_id, self.partition.index)
            final = self.store.open_partition(conn, cfg.run_id, self.partition.index, self.partition.lo, self.partition.hi)
        return PartitionResult(
            partition=self.partition.to_dict(),
            progress=final.to_dict(),
            attempt_rows=rows_total,
            attempt_batches=batches,
            attempt_seconds=round(time.monotonic() - started, 3),
            throttled_seconds=dict(self.throttler.throttled_seconds),
            max_replica_lag_seconds=self.throttler.max_lag_seen,
            retries=self.retries,
            resumed_from=resumed,
        )
