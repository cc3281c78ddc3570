"""The batch loop of one partition: keyset chunks, one transaction per batch.

Each batch, in one transaction:

1. find the chunk's last key (:class:`~zdt_backfill.copying.chunker.IntegerKeysetChunker`);
2. copy the chunk with one set-based statement (``INSERT ... SELECT`` insert-if-absent,
   or ``UPDATE ... WHERE key range AND still NULL``);
3. move the checkpoint watermark (guarded on the old watermark and the run lock);
4. commit.

The batch session is set up once: short lock waits, a statement timeout, a run tag, and
the plan pinned to the key index (:meth:`~zdt_backfill.dialects.Dialect.plan_pinning`).

A crash anywhere loses at most the uncommitted batch; the next attempt reads the
checkpoint and resumes after the last committed chunk, so nothing is copied twice
or skipped. Transient errors (lock wait timeout, deadlock, lost connection) are
retried with exponential backoff and jitter by tenacity, reconnecting when needed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ..cancel import Cancel, StatementDeadline
from ..config import RunConfig
from ..db import Database
from ..errors import BatchError, CancelledError, RunStoppedError, StatementTimeoutError
from ..signals.critical import CriticalLoadError, CriticalLoadMode, CriticalLoadWatchdog
from ..signals.heartbeat import HeartbeatWriter
from ..signals.lag import LagProbe
from ..signals.throttler import Throttler, build_throttler
from ..state.checkpoint import CheckpointStore, PartitionProgress
from ..state.lease import LeaseKeeper
from ..state.runstate import COPYING, ROLLING_BACK, RunHandle
from ..verify.checksum import target_casts
from .chunker import Chunk, IntegerKeysetChunker, Partition
from .progress import PartitionProgressLog, RunProgressLog, partition_summary

log = logging.getLogger(__name__)

#: Attempts per batch before the partition fails (and the Airflow task retry, which
#: resumes from the checkpoint, takes over). GitLab's batched migrations retry 3 times.
BATCH_ATTEMPTS = 5
#: Keys whose individual writes failed on data, kept per event for the report.
SHOWN_FAILED_KEYS = 20
#: A partition records a sample for the report's charts this often while it copies (s), and at
#: the start and end of each attempt.
SAMPLE_SECONDS = 10.0
#: Backoff between attempts: 0.5 s doubling up to 30 s, with jitter.
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


#: Phases the batch loop serves: the copy itself, and fill mode's rollback (NULLs the
#: filled columns through the same throttled, lag-gated, checkpointed loop).
COPY, ROLLBACK = "copy", "rollback"


def checkpoint_run_id(config: RunConfig, phase: str = COPY) -> str:
    """The checkpoint namespace of a phase: the run id, suffixed for the rollback phase."""
    return config.run_id if phase == COPY else f"{config.run_id}:{phase}"


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
    :param handle: the run's state handle (built from ``config`` when ``None``).
    :param phase: ``copy`` (copy or fill the target) or ``rollback`` (fill mode: NULL the filled
        columns); each phase has its own checkpoints and commits only while the run is in the
        phase's state (``copying`` / ``rolling_back``).
    :param planned: partitions in the plan: the rows/s ceiling is shared among them.
    :param control: live control (pause, stop, a new rows/s ceiling or batch time target),
        read between batches; ``None`` reads the run-state table's control only.
    :param plan_rows: partition number -> the plan's estimated source rows, for the whole run's
        progress line (rows against the estimate; by key span when ``None``). This partition's
        own lines count against ``partition.rows``.

    Batches adapt their size toward ``target_batch_seconds`` (:class:`~zdt_backfill.copying.chunker.BatchSizer`);
    a batch that hits the statement timeout is halved and tried again (GitLab's batched
    migrations split a timing-out batch), and counts against the attempts only at the floor.
    A batch that fails on data (a constraint, a foreign key, a conversion) is written key by
    key: the keys that cannot be written are data errors, recorded with their error, and the
    partition goes on while data errors stay at or under ``max_error_rate_pct`` of the keys
    scanned (the seed's circuit breaker); above it the partition fails and the run halts.
    """

    #: How a copy batch reaches the server: ``fused`` (the chunk end, the insert-if-absent and the
    #: checkpoint UPDATE in one statement, :meth:`~zdt_backfill.dialects.Dialect.fused_copy_batch_sql`, then
    #: COMMIT: two round trips) or ``statements`` (chunk-end read, INSERT, checkpoint UPDATE,
    #: COMMIT: four). Fill mode and the rollback phase always use ``statements``; so does a copy
    #: batch whose fused statement failed on data (the chunk is then known for key-by-key isolation).
    BATCH_PATHS = ("fused", "statements")
    batch_path = "fused"

    def __init__(
        self,
        config: RunConfig,
        db: Database,
        partition: Partition,
        key_index: str | None = None,
        probes: list[LagProbe] | None = None,
        on_batch: Callable[[PartitionProgress, Chunk, int, float], None] | None = None,
        throttler: Throttler | None = None,
        handle: RunHandle | None = None,
        phase: str = COPY,
        owner: str = "engine",
        planned: int | None = None,
        control: Callable[[], dict[str, Any]] | None = None,
        plan_rows: Mapping[int, int] | None = None,
        cancel: Cancel | None = None,
    ) -> None:
        self.config = config
        self.cancel = cancel or Cancel()
        self.plan_rows = plan_rows
        self.db = db
        self.partition = partition
        self.phase = phase
        self.store = CheckpointStore(db)
        self.handle = handle or RunHandle(db, config, owner)
        self.run_key = checkpoint_run_id(config, phase)
        self.state = COPYING if phase == COPY else ROLLING_BACK
        self.keeper: LeaseKeeper | None = None
        self.sizer = config.batch_sizer()
        self.chunker = IntegerKeysetChunker(db, config.source_table, config.key, partition, config.batch_size,
                                            self.sizer)
        self.throttler = throttler or build_throttler(
            config, db, probes, planned, control or self.handle.control, config.batch_size,
        )
        if cancel is not None:  # a throttle hold returns at once when the task is told to stop
            self.throttler.sleep = cancel.sleep
        if self.throttler.active_partitions is None:
            self.throttler.active_partitions = self._active_partitions
        if self.throttler.critical is None and any(v > 0 for v in config.critical_load.values()):
            self.throttler.critical = CriticalLoadMode(
                partition.index, db.dialect.ROW_LOCK_SIGNAL, self.handle.critical_mode, self.handle.set_critical_mode,
                self._lowest_running, self.handle.record, lambda: self.chunker.watermark, label=partition.label)
        d = db.dialect
        if phase == ROLLBACK:
            self.batch_sql = d.nullify_batch_sql(config.source_table, config.key, list(config.columns), db.schema)
        else:
            with db.session() as conn:  # the one typed projection: expressions cast to the target's types
                types = target_casts(config, db, conn)
            if config.mode == "copy":
                self.batch_sql = d.copy_batch_sql(
                    config.source_table, config.target_table, config.key, config.columns, db.schema, key_index, types
                )
            else:
                self.batch_sql = d.fill_batch_sql(config.source_table, config.key, config.columns, db.schema, types)
        self.tag = f"zdt_backfill:{config.run_id}:p{partition.index}"
        self.batch_sql = d.tag_statement(self.batch_sql, self.tag)
        self._key_index, self._types = key_index, (types if phase == COPY else None)
        self._fused: str | None = None  # the fused batch statement (built in run(), once the guard is known)
        self._fused_params: dict[str, Any] = {}
        self.on_batch = on_batch
        self.retries = 0
        self._resync = False
        self._conn: Any = None
        self._session_id: Any = None

    def _sample(self, progress: PartitionProgress) -> None:
        """One point of the report's charts: rows written, replica lag, throttle kind and the
        cumulative throttled seconds by kind (an event ``sample``; never fails the batch loop)."""
        with contextlib.suppress(Exception):
            self.handle.record("sample", f"partition {self.partition.label}", {
                "partition": self.partition.index, "t": round(time.time(), 3), "watermark": progress.watermark,
                "rows": progress.rows_written, "lag": self.throttler.last_lag, "throttle": self.throttler.state,
                "throttled": {k: round(v, 3) for k, v in self.throttler.throttled_seconds.items()},
            })

    def _lowest_running(self) -> int:
        """The lowest-numbered partition of this run not yet done: the one that copies in
        critical load's single-partition mode."""
        with self.db.session() as conn:
            left = [p.partition_no for p in self.store.progress(conn, self.run_key) if p.status != "done"]
        return min(left, default=self.partition.index)

    def _active_partitions(self) -> int:
        """Partitions of this run not yet done (from the checkpoints): those sharing the ceiling."""
        with self.db.session() as conn:
            return sum(p.status != "done" for p in self.store.progress(conn, self.run_key))

    # ------------------------------------------------------------------ connection
    def _connection(self) -> Any:
        if self._conn is None:
            c = self.config
            self._conn = self.db.connect()
            self.db.configure(self._conn, self.tag, c.lock_timeout_seconds, c.statement_timeout_seconds)
            self._session_id = self.db.query(self._conn, self.db.dialect.backend_id_sql())[0][0]
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

    def _rollback_or_forget(self, conn: Any) -> None:
        """Roll back the batch in flight; a connection that cannot even roll back (killed, reset)
        is forgotten, so the next batch reconnects."""
        try:
            conn.rollback()
        except Exception:
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
    def _build_fused(self) -> None:
        """The fused batch statements of this copy (see :attr:`batch_path`), once the guard is known."""
        self._fused = None
        if self.phase != COPY or self.config.mode != "copy" or self.batch_path != "fused":
            return
        c, d = self.config, self.db.dialect
        guard_sql, guard_params = self._guard
        parts = guard_sql.split("%s")
        named_guard = "".join(p + (f"%(g{i})s" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
        fence_sql, fence_params = self.handle.fence_sql((self.state,), named=True)
        self._fused_params = {"run": self.run_key, "part": self.partition.index,
                              **{f"g{i}": v for i, v in enumerate(guard_params)}, **fence_params}

        def checkpoint(new: str, rows: str, keys: str, extra_where: str) -> str:
            return self.store.advance_sql(new, rows, keys, "%(run)s", "%(part)s", "%(lo)s", named_guard, extra_where)

        self._fused = d.fused_copy_batch_sql(c.source_table, c.target_table, c.key, c.columns, checkpoint,
                                             self.db.schema, self._key_index, self._types, tag=self.tag,
                                             fence=fence_sql)

    def _batch(self, progress: PartitionProgress) -> tuple[Chunk, int] | None:
        """One batch; where the server bounds no ``INSERT ... SELECT`` (Oracle MySQL), under a
        client-side statement timeout (:class:`~zdt_backfill.cancel.StatementDeadline`)."""
        if self.db.dialect.SERVER_BOUNDS_DML:
            return self._batch_once(progress)
        deadline = StatementDeadline(self.db, lambda: self._session_id, self.config.statement_timeout_seconds)
        try:
            with deadline:
                return self._batch_once(progress)
        except Exception as exc:
            if deadline.fired:
                raise StatementTimeoutError(
                    f"the batch ran past statement_timeout_seconds={self.config.statement_timeout_seconds:g} and was "
                    "cancelled (KILL QUERY: this server bounds no INSERT ... SELECT by itself)") from exc
            raise

    def _batch_once(self, progress: PartitionProgress) -> tuple[Chunk, int] | None:
        conn = self._connection()
        if self._resync:
            # After an error the commit may have happened with its acknowledgement lost:
            # restart from what the checkpoint says was committed.
            committed = self.store.watermark(conn, self.run_key, self.partition.index)
            if committed != self.chunker.watermark:
                log.info("partition %s: the last batch had committed; resuming after key %d",
                         self.partition.label, committed)
                self.chunker.open_at_watermark(committed)
            self._resync = False
        if self._fused:
            return self._batch_fused(conn)
        return self._batch_statements(conn)

    def _batch_fused(self, conn: Any) -> tuple[Chunk, int] | None:
        """One batch as one statement plus COMMIT. A plain INSERT that meets a key dual-written
        since the statement's snapshot (a unique violation), or a batch that fails on data, is
        rolled back and done again by :meth:`_batch_statements` (``ON CONFLICT`` / the chunk known)."""
        lo = self.chunker.watermark
        if lo >= self.partition.hi:
            conn.rollback()
            return None
        params = {**self._fused_params, "lo": lo, "hi": self.partition.hi, "n": self.chunker.batch_size}
        try:
            rows = self.db.query_last(conn, self._fused, params)
        except BaseException as exc:
            self._rollback_or_forget(conn)
            if not self.db.is_permanent(exc):
                raise
            log.info("partition %s: the batch after key %d is done again statement by statement (%s)",
                     self.partition.label, lo, str(exc).splitlines()[0][:200])
            return self._batch_statements(self._connection())
        try:
            hi, keys, written, updated, fenced = rows[0]
            if not fenced:
                conn.rollback()
                raise self.handle.fence_lost(
                    (self.state,), f"partition {self.partition.label} stops, its batch after key {lo} not written")
            if hi is None:
                conn.rollback()
                return None
            self._chunk = chunk = Chunk(lo, int(hi), int(keys))
            if int(updated) != 1:
                self.store.advance_failed(conn, self.run_key, self.partition.index, lo, self._guard)
            conn.commit()
        except BaseException:
            self._rollback_or_forget(conn)
            raise
        return chunk, max(int(written), 0)

    def _batch_statements(self, conn: Any) -> tuple[Chunk, int] | None:
        try:
            self.handle.fence(conn, (self.state,))
            chunk = self.chunker.next(conn)
            self._chunk = chunk
            if chunk is None:
                conn.rollback()
                return None
            rows = self.db.execute(conn, self.batch_sql, (chunk.lo, chunk.hi))
            self.store.advance(
                conn, self.run_key, self.partition.index, chunk.lo, chunk.hi, max(rows, 0), chunk.keys,
                self._guard,
            )
            conn.commit()
        except BaseException:
            self._rollback_or_forget(conn)
            raise
        return chunk, max(rows, 0)

    def _failure(self, exc: BaseException, chunk: Chunk | None = None) -> str:
        """A permanent error's message, naming the statement and the key range."""
        rng = f"keys ({chunk.lo}, {chunk.hi}]" if chunk else f"the batch after key {self.chunker.watermark}"
        first_line = self.batch_sql.split(" SELECT ")[0][:160]
        return (f"partition {self.partition.label}: {rng} failed and a retry cannot fix it: {exc} "
                f"(statement: {first_line} ...)")

    def _isolate(self, chunk: Chunk, exc: BaseException, retrying: Retrying,
                 progress: PartitionProgress) -> tuple[Chunk, int]:
        """Write a chunk that failed on data key by key; the keys that fail are data errors.

        The chunk's checkpoint then moves in one last transaction, so a retry never writes
        the good keys twice. The circuit breaker trips when data errors exceed
        ``max_error_rate_pct`` of the keys scanned.

        :raises BatchError: the breaker tripped (the partition fails; the run halts).
        """
        log.warning("partition %s: keys (%d, %d] failed on data (%s); writing them one by one",
                    self.partition.label, chunk.lo, chunk.hi, exc)
        self._drop_connection()
        conn = self._connection()
        keys = [r[0] for r in self.db.query(conn, self.db.dialect.chunk_keys_sql(
            self.config.source_table, self.config.key, self.db.schema), (chunk.lo, chunk.hi))]
        conn.rollback()
        failed: list[tuple[Any, str]] = []
        written = 0

        def one(key: int) -> int:
            c = self._connection()
            try:
                self.handle.fence(c, (self.state,))
                n = self.db.execute(c, self.batch_sql, (key - 1, key))
                c.commit()
                return n
            except BaseException:
                with contextlib.suppress(Exception):
                    c.rollback()
                raise

        for key in keys:
            try:
                written += max(retrying(one, key), 0)
            except Exception as err:
                if not self.db.is_permanent(err):
                    raise
                failed.append((key, str(err).splitlines()[0][:200]))
        conn = self._connection()
        self.handle.fence(conn, (self.state,))
        self.store.advance(conn, self.run_key, self.partition.index, chunk.lo, chunk.hi, written, chunk.keys,
                           self._guard)
        conn.commit()
        self.data_errors += len(failed)
        self.handle.record("data_error", f"partition {self.partition.label}: {len(failed)} key(s) of ({chunk.lo}, "
                           f"{chunk.hi}] could not be written", {"keys": failed[:SHOWN_FAILED_KEYS], "count": len(failed),
                                                                 "error": str(exc)[:500]})
        scanned = progress.keys_scanned + chunk.keys
        total = progress.data_errors + self.data_errors
        rate = 100.0 * total / max(scanned, 1)
        if rate > self.config.thresholds.max_error_rate_pct:
            raise BatchError(
                f"circuit breaker: {total} data error(s) in {scanned:,} keys ({rate:.4f}%) > "
                f"{self.config.thresholds.max_error_rate_pct}%: {self._failure(exc, chunk)}"
            ) from exc
        return chunk, written

    # ------------------------------------------------------------------ the loop
    def run(self) -> PartitionResult:
        """Copy the partition to its end; return what was done.

        :raises RunStoppedError: the run was stopped, halted or taken over (its lock lost).
        :raises CheckpointConflictError: another worker copies the same partition.
        :raises ThrottleTimeoutError: replicas lagged past the gate for too long.
        :raises BatchError: a constraint violation, bad data or bad SQL in a batch
            (permanent: the batch rolled back; the checkpoint is before it).
        :raises Exception: a transient database error that persisted through
            :data:`BATCH_ATTEMPTS` attempts.
        """
        started = time.monotonic()
        if self.phase == COPY:
            self.handle.step("copy", f"partition {self.partition.label} copying")
        self._guard = self.handle.guard((self.state,))
        self._build_fused()
        with self.db.session() as conn:
            progress = self.store.open_partition(
                conn, self.run_key, self.partition.index, self.partition.lo, self.partition.hi
            )
        resumed = progress.watermark if progress.watermark >= self.partition.lo else None
        if resumed is not None:
            log.info(
                "partition %s: resuming from checkpoint watermark %d (%d rows, %d batches already committed)",
                self.partition.label, progress.watermark, progress.rows_written, progress.batches,
            )
        self.chunker.open_at_watermark(progress.watermark)
        lines = PartitionProgressLog(self.partition.label, self.partition.lo, self.partition.hi,
                                     max(progress.watermark, self.partition.lo - 1),
                                     rows_estimate=self.partition.rows, start_scanned=progress.keys_scanned)
        run_lines = RunProgressLog()
        last_sample = time.monotonic()
        self._sample(progress)
        # The attempt's start and end in the state table: an attempt without an end crashed
        # (its worker died); one that starts past ``lo`` resumed (the report counts both).
        self.handle.record("attempt", f"partition {self.partition.label} attempt starts", {
            "partition": self.partition.index, "phase": self.phase, "watermark": progress.watermark,
            "resumed": resumed is not None, "owner": self.handle.owner,
        })
        outcome = "failed"
        critical = {k: v for k, v in self.config.critical_load.items() if v > 0}
        watchdog = (CriticalLoadWatchdog(self.db, (self.config.source_table, self.config.target_table), critical)
                    if critical else None)
        retrying = Retrying(
            retry=retry_if_exception(lambda e: self.db.is_transient(e) and not self.db.is_statement_timeout(e)
                                     and not (watchdog and watchdog.tripped) and not self.cancel.cancelled),
            wait=wait_exponential_jitter(initial=BACKOFF_INITIAL_SECONDS, max=BACKOFF_MAX_SECONDS),
            stop=stop_after_attempt(BATCH_ATTEMPTS),
            before_sleep=self._before_retry,
            sleep=self.cancel.sleep,
            reraise=True,
        )
        rows_total = batches = 0
        self.data_errors = 0
        timeouts_at_floor = 0
        self.keeper = LeaseKeeper(self.handle)
        heart = HeartbeatWriter(self.db, self.handle.lock_key(), self.config.run_id)
        try:
            self.keeper.__enter__()
            heart.__enter__()
            while True:
                self.cancel.check()
                if self.keeper.lost:
                    raise RunStoppedError(f"run {self.config.run_id!r} lost its lease: partition {self.partition.label} stops")
                try:
                    self.throttler.before_batch()
                except CriticalLoadError as exc:
                    if self.throttler.critical is not None:
                        self.throttler.critical.record_halt(str(exc))
                    raise
                target = self.throttler.last_control.get("target_batch_seconds")
                if target is not None and float(target) != self.sizer.target_seconds:
                    log.info("live control: batch time target %.2fs -> %.2fs", self.sizer.target_seconds, float(target))
                    self.sizer.target_seconds = float(target)
                t0 = time.monotonic()
                self._chunk = None
                try:
                    if watchdog:
                        watchdog.arm(lambda: self._session_id)
                    try:
                        with self.cancel.statement(self.db, lambda: self._session_id):
                            done = retrying(self._batch, progress)
                    finally:
                        if watchdog:
                            watchdog.disarm()
                except Exception as exc:
                    self.cancel.raise_if_cancelled(exc)  # a cancelled statement's error is the stop's
                    if watchdog and watchdog.tripped:
                        tripped, watchdog.tripped = watchdog.tripped, None
                        self._drop_connection()
                        self._resync = True
                        # in the mode, a trip is a new episode (halt) once this partition has seen the
                        # load fall below critical since the mode began; a sibling's trip of the same
                        # episode only joins it (signals.critical.CriticalLoadMode.trip)
                        if self.throttler.critical_tripped(tripped):
                            raise CriticalLoadError(
                                f"critical load {tripped} with one partition active: the in-flight batch of "
                                f"partition {self.partition.label} was cancelled and rolled back (checkpoint at "
                                f"key {self.chunker.watermark}); halting"
                            ) from exc
                        log.error("partition %s: critical load %s: the in-flight batch was cancelled and rolled "
                                  "back (checkpoint at key %s): %s", self.partition.label, tripped,
                                  self.chunker.watermark, str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
                        self.retries += 1
                        continue
                    if self.db.is_statement_timeout(exc):
                        self._resync = True
                        self._drop_connection()
                        if self.sizer.halve():
                            self.retries += 1
                            log.warning("partition %s: batch hit the statement timeout; halving it to %d rows",
                                        self.partition.label, self.sizer.size)
                            continue
                        timeouts_at_floor += 1
                        if timeouts_at_floor < BATCH_ATTEMPTS:
                            self.retries += 1
                            self.cancel.sleep(BACKOFF_INITIAL_SECONDS * timeouts_at_floor)
                            continue
                    if self.db.is_permanent(exc) and self.phase == COPY and self._chunk is not None:
                        done = self._isolate(self._chunk, exc, retrying, progress)
                    elif self.db.is_permanent(exc):
                        self.data_errors += 1
                        raise BatchError(self._failure(exc)) from exc
                    else:
                        raise
                if done is None:
                    break
                chunk, rows = done
                seconds = time.monotonic() - t0
                timeouts_at_floor = 0
                self.chunker.advance(chunk)
                self.chunker.feedback(chunk, rows, seconds)
                rows_total += rows
                batches += 1
                progress.watermark = chunk.hi
                progress.rows_written += rows
                progress.keys_scanned += chunk.keys
                progress.batches += 1
                if self.on_batch:
                    self.on_batch(progress, chunk, rows, seconds)
                self.throttler.after_batch(chunk.keys)
                log.info("%s", lines.batch_line(progress.batches, chunk.hi, chunk.lo, chunk.hi, rows, seconds, self.throttler.last_lag,
                                                self.throttler.state, scanned=progress.keys_scanned))
                if time.monotonic() - last_sample >= SAMPLE_SECONDS:
                    last_sample = time.monotonic()
                    self._sample(progress)
                if run_lines.due():
                    with contextlib.suppress(Exception), self.db.session() as conn:
                        log.info("%s", run_lines.line(self.store.progress(conn, self.run_key), self.plan_rows))
            outcome = "done"
        except CancelledError:
            outcome = "cancelled"
            log.warning("partition %s: stopped when told (%s); its checkpoint stays at key %s, where the last "
                        "committed batch put it", self.partition.label, self.cancel.reason, self.chunker.watermark)
            raise
        finally:
            if watchdog:
                watchdog.close()
            heart.__exit__(None, None, None)
            self.keeper.__exit__(None, None, None)
            self.handle.close()
            self._drop_connection()
            elapsed = time.monotonic() - started
            throttled = sum(self.throttler.throttled_seconds.values())
            with self.db.session() as conn:
                self.store.add_counters(
                    conn, self.run_key, self.partition.index, retries=self.retries,
                    throttled_seconds=throttled, seconds=elapsed, data_errors=self.data_errors,
                )
            self._sample(progress)
            if self.throttler.throttled_seconds:
                with contextlib.suppress(Exception):
                    self.handle.record("throttle", f"partition {self.partition.label}", {
                        "partition": self.partition.index, "seconds": dict(self.throttler.throttled_seconds),
                        "changes": self.throttler.events[-50:],
                    })
            with contextlib.suppress(Exception):
                self.handle.record("attempt_end", f"partition {self.partition.label} attempt {outcome}", {
                    "partition": self.partition.index, "phase": self.phase, "outcome": outcome,
                    "rows": rows_total, "batches": batches, "seconds": round(elapsed, 3),
                    "max_replica_lag_seconds": self.throttler.max_lag_seen,
                })
        with self.db.session() as conn:
            self.store.finish_partition(conn, self.run_key, self.partition.index)
            final = self.store.open_partition(conn, self.run_key, self.partition.index, self.partition.lo, self.partition.hi)
        result = PartitionResult(
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
        log.info("%s", partition_summary(self.partition.label, result.to_dict()))
        return result
