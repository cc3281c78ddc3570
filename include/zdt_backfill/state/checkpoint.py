"""Partition checkpoints, kept in the target database.

``zdt_backfill_checkpoints`` holds one row per (run, partition): the partition's key range
(the persisted plan), its watermark (the last key copied) and counters. A batch's writes
and its checkpoint update commit in one transaction, so a retried or restarted partition
resumes exactly where it stopped. The update is fenced on the run still holding its lock
in the expected state (a predicate from :meth:`~zdt_backfill.state.runstate.RunHandle.guard`), so a run that
lost its lease, or was stopped, cannot commit a batch.

The run's state and lease live in :mod:`zdt_backfill.state.runstate`; routing flags in :mod:`zdt_backfill.routing`.
These tables are created only after pre-flight has passed, so a run refused for bad
input leaves the database as it found it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..db import Database
from ..dialects.schema import CHECKPOINTS
from ..errors import CheckpointConflictError, PreflightError, RunStoppedError

_COLUMNS = (
    "partition_no, lo, hi, watermark, rows_written, keys_scanned, batches, retries, throttled_seconds, seconds,"
    " status, data_errors"
)


@dataclass
class PartitionProgress:
    """Counters of one partition, as stored in its checkpoint row.

    ``retries`` are transient yields (lock waits, deadlocks, lost connections retried):
    how the backfill gives way to the application, not errors. ``data_errors`` are
    batches that failed on data (constraint, foreign key, conversion): those count
    against the error rate.
    """

    partition_no: int
    lo: int
    hi: int
    watermark: int
    rows_written: int = 0
    keys_scanned: int = 0
    batches: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0
    seconds: float = 0.0
    status: str = "pending"
    data_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_row(cls, r: tuple) -> "PartitionProgress":
        return cls(
            partition_no=r[0], lo=r[1], hi=r[2], watermark=r[3], rows_written=r[4], keys_scanned=r[5],
            batches=r[6], retries=r[7], throttled_seconds=float(r[8]), seconds=float(r[9]), status=r[10],
            data_errors=r[11],
        )


class CheckpointStore:
    """Reads and writes ``zdt_backfill_checkpoints`` through a :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        d = db.dialect
        self.checkpoints = d.table(CHECKPOINTS, db.schema)
        self._now = d.now

    # ------------------------------------------------------------------ DDL
    def create_tables(self, conn: Any) -> None:
        """Create the checkpoint table if absent (idempotent).

        :raises PreflightError: a checkpoint table of an older layout exists.
        """
        cols = {r[0] for r in self.db.query(conn, self.db.dialect.columns_sql(), (self.db.schema, CHECKPOINTS))}
        if cols and "data_errors" not in cols:
            raise PreflightError(
                f"{CHECKPOINTS} has the layout of an older version of this package; when no backfill is running, "
                "drop it and zdt_backfill_runs"
            )
        self.db.execute(conn, self.db.dialect.control_table_sql(CHECKPOINTS, self.db.schema))
        conn.commit()

    def tables_exist(self, conn: Any) -> bool:
        return bool(self.db.query(conn, self.db.dialect.columns_sql(), (self.db.schema, CHECKPOINTS)))

    # ------------------------------------------------------------------ plan
    def adopt(self, conn: Any, from_run: str, to_run: str) -> list[dict[str, Any]]:
        """Give ``to_run`` the checkpoints of ``from_run`` (a takeover), unless it has its own.
        Runs inside the caller's transaction; returns the adopted partitions' progress."""
        if not self.tables_exist(conn) or self.progress(conn, to_run):
            return []
        self.db.execute(
            conn,
            f"INSERT INTO {self.checkpoints} (run_id, {_COLUMNS}, started_at, updated_at)"
            f" SELECT %s, {_COLUMNS}, started_at, updated_at FROM {self.checkpoints} WHERE run_id = %s",
            (to_run, from_run),
        )
        return [p.to_dict() for p in self.progress(conn, to_run)]

    def forget(self, conn: Any, run_id: str) -> None:
        """Drop a run's checkpoints (the run is started again from scratch), in the caller's transaction."""
        if self.tables_exist(conn):
            self.db.execute(conn, f"DELETE FROM {self.checkpoints} WHERE run_id = %s", (run_id,))

    # ------------------------------------------------------------------ checkpoints
    def watermark(self, conn: Any, run_id: str, partition_no: int) -> int:
        """The committed watermark of a partition."""
        rows = self.db.query(
            conn, f"SELECT watermark FROM {self.checkpoints} WHERE run_id = %s AND partition_no = %s",
            (run_id, partition_no),
        )
        conn.rollback()
        return int(rows[0][0])

    def open_partition(self, conn: Any, run_id: str, partition_no: int, lo: int, hi: int) -> PartitionProgress:
        """Return the partition's checkpoint, creating it (watermark ``lo - 1``) if new.

        :raises CheckpointConflictError: the partition was checkpointed with other bounds.
        """
        sql = f"SELECT {_COLUMNS} FROM {self.checkpoints} WHERE run_id = %s AND partition_no = %s"
        rows = self.db.query(conn, sql, (run_id, partition_no))
        if not rows:
            self.db.execute(
                conn,
                f"INSERT INTO {self.checkpoints} (run_id, partition_no, lo, hi, watermark, status, started_at, updated_at)"
                f" VALUES (%s, %s, %s, %s, %s, 'pending', {self._now}, {self._now})",
                (run_id, partition_no, lo, hi, lo - 1),
            )
            rows = self.db.query(conn, sql, (run_id, partition_no))
        conn.commit()
        p = PartitionProgress.from_row(rows[0])
        if (p.lo, p.hi) != (lo, hi):
            raise CheckpointConflictError(
                f"partition {partition_no} of run {run_id!r} was checkpointed as [{p.lo}..{p.hi}], not [{lo}..{hi}]"
            )
        return p

    def advance(
        self, conn: Any, run_id: str, partition_no: int, old: int, new: int, rows: int, keys: int,
        guard: tuple[str, tuple],
    ) -> None:
        """Move a partition's watermark ``old -> new`` inside the caller's batch transaction.

        The update is guarded on the old watermark and on ``guard`` (the run still holds its
        lock in the expected state), so two workers cannot both commit the same chunk and a
        stopped or superseded run stops.

        :raises RunStoppedError: the guard no longer holds (stopped, halted, taken over).
        :raises CheckpointConflictError: the watermark moved under us.
        """
        guard_sql, guard_params = guard
        n = self.db.execute(
            conn,
            self.advance_sql("%s", "%s", "%s", "%s", "%s", "%s", guard_sql),
            (new, rows, keys, run_id, partition_no, old, *guard_params),
        )
        if n == 1:
            return
        self.advance_failed(conn, run_id, partition_no, old, guard)

    def advance_sql(self, new: str, rows: str, keys: str, run_id: str, partition_no: str, old: str,
                    guard_sql: str, extra_where: str = "") -> str:
        """The guarded checkpoint UPDATE of :meth:`advance`, each value an SQL expression or
        placeholder (the fused batch statement of :meth:`~zdt_backfill.dialects.Dialect.fused_copy_batch_sql`
        writes its own chunk end and row count in)."""
        return (
            f"UPDATE {self.checkpoints} SET watermark = {new}, rows_written = rows_written + {rows},"
            f" keys_scanned = keys_scanned + {keys}, batches = batches + 1, status = 'copying',"
            f" updated_at = {self._now} WHERE {extra_where}run_id = {run_id} AND partition_no = {partition_no}"
            f" AND watermark = {old} AND {guard_sql}"
        )

    def advance_failed(self, conn: Any, run_id: str, partition_no: int, old: int, guard: tuple[str, tuple]) -> None:
        """The checkpoint UPDATE matched no row: roll the batch back and say why.

        :raises RunStoppedError: the guard no longer holds (stopped, halted, taken over).
        :raises CheckpointConflictError: the watermark moved under us.
        """
        guard_sql, guard_params = guard
        conn.rollback()
        still = self.db.query(conn, f"SELECT {guard_sql}", guard_params)[0][0]
        conn.rollback()
        if not still:
            raise RunStoppedError(f"run {run_id!r} no longer holds the backfill lock in a state that copies")
        raise CheckpointConflictError(f"partition {partition_no}: watermark is no longer {old}; another worker copies it")

    def add_counters(self, conn: Any, run_id: str, partition_no: int, **counters: float) -> None:
        """Add to a partition's ``retries``, ``throttled_seconds``, ``seconds`` or ``data_errors`` and commit."""
        sets = ", ".join(f"{name} = {name} + %s" for name in counters)
        self.db.execute(
            conn,
            f"UPDATE {self.checkpoints} SET {sets} WHERE run_id = %s AND partition_no = %s",
            (*counters.values(), run_id, partition_no),
        )
        conn.commit()

    def finish_partition(self, conn: Any, run_id: str, partition_no: int, status: str = "done") -> None:
        self.db.execute(
            conn,
            f"UPDATE {self.checkpoints} SET status = %s, updated_at = {self._now} WHERE run_id = %s AND partition_no = %s",
            (status, run_id, partition_no),
        )
        conn.commit()

    def span_seconds(self, conn: Any, run_id: str) -> float:
        """Seconds from the first partition's start to the last checkpoint update of a run."""
        if not self.tables_exist(conn):
            return 0.0
        rows = self.db.query(
            conn, f"SELECT min(started_at), max(updated_at) FROM {self.checkpoints} WHERE run_id = %s", (run_id,)
        )
        first, last = rows[0] if rows else (None, None)
        return (last - first).total_seconds() if first and last else 0.0

    def progress(self, conn: Any, run_id: str) -> list[PartitionProgress]:
        """All partitions' checkpoints of a run, in partition order."""
        if not self.tables_exist(conn):
            return []
        rows = self.db.query(
            conn, f"SELECT {_COLUMNS} FROM {self.checkpoints} WHERE run_id = %s ORDER BY partition_no", (run_id,)
        )
        return [PartitionProgress.from_row(r) for r in rows]
