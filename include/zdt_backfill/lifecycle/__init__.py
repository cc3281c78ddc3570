"""The expand/contract lifecycle: one engine call per step of the run.

gh-ost's ``Migrator.Migrate()`` is the only orchestrator and reads top to bottom; here each
DAG task calls exactly one function of this module, and each function reads what it needs
from the database (the run-state and checkpoint tables, :mod:`zdt_backfill.state.runstate`), moves the state
machine, and returns a JSON-ready dict. Nothing here trusts an XCom: clearing any task in
the UI and running it again re-checks its preconditions where the truth is.

The Airflow layer (``plugins/zdt_airflow``) only reads the config, builds the database
handles and the flag store, calls one of these and logs what it returns.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

from ..config import RunConfig
from ..copy import repair
from ..copy.chunker import Partition
from ..copy.copier import PartitionCopier
from ..db import Database
from ..dialects import Range
from ..errors import PermanentError
from ..routing.flags import FlagStore
from ..signals.errorsignal import ErrorSignal, HttpErrorSignal, SqlErrorSignal
from ..signals.heartbeat import HeartbeatWriter
from ..signals.lag import LagProbe, max_lag
from ..signals.throttler import build_throttler
from ..state.checkpoint import CheckpointStore, PartitionProgress
from ..state.runstate import (
    AWAITING_APPROVAL,
    CATCHING_UP,
    CONTRACTED,
    HALTED,
    HOLDING,
    REPAIRING,
    ROLLED_BACK,
    TERMINAL,
    VALIDATING,
    WAIT_LEASE_MARGIN_SECONDS,
    LeaseKeeper,
    RunHandle,
)
from ..verify import checksum
from ..verify.checklist import failed_data_items, run_checklist
from . import contract, dualwrite, preflight, rollback
from .decision import FORWARD, ROLLBACK, decide_branch

log = logging.getLogger(__name__)

#: Seconds between lag readings while the decision holds for replicas.
HOLD_POLL_SECONDS = 1.0
#: Approval options, in the order the approval page shows them.
CONTRACT, ROLL_BACK, HOLD_OPTION = "contract", "roll back", "hold"
APPROVAL_OPTIONS = (CONTRACT, ROLL_BACK, HOLD_OPTION)


class HeldTooLongError(PermanentError):
    """A hold passed its deadline: the run is halted (its copy and checkpoints are kept)."""


@contextlib.contextmanager
def lease_kept(config: RunConfig, db: Database, owner: str, keep: bool = True) -> Iterator[None]:
    """Renew this run's lease from a background thread while a step works (a long validation,
    repair or DDL retry must not let the lease expire and another run take over)."""
    if not keep:
        yield
        return
    with LeaseKeeper(RunHandle(db, config, owner)):
        yield


# ---------------------------------------------------------------------- before the copy
def run_preflight(
    config: RunConfig, db: Database, probes: list[LagProbe], owner: str, parity_db: Database | None = None,
) -> dict[str, Any]:
    """Pre-flight checks, environment parity when ``parity_db`` is given, plan, lock (see
    :func:`zdt_backfill.lifecycle.preflight.run_preflight`); the plan as a dict."""
    plan = preflight.run_preflight(config, db, probes, owner, parity_db=parity_db)
    return plan.to_dict()


def dry_run(config: RunConfig, db: Database) -> dict[str, Any]:
    """The dry run (see :mod:`zdt_backfill.lifecycle.dryrun`): pre-flight, ``EXPLAIN`` of the batches, boundaries and an
    estimate, writing nothing (no control table, no lock)."""
    from .dryrun import dry_run as run

    return run(config, db)


def confirm_dual_write(config: RunConfig, db: Database, owner: str) -> dict[str, Any]:
    """Dual-write confirmation, recorded in the state table."""
    handle = RunHandle(db, config, owner)
    try:
        result = dualwrite.confirm_dual_write(config, db).to_dict()
    except PermanentError as exc:
        handle.record("dual_write", f"refused: {exc}")
        raise
    handle.record("dual_write", result.get("detail", ""), result)
    return result


def copy_partition(
    config: RunConfig, db: Database, partition: dict[str, Any], probes: list[LagProbe], owner: str,
    on_batch: Callable[..., None] | None = None, control: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Copy one partition from its checkpoint (the bounds are the checkpointed plan).

    :param control: extra live control (the Airflow Variable ``zdt_backfill_control``), merged
        over the run-state table's ``control``.
    """
    handle = RunHandle(db, config, owner)
    plan = _plan(handle)
    key_index = plan.get("key_index")
    part = Partition.from_dict(partition)
    planned = len(partitions_of(config, db)) or 1
    plan_rows = {int(p["index"]): int(p["rows"]) for p in plan.get("partitions") or [] if p.get("rows") is not None}

    def merged() -> dict[str, Any]:
        out = handle.control()
        extra = control() if control else {}
        return {**out, **extra, "pause": bool(out.get("pause") or extra.get("pause")),
                "stop": bool(out.get("stop") or extra.get("stop"))}

    result = PartitionCopier(config, db, part, key_index, probes, on_batch, handle=handle, owner=owner,
                             planned=planned, control=merged, plan_rows=plan_rows).run()
    return result.to_dict()


def _plan(handle: RunHandle) -> dict[str, Any]:
    """The run's last recorded plan (pre-flight's ``plan`` event: key index, partitions with
    their estimated rows, ...); ``{}`` when none was recorded."""
    for e in reversed(handle.events("plan")):
        return e.detail or {}
    return {}


# ---------------------------------------------------------------------- catch-up, validation, repair
def start_catchup(config: RunConfig, db: Database, owner: str) -> None:
    """The copy is done: wait for replicas (the lease lasts the wait's deadline)."""
    RunHandle(db, config, owner).transition(
        CATCHING_UP, "copy done, waiting for replicas",
        lease_seconds=config.replica_wait_timeout_seconds + WAIT_LEASE_MARGIN_SECONDS,
    )


def partitions_of(config: RunConfig, db: Database) -> list[PartitionProgress]:
    """The run's partitions, from its checkpoints (the persisted plan)."""
    with db.session() as conn:
        return CheckpointStore(db).progress(conn, config.run_id)


def validate(
    config: RunConfig, db: Database, owner: str, probes: list[LagProbe] | None = None,
    replica: Database | None = None, sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Checksum every range in chunks under the run's lag/load gate, then the seed's checklist;
    the result is recorded in the state table with its time.

    :param probes: replica lag probes of the gate (none: load and live control only).
    :param replica: the first replica (``validation_source: replica``): the chunk checksums run
        there once its heartbeat shows it replayed past the moment validation started (waiting
        up to ``replica_wait_timeout_seconds``, else the primary is read); differing keys are
        re-checked on the primary.
    :returns: the :meth:`~zdt_backfill.verify.checksum.ValidationResult.to_dict` dict, with ``checklist``.
    """
    handle = RunHandle(db, config, owner)
    handle.transition(VALIDATING, "validating the copy")
    parts = [Partition(p.partition_no, p.lo, p.hi) for p in partitions_of(config, db)]
    throttler = build_throttler(config, db, probes, len(parts) or 1, handle.control, checksum.MAX_CHUNK_ROWS)
    needs_beat = bool(probes) or (replica is not None and config.validation_source == "replica")
    beat = HeartbeatWriter(db, handle.lock_key(), config.run_id) if needs_beat else contextlib.nullcontext()
    with beat:
        read_db = None
        if replica is not None and config.validation_source == "replica":
            read_db = _caught_up_replica(config, db, replica, handle.lock_key(), sleep, clock)
        v = checksum.validate(config, db, parts, read_db=read_db, gate=throttler.before_batch)
        v.checklist = run_checklist(config, db, v, probes or [])
    result = v.to_dict()
    handle.record("validation", f"{result['mismatched']} differing row(s) of {result['source_rows']}", result)
    return result


def _caught_up_replica(config: RunConfig, db: Database, replica: Database, heartbeat: str,
                       sleep: Callable[[float], None], clock: Callable[[], float]) -> Database | None:
    """``replica`` once the heartbeat it applied is younger than the time since validation started
    (it replayed past that moment); ``None`` (read the primary) past ``replica_wait_timeout_seconds``."""
    started = clock()
    while True:
        sleep(1.0)
        elapsed = clock() - started
        try:
            with replica.session() as conn:
                rows = replica.query(conn, replica.dialect.heartbeat_age_sql(replica.schema), (heartbeat,))
            age = float(rows[0][0]) if rows and rows[0][0] is not None else None
        except Exception as exc:  # unreachable or no heartbeat table: read the primary instead
            log.warning("validation replica unreadable (%s): validating on the primary", exc)
            return None
        if age is not None and age < elapsed:
            log.info("validation reads replica %s (heartbeat %.1fs old, validation started %.1fs ago)",
                     replica.name, age, elapsed)
            return replica
        if elapsed > config.replica_wait_timeout_seconds:
            log.warning("replica %s did not replay past the start of validation in %.0fs: validating on the "
                        "primary", replica.name, elapsed)
            return None


def repair_and_revalidate(config: RunConfig, db: Database, probes: list[LagProbe], owner: str) -> dict[str, Any]:
    """Repair the keys the last validation named, then validate the affected ranges again.

    The recorded ``ranges`` are the differing parts only; the totals after repair are the last
    validation's, with those parts' counts replaced by the re-validation's.

    :returns: ``{"repair": RepairResult dict | None, "validation": the new validation}``.
    """
    handle = RunHandle(db, config, owner)
    last, _ = handle.latest_validation()
    if last is None:
        raise PermanentError("no validation recorded: run validation before repair")
    bad = [checksum.RangeChecksum.from_dict(r) for r in last.detail.get("ranges", []) if not r["match"]]
    if not bad:
        log.info("the last validation found no difference: nothing to repair")
        return {"repair": None, "validation": last.detail}
    handle.transition(REPAIRING, f"repairing {len(bad)} range(s) with {last.detail.get('mismatched')} differing row(s)")
    ranges = [Range(r.lo, r.hi) for r in bad]

    def record(statements: list[str], counts: dict[str, int]) -> None:
        for sql in statements:
            handle.destructive("repair", sql, f"repair keys named by validation: {counts}")

    throttler = build_throttler(config, db, probes, 1, handle.control, config.batch_size)
    with HeartbeatWriter(db, handle.lock_key(), config.run_id):
        fixed = repair.repair_ranges(config, db, ranges, throttler, before_write=record)
    handle.record("repair", f"repaired {fixed.repaired}, {fixed.data_errors} data error(s)", fixed.to_dict())
    handle.transition(VALIDATING, "re-validating the repaired ranges")
    again = checksum.validate(config, db, [], ranges=ranges)
    out = dict(last.detail)
    for side in ("source_rows", "target_rows"):  # the repaired parts' counts, replaced
        out[side] = int(out.get(side, 0)) - sum(getattr(r, side) for r in bad) + getattr(again, side)
    for kind in ("missing", "different", "extra"):  # only the differing parts had differences
        out[kind] = getattr(again, kind)
    out["mismatched"] = again.mismatched
    merged = checksum.ValidationResult(source_rows=out["source_rows"], target_rows=out["target_rows"],
                                       missing=again.missing, different=again.different, extra=again.extra)
    out.update({"count_parity": merged.count_parity, "match_pct": round(merged.match_pct, 6),
                "ranges": [r.to_dict() for r in again.ranges], "ranges_mismatched": len(again.ranges),
                "ranges_unexplained": again.unexplained_ranges, "sample_keys": again.sample_keys,
                "seconds": round(again.seconds, 3), "cleared_by_recheck": again.cleared_by_recheck,
                "rechecked_keys": again.rechecked_keys})
    out["after_repair"] = True
    out["repair_data_errors"] = fixed.data_errors
    handle.record("validation", f"after repair: {out['mismatched']} differing row(s) of {out['source_rows']}", out)
    return {"repair": fixed.to_dict(), "validation": out}


# ---------------------------------------------------------------------- decision
def decide(
    config: RunConfig, db: Database, probes: list[LagProbe], owner: str,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Hold for healthy replicas, then decide forward / rollback / hold from the state table.

    Replica lag or an unreachable replica holds the run (state ``holding``) up to
    ``replica_wait_timeout_seconds``; past it the run is halted. Health never rolls back.

    :returns: ``{"decision", "next": "contract" | "rollback" | "approval", "body": Markdown for the approval page}``.
    :raises HeldTooLongError: replicas stayed behind past the deadline (the run is ``halted``).
    """
    c = config
    handle = RunHandle(db, c, owner)
    handle.transition(VALIDATING, "deciding", only_from=(VALIDATING, HOLDING, HALTED))
    if probes:
        started = clock()
        with HeartbeatWriter(db, handle.lock_key(), c.run_id):
            _hold_for_replicas(c, handle, probes, sleep, clock, started)
    last, invalidating = handle.latest_validation()
    if last is None or (invalidating is not None and invalidating.id > last.id):
        raise PermanentError("no validation of the target as it is now: run validation first")
    v = last.detail
    parts = partitions_of(c, db)
    data_errors = sum(p.data_errors for p in parts) + int(v.get("repair_data_errors", 0))
    rows = max(sum(p.keys_scanned for p in parts), int(v.get("source_rows", 0)))
    d = decide_branch(int(v.get("mismatched", 0)), data_errors, rows, c.thresholds, int(v.get("ranges_unexplained", 0)),
                      failed_data_items(v.get("checklist") or []))
    yields = sum(p.retries for p in parts)
    if d.branch == FORWARD and c.approval == "auto":
        nxt = "contract"
    elif d.branch == ROLLBACK and c.approval == "auto":
        nxt = "rollback"
    else:
        nxt = "approval"
    out = {"decision": d.to_dict(), "next": nxt, "data_errors": data_errors, "rows": rows, "yields": yields,
           "validation": {k: v.get(k) for k in ("source_rows", "target_rows", "missing", "different", "extra",
                                                "mismatched", "match_pct", "sample_keys")}}
    out["body"] = approval_body(c, db, out)
    handle.record("decision", f"{d.branch}: {'; '.join(d.reasons)}", {k: out[k] for k in out if k != "body"})
    if nxt == "approval":
        handle.transition(AWAITING_APPROVAL, f"decision {d.branch}: waiting for a human",
                          lease_seconds=c.approval_timeout_minutes * 60 + WAIT_LEASE_MARGIN_SECONDS)
    log.info("decision: %s (%s); yields (transient retries, not errors): %d; next: %s",
             d.branch, "; ".join(d.reasons), yields, nxt)
    return out


def _hold_for_replicas(c: RunConfig, handle: RunHandle, probes: list[LagProbe], sleep: Callable[[float], None],
                       clock: Callable[[], float], started: float) -> None:
    """Hold (state ``holding``) until every replica is under the forward lag threshold; halt past the deadline."""
    worst, readings = max_lag(probes)
    while worst is None or worst >= c.thresholds.forward_max_lag_seconds:
        waited = clock() - started
        if waited > c.replica_wait_timeout_seconds:
            handle.transition(HALTED, f"replicas still behind after {waited:.0f}s: {readings}")
            raise HeldTooLongError(f"replicas still behind after {waited:.0f}s ({readings}); the run holds, nothing destroyed")
        handle.transition(HOLDING, f"replica lag {readings} (forward needs < {c.thresholds.forward_max_lag_seconds}s)",
                          lease_seconds=c.replica_wait_timeout_seconds + WAIT_LEASE_MARGIN_SECONDS)
        sleep(HOLD_POLL_SECONDS)
        worst, readings = max_lag(probes)
    handle.transition(VALIDATING, f"replicas caught up: {readings}")


def heartbeat_name(config: RunConfig, db: Database) -> str:
    """The heartbeat row of a run: its lock key (``<schema>.<table>``)."""
    return RunHandle(db, config).lock_key()


def approval_body(config: RunConfig, db: Database, decision: dict[str, Any]) -> str:
    """Markdown for the approval page: the validation numbers, the repaired keys and the exact
    destructive SQL each option would run."""
    c, d = config, db.dialect
    v = decision["validation"]
    handle = RunHandle(db, c)
    repairs = [e.detail for e in handle.events("repair")]
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
        f"- repaired: {[r.get('repaired') for r in repairs] or 'nothing'}; keys: {[r.get('keys') for r in repairs] or '-'}",
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


def record_approval(config: RunConfig, db: Database, option: str, user: str, owner: str, what: str = "decision") -> str:
    """Record a human's answer in the state table; ``hold`` halts the run.

    :param option: one of :data:`APPROVAL_OPTIONS` (``decision``) or ``approve`` / ``reject`` (``drop``).
    :returns: the option.
    """
    handle = RunHandle(db, config, owner)
    handle.record("approval", f"{what}: {option} by {user}", {"what": what, "option": option, "user": user})
    if what == "decision" and option == HOLD_OPTION:
        handle.transition(HALTED, f"held by {user}: nothing changed")
    return option


def pending_decision(config: RunConfig, db: Database) -> dict[str, Any]:
    """The run's latest decision and its state now, from the state table: the approval step
    waits for a human only while the run is ``awaiting_approval``.

    :returns: ``{"state", "next", "decision", "body"}``.
    """
    handle = RunHandle(db, config)
    row = handle.row()
    decisions = handle.events("decision")
    if row is None or row.run_id != config.run_id or not decisions:
        raise PermanentError("no decision of this run is recorded: run decide first")
    d = decisions[-1].detail
    return {"state": row.state, "next": d.get("next"), "decision": d.get("decision"),
            "body": approval_body(config, db, d)}


def soak_remaining(config: RunConfig, db: Database) -> float | None:
    """Seconds of the soak left before the legacy schema may go (see :func:`zdt_backfill.lifecycle.contract.soak_remaining_seconds`)."""
    return contract.soak_remaining_seconds(config, db, RunHandle(db, config))


def renew_lease_for_wait(config: RunConfig, db: Database, seconds: float, owner: str) -> bool:
    """Extend this run's lease over a wait (a human's answer, a soak) of ``seconds``."""
    return RunHandle(db, config, owner).renew(seconds + WAIT_LEASE_MARGIN_SECONDS)


def drop_approval_body(config: RunConfig, db: Database) -> str:
    """Markdown for the legacy drop's approval page: the exact DDL it would run."""
    statements = "\n".join(f"    {s}" for s in contract.legacy_statements(config, db))
    return (f"The soak of {config.soak_minutes:g} min is over and the last validation matched exactly. "
            f"Approve to run, each with a short lock wait and retries:\n\n{statements}")


def drop_approved_by(config: RunConfig, db: Database) -> str | None:
    """Who approved the legacy drop/rename (``auto`` without approval), from the state table."""
    if config.approval == "auto":
        return "auto"
    for e in reversed(RunHandle(db, config).events("approval")):
        if e.detail.get("what") == "drop":
            return e.detail.get("user") if e.detail.get("option") == "approve" else None
    return None


# ---------------------------------------------------------------------- contract and rollback
def error_signal(config: RunConfig, db: Database) -> ErrorSignal | None:
    """The 5xx-rate signal the ramp watches, from conf (``None`` when none is configured)."""
    if config.error_signal_sql:
        return SqlErrorSignal(db, config.error_signal_sql)
    if config.error_signal_url:
        return HttpErrorSignal(config.error_signal_url, json_key=config.error_signal_json_key)
    return None


def contract_step(step: str, config: RunConfig, db: Database, store: FlagStore, owner: str) -> dict[str, Any]:
    """One contract step: ``flip_routing``, ``legacy_action``, ``reclaim_storage``, ``finish``."""
    handle = RunHandle(db, config, owner)
    if step == "flip_routing":
        return contract.flip_reads(config, db, handle, store, error_signal(config, db))
    if step == "legacy_action":
        return contract.legacy_action(config, db, handle, drop_approved_by(config, db))
    if step == "reclaim_storage":
        return contract.reclaim_storage(config, db, handle)
    if step == "finish":
        return contract.finish(config, db, handle)
    raise ValueError(f"unknown contract step {step!r}")


def rollback_step(step: str, config: RunConfig, db: Database, store: FlagStore, probes: list[LagProbe],
                  owner: str) -> dict[str, Any]:
    """One rollback step: ``stop``, ``flip_routing``, ``empty_target``, ``restore_sequences``,
    ``clear_caches``, ``finish``."""
    handle = RunHandle(db, config, owner)
    if step == "stop":
        return rollback.stop(config, db, handle, "rollback")
    if step == "flip_routing":
        if rollback.already_rolled_back(handle):
            return {"skipped": "already rolled back"}
        return contract.flip_back(config, handle, store)
    if step == "empty_target":
        return rollback.empty_target(config, db, handle, probes)
    if step == "restore_sequences":
        return {"sequences": rollback.restore_sequences(config, db, handle)}
    if step == "clear_caches":
        return rollback.clear_caches(config, handle)
    if step == "finish":
        return rollback.finish(config, db, handle)
    raise ValueError(f"unknown rollback step {step!r}")


def diagnose_run(db: Database, replicas: list[Database]) -> list[dict[str, Any]]:
    """The seed's symptom queries with verdicts (see :mod:`zdt_backfill.signals.diagnose`), as dicts with a ``line``."""
    from ..signals.diagnose import diagnose

    return [{**f.to_dict(), "line": f.line()} for f in diagnose(db, replicas)]


# ---------------------------------------------------------------------- the end
def record_failure(config: RunConfig, db: Database, owner: str, exc: BaseException) -> None:
    """Record that a task failed (best effort: the database may be what failed)."""
    try:
        handle = RunHandle(db, config, owner)
        row = handle.row()
        if row is not None and row.run_id == config.run_id:
            handle.record("failure", f"{owner}: {type(exc).__name__}: {exc}"[:2000])
    except Exception as err:  # never hide the original error
        log.warning("could not record the failure in the state table: %s", err)


def finish_run(config: RunConfig, db: Database, owner: str) -> dict[str, Any]:
    """Release the lease and say how the run ended, from the state table.

    A run not contracted or rolled back is moved to ``halted`` (copy and checkpoints kept),
    with the last recorded failure as its reason. Returns ``{"state", "reason", "success"}``:
    success only when the run contracted.
    """
    handle = RunHandle(db, config, owner)
    row = handle.row()
    if row is None or row.run_id != config.run_id:
        return {"state": None, "reason": "this run never held the lock", "success": False, "held": False}
    failures = [e.reason for e in handle.events("failure")]
    reason = row.reason or ""
    if row.state not in TERMINAL and row.state != HALTED:
        reason = f"stopped in {row.state}" + (f": {failures[-1]}" if failures else "")
    after = handle.release(None if row.state in TERMINAL else HALTED, reason)
    state = after.state if after else row.state
    return {"state": state, "reason": after.reason if after else reason, "success": state == CONTRACTED,
            "rolled_back": state == ROLLED_BACK, "held": True}


__all__ = [
    "APPROVAL_OPTIONS", "CONTRACT", "HOLD_OPTION", "ROLL_BACK", "approval_body", "confirm_dual_write",
    "contract_step", "copy_partition", "drop_approval_body", "dry_run", "pending_decision", "renew_lease_for_wait", "soak_remaining", "decide", "drop_approved_by", "finish_run", "partitions_of",
    "record_approval", "record_failure", "repair_and_revalidate", "rollback_step", "run_preflight", "start_catchup", "validate",
]
