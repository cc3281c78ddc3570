"""The Runner: one owner for a run, one method per step, and :meth:`Runner.run`, the whole
lifecycle read top to bottom (gh-ost's ``Migrator.Migrate()``, Spirit's ``Runner.Run()``).

A :class:`Runner` is built once per task (or once for a whole run from the CLI) from the run's
:class:`~zdt_backfill.config.RunConfig` and its :class:`~zdt_backfill.db.Database`. It holds the
run's handle on the state table (:class:`~zdt_backfill.state.runstate.RunHandle`), its replica
probes, its flag store and its live-control readers. Each step method reads what it needs from
the database (the run-state and checkpoint tables) and moves the state machine through the
steps table (:data:`~zdt_backfill.state.runstate.STEPS`): nothing trusts an XCom, so clearing any
task in the UI and running it again re-checks its preconditions where the truth is. Every step
returns a JSON-ready dict.

The Airflow layer (``plugins/zdt_airflow``) builds a Runner from the task's context and calls one
method per task; ``zdt-backfill run`` calls :meth:`Runner.run`; the bench and the end-to-end tests
call it too, so the order of the steps is written once, here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ..cancel import Cancel
from ..config import RunConfig
from ..copying import repair as repair_mod
from ..copying.chunker import Partition
from ..copying.copier import PartitionCopier
from ..db import Database
from ..dialects import Range
from ..errors import PermanentError
from ..keys import resolve_key
from ..routing.flags import FencedFlagStore, FlagStore
from ..signals.errorsignal import ErrorSignal, HttpErrorSignal, SqlErrorSignal
from ..signals.heartbeat import HeartbeatWriter
from ..signals.lag import LagProbe, max_lag
from ..signals.throttler import build_throttler
from ..state.checkpoint import CheckpointStore, PartitionProgress
from ..state.lease import LeaseKeeper
from ..state.runstate import (
    CONTRACTED,
    CONTRACTING,
    HALTED,
    POST_FLIP,
    ROLLED_BACK,
    SOAKING,
    TERMINAL,
    WAIT_LEASE_MARGIN_SECONDS,
    PostFlipError,
    RunHandle,
    post_flip_refusal,
)
from ..verify import checksum
from ..verify.checklist import failed_data_items, run_checklist
from . import contract, dualwrite, preflight, rollback
from .decision import FORWARD, ROLLBACK, decide_branch

log = logging.getLogger(__name__)

#: Seconds between lag readings while the decision (or :meth:`Runner.catch_up`) holds for replicas.
HOLD_POLL_SECONDS = 1.0
#: Approval options, in the order the approval page shows them.
CONTRACT, ROLL_BACK, HOLD_OPTION = "contract", "roll back", "hold"
APPROVAL_OPTIONS = (CONTRACT, ROLL_BACK, HOLD_OPTION)
#: The contract steps, in order (:meth:`Runner.contract_step`), and the rollback steps (:meth:`Runner.rollback_step`).
CONTRACT_STEPS = ("flip_routing", "legacy_action", "reclaim_storage", "finish")
ROLLBACK_STEPS = ("stop", "flip_routing", "empty_target", "restore_sequences", "clear_caches", "finish")


class HeldTooLongError(PermanentError):
    """A hold passed its deadline: the run is halted (its copy and checkpoints are kept)."""


class Runner:
    """One run's steps against one database.

    :param config: the run.
    :param db: the database holding source and target (the primary).
    :param owner: who acts (``task_id[map_index]#try``), recorded with the lease and in events.
    :param probes: replica lag probes (the lag gate, catch-up, decide); none: no replica.
    :param replica: the first replica as a database (``validation_source: replica``).
    :param parity_db: the other environment (``parity_conn_id``), compared in pre-flight.
    :param flag_store: where the application reads its routing flags (contract and rollback).
    :param control: extra live control merged over the state table's (the Airflow Variable).
    :param on_batch: called after each committed batch with ``(progress, chunk, rows, seconds)``.
    :param sleep: the waits' sleep (s); tests pass a fake.
    :param clock: a monotonic clock (s).
    """

    def __init__(
        self, config: RunConfig, db: Database, *, owner: str = "engine", probes: list[LagProbe] | None = None,
        replica: Database | None = None, parity_db: Database | None = None, flag_store: FlagStore | None = None,
        control: Callable[[], dict[str, Any]] | None = None, on_batch: Callable[..., None] | None = None,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        db.ensure_flavour()  # every step's SQL in this flavour's spelling, from its first statement
        # the primary key when the conf names no key, read here by every task (keys.resolve_key)
        self.config, self.db, self.owner = resolve_key(config, db), db, owner
        self.probes = list(probes or [])
        self.replica, self.parity_db, self.flag_store = replica, parity_db, flag_store
        self.extra_control, self.on_batch = control, on_batch
        self.sleep, self.clock = sleep, clock
        self.handle = RunHandle(db, self.config, owner)
        self.checkpoints = CheckpointStore(db)
        self.cancel = Cancel()

    def stop(self, reason: str) -> int:
        """Stop this runner's step at once (Airflow's ``on_kill``; thread- and signal-safe): the
        statement in flight is cancelled, every wait returns, and the step raises
        :class:`~zdt_backfill.errors.CancelledError`; checkpoints stay where the last committed batch
        put them (see :mod:`zdt_backfill.cancel`).

        :returns: the number of in-flight statements a cancel was sent to.
        """
        return self.cancel.cancel(reason)

    # ------------------------------------------------------------------ around every step
    @property
    def heartbeat_name(self) -> str:
        """The run's heartbeat row: its lock key (``<schema>.<table>``)."""
        return self.handle.lock_key()

    @contextlib.contextmanager
    def lease_kept(self, keep: bool = True) -> Iterator[None]:
        """Renew this run's lease from a background thread while a step works (a long validation,
        repair or DDL retry must not let the lease expire and another run take over)."""
        if not keep:
            yield
            return
        with LeaseKeeper(self.handle):
            yield

    def renew_lease_for_wait(self, seconds: float) -> bool:
        """Extend this run's lease over a wait (a human's answer, a soak) of ``seconds`` (s)."""
        return self.handle.renew(seconds + WAIT_LEASE_MARGIN_SECONDS)

    def record_failure(self, exc: BaseException) -> None:
        """Record that a step failed (best effort: the database may be what failed)."""
        try:
            row = self.handle.row()
            if row is not None and row.run_id == self.config.run_id:
                self.handle.record("failure", f"{self.owner}: {type(exc).__name__}: {exc}"[:2000])
        except Exception as err:  # never hide the original error
            log.warning("could not record the failure in the state table: %s", err)

    def _control(self) -> dict[str, Any]:
        """Live control: the state table's, with the extra reader's merged over it."""
        out = self.handle.control()
        extra = self.extra_control() if self.extra_control else {}
        return {**out, **extra, "pause": bool(out.get("pause") or extra.get("pause")),
                "stop": bool(out.get("stop") or extra.get("stop"))}

    def _heart(self) -> Any:
        return HeartbeatWriter(self.db, self.heartbeat_name, self.config.run_id)

    # ------------------------------------------------------------------ before the copy
    def preflight(self) -> dict[str, Any]:
        """Pre-flight checks, environment parity, plan, lock (see :func:`.preflight.run_preflight`).

        :returns: the plan as a dict (``partitions`` ready for dynamic task mapping).
        :raises PreflightError: a fatal check failed; nothing was written.
        :raises ConcurrentRunError: another run holds a live lease on the target.
        :raises PostFlipError: the application already writes the new schema only (the write flag
            is new, or the table's last run is past the flip): a new run would re-copy over its writes.
        """
        self.refuse_after_flip(f"a new run on {self.config.target_table}")
        return preflight.run_preflight(self.config, self.db, self.probes, self.owner, parity_db=self.parity_db).to_dict()

    def dry_run(self) -> dict[str, Any]:
        """The dry run (:mod:`.dryrun`): pre-flight, ``EXPLAIN`` of the batches, boundaries and an
        estimate, writing nothing (no control table, no lock)."""
        from .dryrun import dry_run

        return dry_run(self.config, self.db)

    def confirm_dual_write(self) -> dict[str, Any]:
        """Dual-write confirmation (:mod:`.dualwrite`), recorded in the state table.

        :raises PreflightError: dual-writes could not be confirmed (recorded as refused).
        """
        try:
            result = dualwrite.confirm_dual_write(self.config, self.db).to_dict()
        except PermanentError as exc:
            self.handle.record("dual_write", f"refused: {exc}")
            raise
        self.handle.record("dual_write", result.get("detail", ""), result)
        return result

    # ------------------------------------------------------------------ the copy
    def partitions(self) -> list[PartitionProgress]:
        """The run's partitions, from its checkpoints (the persisted plan)."""
        with self.db.session() as conn:
            return self.checkpoints.progress(conn, self.config.run_id)

    def plan(self) -> dict[str, Any]:
        """The run's last recorded plan (pre-flight's ``plan`` event); ``{}`` when none was recorded."""
        for e in reversed(self.handle.events("plan")):
            return e.detail or {}
        return {}

    def copy_partition(self, partition: dict[str, Any]) -> dict[str, Any]:
        """Copy one partition from its checkpoint (the bounds are the checkpointed plan).

        :param partition: ``{"index", "lo", "hi"}`` (and ``rows``), from pre-flight's plan.
        :returns: :meth:`~zdt_backfill.copying.copier.PartitionResult.to_dict`.
        """
        plan = self.plan()
        plan_rows = {int(p["index"]): int(p["rows"]) for p in plan.get("partitions") or [] if p.get("rows") is not None}
        copier = PartitionCopier(self.config, self.db, Partition.from_dict(partition), plan.get("key_index"),
                                 self.probes, self.on_batch, handle=self.handle, owner=self.owner,
                                 planned=len(self.partitions()) or 1, control=self._control, plan_rows=plan_rows,
                                 cancel=self.cancel)
        return copier.run().to_dict()

    # ------------------------------------------------------------------ catch-up, validation, repair
    def start_catchup(self) -> None:
        """The copy is done: the run waits for its replicas (the lease lasts the wait's deadline)."""
        self.handle.step("catch_up", "copy done, waiting for replicas",
                         lease_seconds=self.config.replica_wait_timeout_seconds + WAIT_LEASE_MARGIN_SECONDS)

    def catch_up(self) -> dict[str, Any]:
        """:meth:`start_catchup`, then wait in this process, the heartbeat beating, until every
        replica is under ``forward_max_lag_seconds`` (the Airflow layer defers this wait instead).

        :raises HeldTooLongError: replicas stayed behind past ``replica_wait_timeout_seconds``.
        """
        self.start_catchup()
        if not self.probes:
            return {"readings": {}}
        started = self.clock()
        with self._heart():
            while True:
                worst, readings = max_lag(self.probes)
                if worst is not None and worst < self.config.thresholds.forward_max_lag_seconds:
                    return {"readings": readings}
                if self.clock() - started > self.config.replica_wait_timeout_seconds:
                    self.handle.step("halt", f"replicas did not catch up: {readings}")
                    raise HeldTooLongError(f"replicas did not catch up: {readings}")
                self.cancel.check()
                self.sleep(HOLD_POLL_SECONDS)

    def validate(self) -> dict[str, Any]:
        """Checksum every range in chunks under the run's lag/load gate, then the seed's checklist;
        the result is recorded in the state table with its time.

        With ``validation_source: replica`` the chunk checksums read :attr:`replica` once its
        heartbeat shows it replayed past the moment validation started (waiting up to
        ``replica_wait_timeout_seconds``, else the primary is read); differing keys are re-checked
        on the primary.

        :returns: :meth:`~zdt_backfill.verify.checksum.ValidationResult.to_dict`, with ``checklist``.
        """
        c = self.config
        self.refuse_after_flip("a validation (it leads to repair)")
        self.handle.step("validate", "validating the copy")
        parts = [Partition(p.partition_no, p.lo, p.hi) for p in self.partitions()]
        throttler = build_throttler(c, self.db, self.probes, len(parts) or 1, self.handle.control,
                                    checksum.MAX_CHUNK_ROWS, sleep=self.cancel.sleep)

        def gate() -> None:  # between chunks: stop when told, then the throttle
            self.cancel.check()
            throttler.before_batch()

        on_replica = self.replica is not None and c.validation_source == "replica"
        beat = self._heart() if (self.probes or on_replica) else contextlib.nullcontext()
        with beat:
            read_db = self._caught_up_replica() if on_replica else None
            v = checksum.validate(c, self.db, parts, read_db=read_db, gate=gate)
            v.checklist = run_checklist(c, self.db, v, self.probes)
        result = v.to_dict()
        self.handle.record("validation", f"{result['mismatched']} differing row(s) of {result['source_rows']}", result)
        return result

    def _caught_up_replica(self) -> Database | None:
        """:attr:`replica` once the heartbeat it applied is younger than the time since validation
        started (it replayed past that moment); ``None`` (read the primary) past the deadline."""
        replica, started = self.replica, self.clock()
        assert replica is not None
        while True:
            self.sleep(1.0)
            elapsed = self.clock() - started
            try:
                with replica.session() as conn:
                    rows = replica.query(conn, replica.dialect.heartbeat_age_sql(replica.schema), (self.heartbeat_name,))
                age = float(rows[0][0]) if rows and rows[0][0] is not None else None
            except Exception as exc:  # unreachable or no heartbeat table: read the primary instead
                log.warning("validation replica unreadable (%s): validating on the primary", exc)
                return None
            if age is not None and age < elapsed:
                log.info("validation reads replica %s (heartbeat %.1fs old, validation started %.1fs ago)",
                         replica.name, age, elapsed)
                return replica
            if elapsed > self.config.replica_wait_timeout_seconds:
                log.warning("replica %s did not replay past the start of validation in %.0fs: validating on the "
                            "primary", replica.name, elapsed)
                return None

    def repair(self) -> dict[str, Any]:
        """Repair the keys the last validation named, then validate the affected ranges again.

        The recorded ``ranges`` are the differing parts only; the totals after repair are the last
        validation's, with those parts' counts replaced by the re-validation's.

        :returns: ``{"repair": RepairResult dict | None, "validation": the new validation}``.
        :raises PermanentError: no validation is recorded.
        """
        c, handle = self.config, self.handle
        self.refuse_after_flip("a repair")
        last, _ = handle.latest_validation()
        if last is None:
            raise PermanentError("no validation recorded: run validation before repair")
        bad = [checksum.RangeChecksum.from_dict(r) for r in last.detail.get("ranges", []) if not r["match"]]
        if not bad:
            log.info("the last validation found no difference: nothing to repair")
            return {"repair": None, "validation": last.detail}
        handle.step("repair", f"repairing {len(bad)} range(s) with {last.detail.get('mismatched')} differing row(s)")
        ranges = [Range(r.lo, r.hi) for r in bad]

        def record(statements: list[str], counts: dict[str, int]) -> None:
            for sql in statements:
                handle.destructive("repair", sql, f"repair keys named by validation: {counts}")

        throttler = build_throttler(c, self.db, self.probes, 1, handle.control, c.batch_size, sleep=self.cancel.sleep)
        with self._heart():
            fixed = repair_mod.repair_ranges(c, self.db, ranges, throttler, before_write=record,
                                             fence=handle.fencer(handle.fence_states("repair")))
        handle.record("repair", f"repaired {fixed.repaired}, {fixed.data_errors} data error(s)", fixed.to_dict())
        handle.step("validate", "re-validating the repaired ranges")
        again = checksum.validate(c, self.db, [], ranges=ranges)
        out = checksum.merge_revalidation(last.detail, bad, again)
        out["repair_data_errors"] = fixed.data_errors
        handle.record("validation", f"after repair: {out['mismatched']} differing row(s) of {out['source_rows']}", out)
        return {"repair": fixed.to_dict(), "validation": out}

    # ------------------------------------------------------------------ decision and approval
    def decide(self) -> dict[str, Any]:
        """Hold for healthy replicas, then decide forward / rollback / hold from the state table.

        Replica lag or an unreachable replica holds the run (state ``holding``) up to
        ``replica_wait_timeout_seconds``; past it the run is halted. Health never rolls back.

        :returns: ``{"decision", "next": "contract" | "rollback" | "approval", "body": Markdown}``.
        :raises HeldTooLongError: replicas stayed behind past the deadline (the run is ``halted``).
        :raises PermanentError: no validation of the target as it is now.
        """
        c, handle = self.config, self.handle
        handle.step("decide", "deciding")
        if self.probes:
            with self._heart():
                self._hold_for_replicas()
        last, invalidating = handle.latest_validation()
        if last is None or (invalidating is not None and invalidating.id > last.id):
            raise PermanentError("no validation of the target as it is now: run validation first")
        v = last.detail
        parts = self.partitions()
        data_errors = sum(p.data_errors for p in parts) + int(v.get("repair_data_errors", 0))
        rows = max(sum(p.keys_scanned for p in parts), int(v.get("source_rows", 0)))
        d = decide_branch(int(v.get("mismatched", 0)), data_errors, rows, c.thresholds,
                          int(v.get("ranges_unexplained", 0)), failed_data_items(v.get("checklist") or []))
        yields = sum(p.retries for p in parts)
        nxt = ("contract" if d.branch == FORWARD else "rollback" if d.branch == ROLLBACK else "approval")
        if c.approval != "auto":
            nxt = "approval"
        out = {"decision": d.to_dict(), "next": nxt, "data_errors": data_errors, "rows": rows, "yields": yields,
               "validation": {k: v.get(k) for k in ("source_rows", "target_rows", "missing", "different", "extra",
                                                    "mismatched", "match_pct", "sample_keys")}}
        out["body"] = self.approval_body(out)
        handle.record("decision", f"{d.branch}: {'; '.join(d.reasons)}", {k: out[k] for k in out if k != "body"})
        if nxt == "approval":
            handle.step("await_approval", f"decision {d.branch}: waiting for a human",
                        lease_seconds=c.approval_timeout_minutes * 60 + WAIT_LEASE_MARGIN_SECONDS)
        log.info("decision: %s (%s); yields (transient retries, not errors): %d; next: %s",
                 d.branch, "; ".join(d.reasons), yields, nxt)
        return out

    def _hold_for_replicas(self) -> None:
        """Hold (state ``holding``) until every replica is under the forward lag threshold; halt past the deadline."""
        c, started = self.config, self.clock()
        worst, readings = max_lag(self.probes)
        while worst is None or worst >= c.thresholds.forward_max_lag_seconds:
            waited = self.clock() - started
            if waited > c.replica_wait_timeout_seconds:
                self.handle.step("halt", f"replicas still behind after {waited:.0f}s: {readings}")
                raise HeldTooLongError(f"replicas still behind after {waited:.0f}s ({readings}); the run holds, "
                                       "nothing destroyed")
            self.handle.step("hold", f"replica lag {readings} (forward needs < {c.thresholds.forward_max_lag_seconds}s)",
                             lease_seconds=c.replica_wait_timeout_seconds + WAIT_LEASE_MARGIN_SECONDS)
            self.sleep(HOLD_POLL_SECONDS)
            worst, readings = max_lag(self.probes)
        self.handle.step("decide", f"replicas caught up: {readings}")

    def approval_body(self, decision: dict[str, Any]) -> str:
        """Markdown for the approval page: the validation numbers, the repaired keys and the exact
        destructive SQL each option would run."""
        c, d, db = self.config, self.db.dialect, self.db
        v = decision["validation"]
        repairs = [e.detail for e in self.handle.events("repair")]
        rollback_sql = (
            [d.truncate_sql(c.target_table, db.schema)] if c.mode == "copy"
            else [d.nullify_batch_sql(c.source_table, c.key, list(c.columns), db.schema) + "  -- in keyset batches"]
        )
        lines = [
            f"**Decision: {decision['decision']['branch']}** - " + "; ".join(decision["decision"]["reasons"]),
            "",
            f"- validation: {v.get('source_rows')} source rows, {v.get('target_rows')} target rows, "
            f"missing {v.get('missing')}, different {v.get('different')}, extra {v.get('extra')}; differing keys: "
            f"{v.get('sample_keys') or 'none'}",
            f"- data errors: {decision['data_errors']}; transient yields (not errors): {decision['yields']}",
            f"- repaired: {[r.get('repaired') for r in repairs] or 'nothing'}; "
            f"keys: {[r.get('keys') for r in repairs] or '-'}",
            "",
            f"**contract** flips the read flag `{c.routing_flag}` to 1 % then 100 % (watching the 5xx rate), then "
            f"`{c.write_flag}` to new; after a soak of {c.soak_minutes:g} min, legacy_action={c.legacy_action}:",
            *[f"    {s}" for s in contract.legacy_statements(c, db) or ["(nothing dropped)"]],
            "",
            f"**roll back** flips both flags to legacy, then runs: {'; '.join(rollback_sql)}; restores sequences; "
            "clears caches.",
            "",
            "**hold** changes nothing: the run halts and keeps its copy; a later run resumes or re-validates.",
        ]
        return "\n".join(lines)

    def pending_decision(self) -> dict[str, Any]:
        """The run's latest decision and its state now, from the state table: the approval step
        waits for a human only while the run is ``awaiting_approval``.

        :returns: ``{"state", "next", "decision", "body"}``.
        :raises PermanentError: no decision of this run is recorded.
        """
        row = self.handle.row()
        decisions = self.handle.events("decision")
        if row is None or row.run_id != self.config.run_id or not decisions:
            raise PermanentError("no decision of this run is recorded: run decide first")
        d = decisions[-1].detail
        return {"state": row.state, "next": d.get("next"), "decision": d.get("decision"), "body": self.approval_body(d)}

    def record_approval(self, option: str, user: str, what: str = "decision") -> str:
        """Record a human's answer in the state table; ``hold`` halts the run.

        :param option: one of :data:`APPROVAL_OPTIONS` (``decision``) or ``approve`` / ``reject`` (``drop``).
        :returns: the option.
        """
        self.handle.record("approval", f"{what}: {option} by {user}", {"what": what, "option": option, "user": user})
        if what == "decision" and option == HOLD_OPTION:
            self.handle.step("halt", f"held by {user}: nothing changed")
        return option

    def drop_approval_body(self) -> str:
        """Markdown for the legacy drop's approval page: the exact DDL it would run."""
        statements = "\n".join(f"    {s}" for s in contract.legacy_statements(self.config, self.db))
        return (f"The soak of {self.config.soak_minutes:g} min is over and the last validation matched exactly. "
                f"Approve to run, each with a short lock wait and retries:\n\n{statements}")

    def drop_approval(self) -> tuple[str | None, str | None]:
        """The answer to the legacy drop/rename, from the state table: ``("approve", who)``
        (``who`` is ``auto`` without approval), ``("reject", who)`` (``timeout`` when nobody
        answered in time), or ``(None, None)`` when no answer is recorded."""
        if self.config.approval == "auto":
            return "approve", "auto"
        for e in reversed(self.handle.events("approval")):
            if e.detail.get("what") == "drop":
                return e.detail.get("option"), e.detail.get("user")
        return None, None

    def refuse_after_flip(self, what: str) -> None:
        """Refuse ``what`` (a step that would destroy, overwrite or re-copy the new table) when the
        flag store says the application writes the new schema only: the truth is re-read right
        before acting, where the application reads it. The state table's own rule (a run past the
        flip is ``soaking``) is checked by the steps themselves.

        :raises PostFlipError: the write flag is ``new``.
        :raises PermanentError: the flag cannot be read (nothing destructive runs on a flag nobody can read).
        """
        if self.flag_store is None:
            return
        flag = self.config.write_flag
        try:
            value = self.flag_store.get(flag)
        except Exception as exc:
            raise PermanentError(f"refusing {what}: the write flag {flag} is unreadable in {self.flag_store.name} "
                                 f"({exc}); nothing destructive runs on a flag nobody can read") from exc
        if value is not None and value.path == "new":
            raise PostFlipError(post_flip_refusal(what, f"flag {flag} in {self.flag_store.name}"))

    # ------------------------------------------------------------------ contract and rollback
    def error_signal(self) -> ErrorSignal | None:
        """The 5xx-rate signal the ramp watches, from conf (``None`` when none is configured)."""
        c = self.config
        if c.error_signal_sql:
            return SqlErrorSignal(self.db, c.error_signal_sql)
        if c.error_signal_url:
            return HttpErrorSignal(c.error_signal_url, json_key=c.error_signal_json_key)
        return None

    def soak_remaining(self) -> float | None:
        """Seconds of the soak left before the legacy schema may go (see :func:`.contract.soak_remaining_seconds`)."""
        return contract.soak_remaining_seconds(self.config, self.db, self.handle)

    def _store(self) -> FlagStore:
        if self.flag_store is None:
            raise PermanentError("this step needs the run's routing flag store")
        return self.flag_store

    def contract_step(self, step: str) -> dict[str, Any]:
        """One contract step of :data:`CONTRACT_STEPS`: ``flip_routing``, ``legacy_action``,
        ``reclaim_storage``, ``finish``.

        :raises ValueError: an unknown step.
        """
        c, db, handle = self.config, self.db, self.handle
        if step == "flip_routing":
            row = handle.row()
            if row is None or row.state not in POST_FLIP:  # a retried write flip is the flip itself
                self.refuse_after_flip("a read flip")
            store = FencedFlagStore(self._store(), handle.fencer((CONTRACTING, SOAKING)), db)
            return contract.flip_reads(c, db, handle, store, self.error_signal())
        if step == "legacy_action":
            return contract.legacy_action(c, db, handle, self.drop_approval())
        if step == "reclaim_storage":
            return contract.reclaim_storage(c, db, handle)
        if step == "finish":
            return contract.finish(c, db, handle)
        raise ValueError(f"unknown contract step {step!r}")

    def rollback_step(self, step: str) -> dict[str, Any]:
        """One rollback step of :data:`ROLLBACK_STEPS`: ``stop``, ``flip_routing``, ``empty_target``,
        ``restore_sequences``, ``clear_caches``, ``finish``.

        :raises ValueError: an unknown step.
        """
        c, db, handle = self.config, self.db, self.handle
        if step in ("stop", "flip_routing", "empty_target"):
            self.refuse_after_flip(f"rollback step {step}")
        if step == "stop":
            return rollback.stop(c, db, handle, "rollback")
        if step == "flip_routing":
            if rollback.already_rolled_back(handle):
                return {"skipped": "already rolled back"}
            return contract.flip_back(c, handle, self._store())
        if step == "empty_target":
            return rollback.empty_target(c, db, handle, self.probes, self.cancel)
        if step == "restore_sequences":
            return {"sequences": rollback.restore_sequences(c, db, handle)}
        if step == "clear_caches":
            return rollback.clear_caches(c, handle)
        if step == "finish":
            return rollback.finish(c, db, handle)
        raise ValueError(f"unknown rollback step {step!r}")

    def restore_staging(self) -> dict[str, Any]:
        """A staging rehearsal's end: put staging back as it was (:func:`.rollback.restore_staging`)."""
        return rollback.restore_staging(self.config, self.db, self._store())

    def diagnose(self, replicas: list[Database]) -> list[dict[str, Any]]:
        """The seed's symptom queries with verdicts (:mod:`zdt_backfill.signals.diagnose`), dicts with a ``line``."""
        from ..signals.diagnose import diagnose

        return [{**f.to_dict(), "line": f.line()} for f in diagnose(self.db, replicas)]

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict[str, Any]:
        """Release the lease and say how the run ended, from the state table.

        A run not contracted or rolled back is moved to ``halted`` (copy and checkpoints kept),
        with the last recorded failure as its reason.

        :returns: ``{"state", "reason", "success", "rolled_back", "held"}``; success only when the
            run contracted.
        """
        handle, c = self.handle, self.config
        row = handle.row()
        if row is None or row.run_id != c.run_id:
            return {"state": None, "reason": "this run never held the lock", "success": False, "held": False}
        failures = [e.reason for e in handle.events("failure")]
        reason = row.reason or ""
        if row.state not in TERMINAL and row.state != HALTED:
            reason = f"stopped in {row.state}" + (f": {failures[-1]}" if failures else "")
        after = handle.release(None if row.state in TERMINAL else HALTED, reason)
        state = after.state if after else row.state
        return {"state": state, "reason": after.reason if after else reason, "success": state == CONTRACTED,
                "rolled_back": state == ROLLED_BACK, "held": True}

    def report(self, reports_dir: str | Path, post_report: Callable[..., None] | None = None) -> dict[str, Any]:
        """:meth:`finish`, then the run report from the state tables (:mod:`zdt_backfill.report`):
        stored as a row of ``zdt_backfill_reports`` and written to ``reports_dir/<run_id>/``.

        :param post_report: ``post_report(config, db, report)`` may add to the report before it is
            stored (the staging rehearsal's restore and comparison); its error is returned, never lost.
        :returns: ``{"ending", "report", "where", "dir", "summary", "post_error"}``; ``report`` is
            ``None`` when the run never held the lock (nothing to report).
        """
        from .. import report as report_mod

        ending = self.finish()
        if not ending.get("held"):
            return {"ending": ending, "report": None}
        r = report_mod.from_state(self.config, self.db, ending)
        post_error: Exception | None = None
        if post_report is not None:
            try:
                post_report(self.config, self.db, r)
            except Exception as exc:  # stored with the report, then raised by the caller
                post_error = exc
        where = report_mod.store(self.db, r)
        out = report_mod.write(r, Path(reports_dir))
        return {"ending": ending, "report": r, "where": where, "dir": out, "summary": report_mod.summary(r),
                "post_error": post_error}

    # ------------------------------------------------------------------ the whole lifecycle
    def run(self, reports_dir: str | Path) -> dict[str, Any]:
        """Walk the whole lifecycle in this process, in order:

        pre-flight -> dual-write confirmation -> each partition's copy -> replica catch-up ->
        validation -> repair (when keys differ) -> decision -> contract (flip routing, soak,
        legacy action, reclaim storage, finish) or rollback (stop, flags back, empty the target,
        sequences, caches, finish) -> report.

        No human answers here: a decision that needs one (``approval: required``, or a hold) is
        answered ``hold`` (the run halts, nothing destroyed), and the legacy drop is refused unless
        ``approval`` is ``auto``. Any failure is recorded, and the run still ends in a report.

        :returns: :meth:`report`'s dict, with ``path`` (``contract`` | ``rollback`` | ``hold``) and
            ``error`` (the first failure, as text, or ``None``).
        """
        path, error = "hold", None
        try:
            if self.config.dry_run:
                return {"dry_run": self.dry_run()}
            plan = self.preflight()
            try:
                with self.lease_kept():
                    self.confirm_dual_write()
                for partition in plan["partitions"]:
                    self.copy_partition(partition)
                with self.lease_kept():
                    self.catch_up()
                    if self.validate()["mismatched"]:
                        self.repair()
                    decision = self.decide()
                    path = decision["next"]
                    if path == "approval":
                        self.record_approval(HOLD_OPTION, "zdt-backfill run (no human answers here)")
                        path = "hold"
                    else:
                        self.record_approval(path, "auto")
                        self._walk(CONTRACT_STEPS if path == "contract" else ROLLBACK_STEPS, path)
            except Exception as exc:
                self.record_failure(exc)
                raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("run %s stopped: %s", self.config.run_id, error)
        out = self.report(reports_dir)
        return {**out, "path": path, "error": error}

    def _walk(self, steps: tuple[str, ...], path: str) -> None:
        """The contract's or the rollback's steps in order; the contract waits out the soak after the flip."""
        for step in steps:
            if path == "rollback":
                self.rollback_step(step)
                continue
            if step == "legacy_action" and self.config.legacy_action != "keep":
                left = self.soak_remaining() or 0.0
                if left > 0:
                    log.info("soaking %.0f s before the legacy schema may go", left)
                    self.renew_lease_for_wait(left)
                    self.sleep(left)
            self.contract_step(step)


__all__ = ["APPROVAL_OPTIONS", "CONTRACT", "CONTRACT_STEPS", "HOLD_OPTION", "ROLLBACK_STEPS", "ROLL_BACK",
           "HeldTooLongError", "Runner"]
