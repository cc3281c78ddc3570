"""The checkpoint, run-lock and routing-flag tables, kept in the target database.

``zdt_backfill_runs``        one row per target table: which run holds the backfill
                             lock and in which state (the "backfill already running"
                             guard, and the stop signal partitions obey).
``zdt_backfill_checkpoints`` one row per (run, partition): the watermark (last key
                             copied) and counters. A batch's writes and its checkpoint
                             update commit in one transaction, so a retried or
                             restarted partition resumes exactly where it stopped.
``zdt_routing_flags``        the routing flag contract/rollback flips (a flag-store
                             interface with other backends comes later).

These tables are created only after pre-flight has passed, so a run refused for bad
input leaves the database as it found it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .db import Database
from .errors import CheckpointConflictError, ConcurrentRunError, RunStoppedError

RUNS = "zdt_backfill_runs"
CHECKPOINTS = "zdt_backfill_checkpoints"
FLAGS = "zdt_routing_flags"

RUNNING = "running"
#: Run states that tell running partitions to stop at their next batch.
STOP_STATES = ("rolling_back", "rolled_back", "contracted", "stopped")


@dataclass
class PartitionProgress:
    """Counters of one partition, as stored in its checkpoint row."""

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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class CheckpointStore:
    """Reads and writes the control tables through a :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        d = db.dialect
        self.runs = d.table(RUNS, db.schema)
        self.checkpoints = d.table(CHECKPOINTS, db.schema)
        self.flags = d.table(FLAGS, db.schema)
        self._ts = d.timestamp_type
        self._now = d.now

    # ------------------------------------------------------------------ DDL
    def create_tables(self, conn: Any) -> None:
        """Create the control tables if absent (idempotent)."""
        ts = self._ts
        for sql in (
            f"CREATE TABLE IF NOT EXISTS {self.runs} (lock_key varchar(200) PRIMARY KEY,"
            f" run_id varchar(250) NOT NULL, state varchar(32) NOT NULL, started_at {ts} NULL,"
            f" updated_at {ts} NULL, config text)",
            f"CREATE TABLE IF NOT EXISTS {self.checkpoints} (run_id varchar(250) NOT NULL,"
            " partition_no int NOT NULL, lo bigint NOT NULL, hi bigint NOT NULL, watermark bigint NOT NULL,"
            " rows_written bigint NOT NULL DEFAULT 0, keys_scanned bigint NOT NULL DEFAULT 0,"
            " batches int NOT NULL DEFAULT 0, retries int NOT NULL DEFAULT 0,"
            " throttled_seconds double precision NOT NULL DEFAULT 0, seconds double precision NOT NULL DEFAULT 0,"
            f" status varchar(16) NOT NULL, started_at {ts} NULL, updated_at {ts} NULL,"
            " PRIMARY KEY (run_id, partition_no))",
            f"CREATE TABLE IF NOT EXISTS {self.flags} (flag varchar(128) PRIMARY KEY,"
            f" value varchar(64) NOT NULL, run_id varchar(250), updated_at {ts} NULL)",
        ):
            self.db.execute(conn, sql)
        conn.commit()

    def tables_exist(self, conn: Any) -> bool:
        rows = self.db.query(conn, self.db.dialect.columns_sql(), (self.db.schema, RUNS))
        return bool(rows)

    # ------------------------------------------------------------------ run lock
    def acquire(self, conn: Any, lock_key: str, run_id: str, config: dict[str, Any]) -> None:
        """Take the backfill lock on a target table for ``run_id`` (re-entrant).

        :raises ConcurrentRunError: another run holds it in state ``running``.
        """
        rows = self.db.query(conn, f"SELECT run_id, state FROM {self.runs} WHERE lock_key = %s FOR UPDATE", (lock_key,))
        if rows and rows[0][1] == RUNNING and rows[0][0] != run_id:
            conn.rollback()
            raise ConcurrentRunError(
                f"a backfill is already running on {lock_key}: run {rows[0][0]!r} holds the lock. "
                f"Wait for it, or if it died, mark it stopped: UPDATE {RUNS} SET state = 'stopped' "
                f"WHERE lock_key = '{lock_key}'"
            )
        payload = json.dumps(config, default=str)
        if rows:
            self.db.execute(
                conn,
                f"UPDATE {self.runs} SET run_id = %s, state = %s, started_at = {self._now},"
                f" updated_at = {self._now}, config = %s WHERE lock_key = %s",
                (run_id, RUNNING, payload, lock_key),
            )
        else:
            self.db.execute(
                conn,
                f"INSERT INTO {self.runs} (lock_key, run_id, state, started_at, updated_at, config)"
                f" VALUES (%s, %s, %s, {self._now}, {self._now}, %s)",
                (lock_key, run_id, RUNNING, payload),
            )
        conn.commit()

    def watermark(self, conn: Any, run_id: str, partition_no: int) -> int:
        """The committed watermark of a partition."""
        rows = self.db.query(
            conn, f"SELECT watermark FROM {self.checkpoints} WHERE run_id = %s AND partition_no = %s",
            (run_id, partition_no),
        )
        conn.rollback()
        return int(rows[0][0])

    def set_state(self, conn: Any, lock_key: str, run_id: str, state: str) -> bool:
        """Set the state of the lock row if ``run_id`` holds it; return whether it did."""
        n = self.db.execute(
            conn,
            f"UPDATE {self.runs} SET state = %s, updated_at = {self._now} WHERE lock_key = %s AND run_id = %s",
            (state, lock_key, run_id),
        )
        conn.commit()
        return n > 0

    def state(self, conn: Any, lock_key: str) -> tuple[str, str] | None:
        """``(run_id, state)`` of the lock row, or ``None``."""
        if not self.tables_exist(conn):
            return None
        rows = self.db.query(conn, f"SELECT run_id, state FROM {self.runs} WHERE lock_key = %s", (lock_key,))
        return (rows[0][0], rows[0][1]) if rows else None

    # ------------------------------------------------------------------ checkpoints
    def open_partition(self, conn: Any, run_id: str, partition_no: int, lo: int, hi: int) -> PartitionProgress:
        """Return the partition's checkpoint, creating it (watermark ``lo - 1``) if new.

        :raises CheckpointConflictError: the partition was checkpointed with other bounds.
        """
        cols = "partition_no, lo, hi, watermark, rows_written, keys_scanned, batches, retries, throttled_seconds, seconds, status"
        sql = f"SELECT {cols} FROM {self.checkpoints} WHERE run_id = %s AND partition_no = %s"
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
        r = rows[0]
        if (r[1], r[2]) != (lo, hi):
            raise CheckpointConflictError(
                f"partition {partition_no} of run {run_id!r} was checkpointed as [{r[1]}..{r[2]}], not [{lo}..{hi}]"
            )
        return PartitionProgress(
            partition_no=r[0], lo=r[1], hi=r[2], watermark=r[3], rows_written=r[4], keys_scanned=r[5],
            batches=r[6], retries=r[7], throttled_seconds=float(r[8]), seconds=float(r[9]), status=r[10],
        )

    def advance(
        self, conn: Any, run_id: str, lock_key: str, partition_no: int, old: int, new: int, rows: int, keys: int
    ) -> None:
        """Move a partition's watermark ``old -> new`` inside the caller's batch transaction.

        The update is guarded on the old watermark and on the run still holding the
        lock in state ``running``, so two workers cannot both commit the same chunk and
        a stopped run stops.

        :raises RunStoppedError: the run was stopped or another run took the lock.
        :raises CheckpointConflictError: the watermark moved under us.
        """
        n = self.db.execute(
            conn,
            f"UPDATE {self.checkpoints} SET watermark = %s, rows_written = rows_written + %s,"
            f" keys_scanned = keys_scanned + %s, batches = batches + 1, status = 'copying',"
            f" updated_at = {self._now} WHERE run_id = %s AND partition_no = %s AND watermark = %s"
            f" AND EXISTS (SELECT 1 FROM {self.runs} WHERE lock_key = %s AND run_id = %s AND state = %s)",
            (new, rows, keys, run_id, partition_no, old, lock_key, run_id, RUNNING),
        )
        if n == 1:
            return
        conn.rollback()
        st = self.state(conn, lock_key)
        if st is None or st[0] != run_id or st[1] != RUNNING:
            raise RunStoppedError(f"run {run_id!r} no longer holds the backfill lock on {lock_key} (now {st})")
        raise CheckpointConflictError(f"partition {partition_no}: watermark is no longer {old}; another worker copies it")

    def add_counters(self, conn: Any, run_id: str, partition_no: int, **counters: float) -> None:
        """Add to a partition's ``retries``, ``throttled_seconds`` or ``seconds`` and commit."""
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
        """Seconds from the first partition's start to the last checkpoint update of a run.

        Partitions may run in parallel or one after another; this is the backfill's
        own wall time either way.
        """
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
            conn,
            "SELECT partition_no, lo, hi, watermark, rows_written, keys_scanned, batches, retries,"
            f" throttled_seconds, seconds, status FROM {self.checkpoints} WHERE run_id = %s ORDER BY partition_no",
            (run_id,),
        )
        return [
            PartitionProgress(
                partition_no=r[0], lo=r[1], hi=r[2], watermark=r[3], rows_written=r[4], keys_scanned=r[5],
                batches=r[6], retries=r[7], throttled_seconds=float(r[8]), seconds=float(r[9]), status=r[10],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ routing flags
    def set_flag(self, conn: Any, flag: str, value: str, run_id: str) -> None:
        """Upsert a routing flag (``legacy`` or ``new``) and commit."""
        n = self.db.execute(
            conn,
            f"UPDATE {self.flags} SET value = %s, run_id = %s, updated_at = {self._now} WHERE flag = %s",
            (value, run_id, flag),
        )
        if n == 0 and not self.db.query(conn, f"SELECT 1 FROM {self.flags} WHERE flag = %s", (flag,)):
            self.db.execute(
                conn,
                f"INSERT INTO {self.flags} (flag, value, run_id, updated_at) VALUES (%s, %s, %s, {self._now})",
                (flag, value, run_id),
            )
        conn.commit()

    def get_flag(self, conn: Any, flag: str) -> str | None:
        if not self.tables_exist(conn):
            return None
        rows = self.db.query(conn, f"SELECT value FROM {self.flags} WHERE flag = %s", (flag,))
        return rows[0][0] if rows else None
