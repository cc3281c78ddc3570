"""The run's state, kept in the target database: the one module that owns it.

gh-ost's ``Migrator`` and Spirit's migration runner keep a migration's state and its
transitions in one place; here that place is two tables beside the target, so every
worker, every retry and every later run reads the truth from the database, never from
an XCom written by an earlier attempt:

``zdt_backfill_runs``    one row per target table, keyed by ``<schema>.<table>`` with the
                         schema resolved (``null`` and ``"public"`` name the same lock): the
                         run holding it, its state and the reason, a **lease** (owner task,
                         heartbeat, expiry), the sequences recorded at pre-flight, the config.
``zdt_backfill_events``  append-only: every transition, validation result, destructive
                         statement, approval, takeover and compatibility-window boundary, each
                         with the database's time.

The partition plan and watermarks live in ``zdt_backfill_checkpoints``
(:mod:`zdt_backfill.state.checkpoint`), written in each batch's own transaction.

**The state machine** (the steps table :data:`STEPS` of :mod:`zdt_backfill.state.steps`, and
:data:`TRANSITIONS` derived from it)::

    planned -> copying <-> holding -> catching_up -> validating <-> repairing
    validating -> awaiting_approval | contracting | rolling_back | holding
    awaiting_approval -> contracting -> contracted
                      -> rolling_back -> rolled_back
    any live state -> halted (fails visibly, keeps the copy and its checkpoints)

Health signals move a run to ``holding`` (with a deadline) or ``halted``; they never lead
to a destructive state. Every transition is checked against the table *in the database*,
inside the transaction that makes it, and recorded with its reason.

**The lease.** A run holds the table through a lease renewed at least every
:data:`HEARTBEAT_SECONDS` by every active task (:class:`~zdt_backfill.state.lease.LeaseKeeper`), expiring
:data:`LEASE_SECONDS` after the last renewal; a run waiting for a human or a soak sets its
expiry to that wait's deadline. A new run never takes a live lease; it takes over an
expired one (a worker died) or a halted run's, logs the old run and resumes its
checkpoints. A batch commits only while its run holds the lock in the right state (the
checkpoint update is guarded on it), so a run that lost its lease cannot write.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from ..config import RunConfig
from ..db import Database
from ..dialects.schema import EVENTS, RUNS
from ..errors import ConcurrentRunError, PreflightError, RunStoppedError
from .steps import (  # noqa: F401 - re-exported: the state machine's names live in steps.py
    AWAITING_APPROVAL,
    CATCHING_UP,
    CONTRACTED,
    CONTRACTING,
    COPYING,
    HALTED,
    HOLDING,
    LIVE,
    PLANNED,
    POST_FLIP,
    REPAIRING,
    ROLLED_BACK,
    ROLLING_BACK,
    SOAKING,
    STATES,
    STEPS,
    TERMINAL,
    TRANSITIONS,
    VALIDATING,
    InvalidTransitionError,
    PostFlipError,
    Step,
    post_flip_refusal,
)

log = logging.getLogger(__name__)

#: A run's fence bound to its states: called with a connection inside the write transaction it
#: guards (:meth:`RunHandle.fencer`).
Fence = Callable[[Any], None]


#: A lease expires this long after its last renewal (s): a worker that died frees the
#: table after at most this long (plus the renewal interval).
LEASE_SECONDS = 60.0
#: Every active task renews the lease at least this often (s).
HEARTBEAT_SECONDS = 10.0
#: Extra lease time (s) added to a wait's own deadline (approval, soak, catch-up).
WAIT_LEASE_MARGIN_SECONDS = 300.0

#: Destructive steps after which an earlier validation no longer describes the target.
INVALIDATING_STEPS = ("repair", "truncate", "nullify")

#: Compatibility windows of the seed (Pre-Backfill, Active Backfill, Post-Backfill).
WINDOWS = ("pre_backfill", "active_backfill", "post_backfill")




@dataclass(frozen=True)
class RunRow:
    """The lock row of a target table, as read from ``zdt_backfill_runs``."""

    lock_key: str
    run_id: str
    state: str
    reason: str | None
    owner: str | None
    lease_live: bool
    config: dict[str, Any]
    sequences: dict[str, Any]


@dataclass(frozen=True)
class Event:
    id: int
    run_id: str
    at: datetime
    kind: str
    state_from: str | None
    state_to: str | None
    reason: str | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["at"] = self.at.isoformat() if self.at else None
        return d


class RunStateStore:
    """DDL and lookups of the run-state tables (created after pre-flight passes)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        d = db.dialect
        self.runs = d.table(RUNS, db.schema)
        self.events = d.table(EVENTS, db.schema)

    def create_tables(self, conn: Any) -> None:
        """Create the run-state tables if absent (idempotent).

        :raises PreflightError: a ``zdt_backfill_runs`` table of an older layout exists.
        """
        d = self.db.dialect
        cols = {r[0] for r in self.db.query(conn, d.columns_sql(), (self.db.schema, RUNS))}
        if cols and "control" not in cols:
            raise PreflightError(
                f"{RUNS} has the layout of an older version of this package; when no backfill is running, "
                f"drop it and zdt_backfill_checkpoints (they only hold that version's run state)"
            )
        for name in (RUNS, EVENTS):
            sql = d.control_table_sql(name, self.db.schema)
            self.db.execute(conn, sql)
        conn.commit()
        for column, definition in d.added_columns(RUNS).items():  # a table made by an earlier version
            if cols and column not in {c.lower() for c in cols}:
                self.db.run_ddl([(d.add_column_sql(RUNS, column, definition, self.db.schema), ())],
                                tag="zdt_backfill:schema")

    def tables_exist(self, conn: Any) -> bool:
        return bool(self.db.query(conn, self.db.dialect.columns_sql(), (self.db.schema, RUNS)))

    def lock_key(self, conn: Any, config: RunConfig) -> str:
        """``<schema>.<target table>``, the schema resolved in the database, so a conf with
        ``schema: null`` and one naming the default schema take the same lock."""
        return f"{self.db.resolved_schema(conn)}.{config.target_table}"

    def read(self, conn: Any, lock_key: str, for_update: bool = False) -> RunRow | None:
        if not self.tables_exist(conn):
            return None
        now = self.db.dialect.now
        rows = self.db.query(
            conn,
            f"SELECT lock_key, run_id, state, reason, owner, CASE WHEN lease_expires_at IS NOT NULL AND"
            f" lease_expires_at > {now} THEN 1 ELSE 0 END, config, sequences FROM {self.runs} WHERE lock_key = %s"
            + (" FOR UPDATE" if for_update else ""),
            (lock_key,),
        )
        if not rows:
            return None
        r = rows[0]
        return RunRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), json.loads(r[6] or "{}"), json.loads(r[7] or "{}"))


class RunHandle:
    """One run's view of its lock row: transitions, lease, events.

    :param db: the database holding the target.
    :param config: the run.
    :param owner: who acts (``task_id[map_index]``), recorded with the lease.
    """

    def __init__(self, db: Database, config: RunConfig, owner: str = "engine") -> None:
        self.db = db
        self.config = config
        self.run_id = config.run_id
        self.owner = owner[:250]
        self.store = RunStateStore(db)
        self._lock_key: str | None = None
        self._control_conn: Any = None
        self._control_key = ""

    # ------------------------------------------------------------------ identity
    def lock_key(self, conn: Any | None = None) -> str:
        if self._lock_key is None:
            if conn is None:
                with self.db.session() as c:
                    self._lock_key = self.store.lock_key(c, self.config)
            else:
                self._lock_key = self.store.lock_key(conn, self.config)
        return self._lock_key

    def row(self) -> RunRow | None:
        with self.db.session() as conn:
            return self.store.read(conn, self.lock_key(conn))

    def guard(self, states: tuple[str, ...]) -> tuple[str, tuple]:
        """SQL predicate (and params) true while this run holds the lock in one of ``states``:
        the fencing condition a batch's checkpoint update commits under."""
        marks = ", ".join(["%s"] * len(states))
        return (
            f"EXISTS (SELECT 1 FROM {self.store.runs} WHERE lock_key = %s AND run_id = %s AND state IN ({marks}))",
            (self.lock_key(), self.run_id, *states),
        )

    def fence_states(self, step: str) -> tuple[str, ...]:
        """The states in which ``step``'s writes may commit: the state it enters, or (a step that
        enters none, such as ``legacy_action``) the states it starts from."""
        s = STEPS[step]
        return (s.enters,) if s.enters else tuple(sorted(s.starts_from))

    def fence(self, conn: Any, states: tuple[str, ...] | None = None) -> None:
        """Take the run's fence in ``conn``'s open transaction, before its first write.

        ``SELECT ... FOR KEY SHARE`` (PostgreSQL) / ``LOCK IN SHARE MODE`` (MySQL) of this run's
        row of ``zdt_backfill_runs`` (:attr:`~zdt_backfill.dialects.base.DialectBase.fence_lock`),
        requiring that this run holds the lock in one of ``states`` (``None``: in any state).
        The lock is held to the transaction's end: a takeover, a stop, a halt or any other state
        change reads the row ``FOR UPDATE`` first and so waits until the write transaction has
        committed or rolled back; a write transaction that starts after such a change sees it
        (a locking read reads the latest committed row, not the transaction's snapshot) and
        writes nothing. The fencing token of Kleppmann's "How to do distributed locking"
        (2016), made a database row lock.

        DDL that commits by itself (MySQL's, PostgreSQL's ``VACUUM``) cannot stay under the
        fence: for those it is a check right before the statement.

        :raises RunStoppedError: this run no longer holds the lock in one of ``states`` (the
            transaction is rolled back; nothing was written).
        """
        sql, params = self.fence_sql(states)
        if not self.db.query(conn, sql, params):
            conn.rollback()
            raise self.fence_lost(states, "its write was not made")

    def fence_lost(self, states: tuple[str, ...] | None, what: str) -> RunStoppedError:
        """The error of a write refused by the fence (:meth:`fence`, or the fused batch's own
        read of it): the run, the table, the states it had to be in, and ``what`` was not done."""
        where = f" in state {'/'.join(states)}" if states else ""
        return RunStoppedError(f"run {self.run_id!r} no longer holds the backfill lock of {self.config.target_table}"
                               f"{where} (stopped, halted, moved on or taken over): {what}")

    def fence_sql(self, states: tuple[str, ...] | None = None, named: bool = False) -> tuple[str, Any]:
        """The fence's locking read (see :meth:`fence`) and its params; ``named``: with
        ``%(fence_N)s`` placeholders and a params dict, to embed in a statement of named params
        (the fused batch)."""
        params: tuple = (self.lock_key(), self.run_id, *(states or ()))
        marks = [f"%(fence_{i})s" if named else "%s" for i in range(len(params))]
        in_states = f" AND state IN ({', '.join(marks[2:])})" if states else ""
        sql = (f"SELECT run_id FROM {self.store.runs} WHERE lock_key = {marks[0]} AND run_id = {marks[1]}{in_states}"
               f" {self.db.dialect.fence_lock}")
        if named:
            return sql, {f"fence_{i}": v for i, v in enumerate(params)}
        return sql, params

    def fencer(self, states: tuple[str, ...] | None = None) -> "Fence":
        """:meth:`fence` bound to ``states``: a callable of a connection, for the writers that
        take one (:meth:`~zdt_backfill.db.Database.run_ddl`, the repair, the flag store)."""
        return lambda conn: self.fence(conn, states)

    # ------------------------------------------------------------------ lock
    def acquire(self, conn: Any, sequences: dict[str, Any]) -> dict[str, Any]:
        """Take the lock for this run, in pre-flight, after every check passed.

        - no row, or the table's last run ended (contracted / rolled back): a fresh run;
        - this run already holds it (a cleared pre-flight): kept as is, unless this run had
          ended, in which case its checkpoints are dropped and it starts afresh;
        - another run's live lease: refused;
        - another run's expired lease, or a halted run: taken over; its checkpoints are
          adopted (logged), so the copy resumes where it stopped.

        :param sequences: the target's sequences / AUTO_INCREMENT now, restored by rollback.
        :returns: ``{"mode": "fresh" | "reentrant" | "restart" | "takeover", "previous_run": ...}``.
        :raises ConcurrentRunError: another run holds a live lease, or a halted run with a
            different table, key or columns holds the table.
        """
        from .checkpoint import CheckpointStore

        key = self.lock_key(conn)
        d = self.db.dialect
        row = self.store.read(conn, key, for_update=True)
        cfg = json.dumps(self.config.to_dict(), default=str)
        seqs = json.dumps(sequences, default=str)
        checkpoints = CheckpointStore(self.db)
        result: dict[str, Any] = {"mode": "fresh", "previous_run": None}
        if row is None:
            self.db.execute(
                conn,
                f"INSERT INTO {self.store.runs} (lock_key, run_id, state, reason, owner, heartbeat_at,"
                f" lease_expires_at, started_at, updated_at, config, sequences) VALUES (%s, %s, %s, %s, %s, {d.now},"
                f" {d.now_plus()}, {d.now}, {d.now}, %s, %s)",
                (key, self.run_id, PLANNED, "pre-flight passed", self.owner, LEASE_SECONDS, cfg, seqs),
            )
        else:
            if row.state in POST_FLIP and row.run_id != self.run_id:
                conn.rollback()
                raise PostFlipError(post_flip_refusal(f"a new run on {key}", f"run {row.run_id!r} is {row.state}"))
            if row.run_id == self.run_id and row.state not in TERMINAL:
                result["mode"] = "reentrant"
            elif row.run_id != self.run_id and row.state not in TERMINAL and row.lease_live:
                conn.rollback()
                raise ConcurrentRunError(
                    f"a backfill is running on {key}: run {row.run_id!r} holds a live lease (state {row.state}, "
                    f"owner {row.owner}). It is never taken over while its lease is renewed; if its workers died, "
                    f"the lease expires within {LEASE_SECONDS:.0f}s of the last heartbeat and a new run takes over"
                )
            elif row.run_id != self.run_id and row.state not in TERMINAL:
                old = row.config
                same = all(old.get(f) == getattr(self.config, f) for f in ("source_table", "key", "columns", "mode"))
                if not same:
                    conn.rollback()
                    raise ConcurrentRunError(
                        f"run {row.run_id!r} stopped on {key} in state {row.state} with another source, key or "
                        f"columns ({ {f: old.get(f) for f in ('source_table', 'key', 'columns', 'mode')} }): resume it "
                        "with the same conf, or roll it back, before starting a different backfill"
                    )
                result = {"mode": "takeover", "previous_run": row.run_id, "previous_state": row.state}
                emptied = self._emptied(conn, key, row.run_id)
                # a target truncated or nullified since its copy is not where its checkpoints say
                adopted = [] if emptied else checkpoints.adopt(conn, row.run_id, self.run_id)
                if emptied:
                    result["not_adopted"] = f"run {row.run_id!r} emptied the target ({emptied}): copied afresh"
                result["adopted_partitions"] = adopted
                log.warning(
                    "taking over %s from run %s (state %s, lease expired or released): adopting its %d partition "
                    "checkpoint(s) and resuming them", key, row.run_id, row.state, len(adopted),
                )
            else:  # the table's last run ended, or this run ended and is run again
                if row.run_id == self.run_id:
                    checkpoints.forget(conn, self.run_id)
                    result["mode"] = "restart"
                result["previous_run"] = row.run_id
            keep_sequences = result["mode"] in ("reentrant", "takeover")
            self.db.execute(
                conn,
                f"UPDATE {self.store.runs} SET run_id = %s, state = %s, reason = %s, owner = %s, heartbeat_at = {d.now},"
                f" lease_expires_at = {d.now_plus()}, updated_at = {d.now}, config = %s"
                + ("" if keep_sequences else f", started_at = {d.now}, sequences = %s")
                + " WHERE lock_key = %s",
                (self.run_id, PLANNED if result["mode"] != "reentrant" else row.state, "pre-flight passed",
                 self.owner, LEASE_SECONDS, cfg, *(() if keep_sequences else (seqs,)), key),
            )
        self._event(conn, "lock", None, PLANNED, f"lock taken ({result['mode']})", result)
        if result["mode"] != "reentrant":
            self._event(conn, "transition", row.state if row and row.run_id == self.run_id else None, PLANNED,
                        f"pre-flight passed; lock taken ({result['mode']})")
        if result["mode"] in ("fresh", "restart", "takeover"):
            self._event(conn, "window", None, None, "pre_backfill starts", {"window": "pre_backfill", "edge": "start"})
        conn.commit()
        return result

    def _emptied(self, conn: Any, key: str, run_id: str) -> str | None:
        """The step (``truncate`` / ``nullify``) by which ``run_id`` emptied the target, if it did."""
        rows = self.db.query(conn, f"SELECT detail FROM {self.store.events} WHERE lock_key = %s AND run_id = %s"
                                   " AND kind = 'destructive'", (key, run_id))
        for (detail,) in rows:
            step = json.loads(detail or "{}").get("step")
            if step in ("truncate", "nullify"):
                return step
        return None

    def release(self, final_state: str | None = None, reason: str = "") -> RunRow | None:
        """End this run's hold on the lease (the report teardown). A run not in a terminal
        state moves to ``halted`` with ``reason``: it keeps its copy and checkpoints, and the
        next run takes over and resumes. Returns the row afterwards (``None`` if not held)."""
        with self.db.session() as conn:
            row = self.store.read(conn, self.lock_key(conn), for_update=True)
            if row is None or row.run_id != self.run_id:
                conn.rollback()
                return row
            state = row.state
            if state in POST_FLIP:  # the one-way door: never halted; only the contract's steps move it
                final_state = None
            elif final_state is None and state not in TERMINAL and state != HALTED:
                final_state = HALTED
            if final_state and final_state != state:
                self._check(state, final_state)
                self._event(conn, "transition", state, final_state, reason)
                log.warning("run %s: %s -> %s (%s)", self.run_id, state, final_state, reason)
                state = final_state
            self.db.execute(
                conn,
                f"UPDATE {self.store.runs} SET state = %s, reason = coalesce(%s, reason), lease_expires_at = NULL,"
                f" owner = NULL, updated_at = {self.db.dialect.now} WHERE lock_key = %s AND run_id = %s",
                (state, reason or None if final_state else None, row.lock_key, self.run_id),
            )
            conn.commit()
            return self.store.read(conn, row.lock_key)

    # ------------------------------------------------------------------ transitions
    @staticmethod
    def _check(current: str, to: str) -> None:
        if to != current and to not in TRANSITIONS.get(current, frozenset()):
            raise InvalidTransitionError(
                f"the run is {current}; it cannot go to {to}"
                + (" (the run has ended: start a new run)" if current in TERMINAL else "")
            )

    def step(self, name: str, reason: str, *, lease_seconds: float | None = None,
             detail: dict[str, Any] | None = None) -> str:
        """Start step ``name`` of :data:`STEPS`: the run's state in the database must be one the
        step starts from, and it moves to the state the step enters (a step that enters none is
        only checked), in one transaction, recorded with ``reason``.

        :param lease_seconds: the lease's new expiry from now (s), e.g. a wait's deadline;
            :data:`LEASE_SECONDS` when ``None``.
        :returns: the state before.
        :raises KeyError: not a step of the table.
        :raises RunStoppedError: this run does not hold the lock (another run took it over).
        :raises InvalidTransitionError: the step may not start from the run's state.
        """
        s = STEPS[name]
        return self._move(s.enters, reason, s.starts_from, name, lease_seconds, detail)

    def transition(self, to: str, reason: str, *, lease_seconds: float | None = None,
                   detail: dict[str, Any] | None = None) -> str:
        """Move the run to state ``to`` (:data:`TRANSITIONS`), checked and recorded in one
        transaction; steps go through :meth:`step`.

        :param lease_seconds: the lease's new expiry from now (s), e.g. a wait's deadline;
            :data:`LEASE_SECONDS` when ``None``.
        :returns: the state before.
        :raises RunStoppedError: this run does not hold the lock (another run took it over).
        :raises InvalidTransitionError: the current state does not allow ``to``.
        """
        return self._move(to, reason, None, to, lease_seconds, detail)

    def _move(self, to: str | None, reason: str, starts_from: frozenset[str] | None, what: str,
              lease_seconds: float | None, detail: dict[str, Any] | None) -> str:
        d = self.db.dialect
        with self.db.session() as conn:
            row = self.store.read(conn, self.lock_key(conn), for_update=True)
            if row is None or row.run_id != self.run_id:
                conn.rollback()
                raise RunStoppedError(
                    f"run {self.run_id!r} does not hold the backfill lock on {self.lock_key()} "
                    f"(held by {row.run_id if row else 'nobody'!r}, state {row.state if row else None}): refusing to {what}"
                )
            if starts_from is not None and row.state not in starts_from:
                conn.rollback()
                if row.state in POST_FLIP:
                    raise PostFlipError(post_flip_refusal(what, row.reason))
                raise InvalidTransitionError(
                    f"the run is {row.state}; {what} needs one of {tuple(sorted(starts_from))}"
                    + (" (the run has ended: start a new run)" if row.state in TERMINAL else ""))
            if to is None:  # a step within the state it found: checked only
                conn.rollback()
                return row.state
            self._check(row.state, to)
            self.db.execute(
                conn,
                f"UPDATE {self.store.runs} SET state = %s, reason = %s, owner = %s, heartbeat_at = {d.now},"
                f" lease_expires_at = {d.now_plus()}, updated_at = {d.now} WHERE lock_key = %s AND run_id = %s",
                (to, reason, self.owner, lease_seconds if lease_seconds is not None else LEASE_SECONDS,
                 row.lock_key, self.run_id),
            )
            if to != row.state:
                self._event(conn, "transition", row.state, to, reason, detail)
                log.info("run state: %s -> %s (%s)", row.state, to, reason)
                if row.state == PLANNED:  # the copy starts: the seed's Active Backfill window opens
                    for name, edge in (("pre_backfill", "end"), ("active_backfill", "start")):
                        self._event(conn, "window", None, None, f"{name} {edge}s", {"window": name, "edge": edge})
            conn.commit()
            return row.state

    def renew(self, lease_seconds: float | None = None) -> bool:
        """Renew the lease (for :data:`LEASE_SECONDS` when ``None``, never shortening a longer one);
        ``False`` when this run no longer holds the lock."""
        d = self.db.dialect
        lease_seconds = LEASE_SECONDS if lease_seconds is None else lease_seconds
        with self.db.session() as conn:
            # never shortens a longer lease a wait set (a human's answer, a soak)
            n = self.db.execute(
                conn,
                f"UPDATE {self.store.runs} SET heartbeat_at = {d.now}, lease_expires_at = CASE WHEN"
                f" lease_expires_at IS NOT NULL AND lease_expires_at > {d.now_plus()} THEN lease_expires_at"
                f" ELSE {d.now_plus()} END WHERE lock_key = %s AND run_id = %s",
                (lease_seconds, lease_seconds, self.lock_key(conn), self.run_id),
            )
            conn.commit()
        return n > 0

    # ------------------------------------------------------------------ live control
    def control(self) -> dict[str, Any]:
        """Live control from the run-state table: ``{"pause", "stop", "max_rows_per_second",
        "target_batch_seconds"}`` (whatever was set), read before every batch over one kept
        connection (one primary-key lookup). An operator sets it with :meth:`set_control`, or in
        SQL: ``UPDATE zdt_backfill_runs SET control = '{"pause": true}' WHERE lock_key =
        '<schema>.<table>'``."""
        try:
            if self._control_conn is None:
                self._control_conn = self.db.connect()
                self._control_key = self.lock_key(self._control_conn)
                self.db.set_autocommit(self._control_conn)  # one round trip a read, no ROLLBACK after it
            rows = self.db.query(self._control_conn, f"SELECT control FROM {self.store.runs} WHERE lock_key = %s",
                                 (self._control_key,))
        except Exception as exc:  # the batches will meet the same trouble; control is read again next time
            log.warning("live control unreadable: %s", exc)
            self.close()
            return {}
        try:
            out = json.loads(rows[0][0]) if rows and rows[0][0] else {}
        except ValueError:
            log.warning("zdt_backfill_runs.control is not JSON: %r", rows[0][0])
            return {}
        return {**out, "source": "zdt_backfill_runs.control"} if isinstance(out, dict) and out else {}

    def close(self) -> None:
        """Close the kept connection of :meth:`control`."""
        if self._control_conn is not None:
            try:
                self._control_conn.close()
            except Exception:
                pass
        self._control_conn = None

    def critical_mode(self) -> dict[str, Any] | None:
        """The run's critical-load mode (its own ``critical`` field, beside the live control:
        :class:`~zdt_backfill.signals.critical.CriticalLoadMode`), read over the kept control
        connection; ``None`` outside the mode.

        :raises Exception: the database's error (the mode's reader logs it and holds).
        """
        if self._control_conn is None:
            self.control()
        rows = self.db.query(self._control_conn, f"SELECT critical FROM {self.store.runs} WHERE lock_key = %s",
                             (self._control_key,))
        value = json.loads(rows[0][0]) if rows and rows[0][0] else None
        return value if isinstance(value, dict) else None

    def set_critical_mode(self, value: dict[str, Any] | None) -> None:
        """Set (``None``: clear) the run's critical-load mode, while this run holds the lock."""
        with self.db.session() as conn:
            self.db.execute(conn, f"UPDATE {self.store.runs} SET critical = %s WHERE lock_key = %s AND run_id = %s",
                            (json.dumps(value) if value is not None else None, self.lock_key(conn), self.run_id))
            conn.commit()
        log.info("critical-load mode of %s: %s", self.lock_key(), value or "cleared")

    def set_control(self, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into the live control of this table's run (``None`` removes a key)."""
        with self.db.session() as conn:
            key = self.lock_key(conn)
            rows = self.db.query(conn, f"SELECT control FROM {self.store.runs} WHERE lock_key = %s FOR UPDATE", (key,))
            current = json.loads(rows[0][0]) if rows and rows[0][0] else {}
            current.update(values)
            current = {k: v for k, v in current.items() if v is not None}
            self.db.execute(conn, f"UPDATE {self.store.runs} SET control = %s WHERE lock_key = %s",
                            (json.dumps(current), key))
            conn.commit()
        log.info("live control of %s: %s", key, current)
        return current

    # ------------------------------------------------------------------ events
    def _event(self, conn: Any, kind: str, state_from: str | None, state_to: str | None, reason: str | None,
               detail: dict[str, Any] | None = None) -> None:
        self.db.execute(
            conn,
            f"INSERT INTO {self.store.events} (lock_key, run_id, at, kind, state_from, state_to, reason, detail)"
            f" VALUES (%s, %s, {self.db.dialect.now}, %s, %s, %s, %s, %s)",
            (self.lock_key(conn), self.run_id, kind, state_from, state_to, reason,
             json.dumps(detail or {}, default=str)),
        )

    def record(self, kind: str, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Append an event (``validation``, ``destructive``, ``approval``, ``decision``, ``window``...)."""
        with self.db.session() as conn:
            self._event(conn, kind, None, None, reason, detail)
            conn.commit()

    def destructive(self, step: str, sql: str, reason: str, forget_checkpoints: str | None = None) -> None:
        """Log and record a destructive statement *before* it runs (its exact SQL and why).

        :param forget_checkpoints: a checkpoint namespace (the copy's run id) to delete in the same
            transaction: a target about to be emptied is no longer where those checkpoints say, so
            a retry or a takeover must copy it afresh, never adopt them.
        """
        log.warning("destructive [%s]: %s  -- %s", step, sql, reason)
        with self.db.session() as conn:
            self._event(conn, "destructive", None, None, reason, {"step": step, "sql": sql})
            if forget_checkpoints is not None:
                from .checkpoint import CheckpointStore

                CheckpointStore(self.db).forget(conn, forget_checkpoints)
            conn.commit()

    def window(self, name: str, edge: str) -> None:
        """Record a compatibility window's start or end (``pre_backfill``, ``active_backfill``, ``post_backfill``)."""
        self.record("window", f"{name} {'starts' if edge == 'start' else 'ends'}", {"window": name, "edge": edge})

    def events(self, kind: str | None = None, this_run_only: bool = True) -> list[Event]:
        """Events of this run's table (this run's only by default), oldest first."""
        with self.db.session() as conn:
            if not self.store.tables_exist(conn):
                return []
            where, params = "lock_key = %s", [self.lock_key(conn)]
            if this_run_only:
                where += " AND run_id = %s"
                params.append(self.run_id)
            if kind:
                where += " AND kind = %s"
                params.append(kind)
            rows = self.db.query(
                conn,
                f"SELECT id, run_id, at, kind, state_from, state_to, reason, detail FROM {self.store.events}"
                f" WHERE {where} ORDER BY id",
                tuple(params),
            )
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7] or "{}")) for r in rows]

    # ------------------------------------------------------------------ preconditions
    def latest_validation(self) -> tuple[Event | None, Event | None]:
        """``(latest validation, latest invalidating destructive step)`` of this run."""
        validation = invalidating = None
        for e in self.events():
            if e.kind == "validation":
                validation = e
            elif e.kind == "destructive" and e.detail.get("step") in INVALIDATING_STEPS:
                invalidating = e
        return validation, invalidating

    def require_passing_validation(self, max_error_rate_pct: float, exact: bool = False,
                                   full: bool = False) -> dict[str, Any]:
        """The precondition of every forward step, read from the state table (never XCom).

        There must be a validation of this run taken after its last repair, truncate or
        nullify, with no unexplained range, and either no remaining difference or (when not
        ``exact``) a remaining rate at most ``max_error_rate_pct`` that a human approved; with
        ``full``, it must have read every key (not sampled).

        :returns: that validation's detail.
        :raises InvalidTransitionError: otherwise, naming what is missing.
        """
        validation, invalidating = self.latest_validation()
        if validation is None:
            raise InvalidTransitionError("no validation of this run is recorded: refusing to go forward")
        if invalidating is not None and invalidating.id > validation.id:
            raise InvalidTransitionError(
                f"the target changed after the last validation ({invalidating.detail.get('step')} at "
                f"{invalidating.at}): refusing to go forward on a stale validation"
            )
        v = validation.detail
        if full and (v.get("mode", "full") != "full" or v.get("sampling")):
            raise InvalidTransitionError(
                f"the last validation ({validation.at}) was {v.get('mode')}: this step needs a full validation of "
                "every key, taken after the last repair")
        if v.get("ranges_unexplained"):
            raise InvalidTransitionError(f"{v['ranges_unexplained']} range(s) differ with no differing key found")
        mismatched = int(v.get("mismatched", 0))
        if mismatched == 0:
            return v
        if exact:
            raise InvalidTransitionError(f"validation at {validation.at} found {mismatched} differing row(s)")
        rate = 100.0 * mismatched / max(int(v.get("source_rows", 0)), 1)
        approvals = [e for e in self.events("approval") if e.id > validation.id]
        if rate > max_error_rate_pct or not any(e.detail.get("option") == "contract" for e in approvals):
            raise InvalidTransitionError(
                f"validation at {validation.at} found {mismatched} differing row(s) ({rate:.4f}%); forward needs "
                f"none, or at most {max_error_rate_pct}% approved by a human"
            )
        return v
