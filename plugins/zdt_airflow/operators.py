"""Operators of the zero-downtime backfill DAG.

Each operator is thin, in the manner of Airflow's providers: it reads the run's
:class:`~zdt_backfill.config.RunConfig` from ``context["params"]``, opens the database
through :class:`~zdt_airflow.hooks.BackfillHook`, calls one engine function, logs what
happened and returns a JSON-ready dict (its XCom). Engine errors that a retry cannot
fix (bad input, failed pre-flight, a concurrent run) become ``AirflowFailException``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from zdt_airflow.hooks import BackfillHook
from zdt_backfill import checksum, contract, dualwrite, preflight, report, rollback
from zdt_backfill.checkpoint import CheckpointStore
from zdt_backfill.chunker import Chunk, Partition
from zdt_backfill.config import RunConfig
from zdt_backfill.copier import PartitionCopier
from zdt_backfill.db import Database
from zdt_backfill.decision import decide_branch
from zdt_backfill.errors import PermanentError
from zdt_backfill.lag import ReplicaStatusProbe, max_lag

#: Task ids inside the DAG (group-prefixed); the branch and the report refer to them.
PREFLIGHT_TASK = "preflight.check"
DUAL_WRITE_TASK = "dual_write.confirm"
BACKFILL_TASK = "backfill.copy_partition"
VALIDATE_TASK = "validation.checksum"
DECIDE_TASK = "decide"
CONTRACT_FIRST = "contract.flip_routing"
CONTRACT_LAST = "contract.reclaim_storage"
ROLLBACK_FIRST = "rollback.stop_backfill"
ROLLBACK_LAST = "rollback.clear_caches"


def fail_permanent(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the engine's :class:`PermanentError` into ``AirflowFailException`` (no retries)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PermanentError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


class BackfillOperator(BaseOperator):
    """Base: builds the run config, the database and the replica probes from context."""

    ui_color = "#e8f4ea"

    @fail_permanent
    def execute(self, context: Context) -> Any:
        config = RunConfig.from_params(context["params"], run_id=context["run_id"])
        return self.run(config, self.database(config), context)

    def run(self, config: RunConfig, db: Database, context: Context) -> Any:
        raise NotImplementedError

    @staticmethod
    def database(config: RunConfig) -> Database:
        return BackfillHook(config.conn_id, config.schema).get_database()

    @staticmethod
    @contextlib.contextmanager
    def probes(config: RunConfig) -> Iterator[list[ReplicaStatusProbe]]:
        """Lag probes of the run's replicas, closed when the block ends."""
        probes = [ReplicaStatusProbe(BackfillHook(c).get_database()) for c in config.replica_conn_ids]
        try:
            yield probes
        finally:
            for p in probes:
                p.close()


class PreflightOperator(BackfillOperator):
    """Read-only checks, partition planning, then the run lock.

    Returns the partition list (the return value is what dynamic task mapping expands
    over) and pushes the whole plan under the XCom key ``plan``."""

    def run(self, config, db, context):
        self.log.info("resolved config: %s", config.to_dict())
        with self.probes(config) as probes:
            plan = preflight.run_preflight(config, db, probes)
        out = plan.to_dict()
        out["started_at"] = time.time()
        out["config"] = config.to_dict()
        self.log.info(
            "plan: keys %s..%s (~%s rows) in %d partition(s) of batches of %d rows, key index %s",
            plan.min_key, plan.max_key, plan.rows_estimate, len(plan.partitions), config.batch_size, plan.key_index,
        )
        context["ti"].xcom_push(key="plan", value=out)
        return plan.partitions


class DualWriteOperator(BackfillOperator):
    """Confirms the application writes both schemas (or records ``assumed``)."""

    def run(self, config, db, context):
        result = dualwrite.confirm_dual_write(config, db)
        self.log.info("dual-write: %s", result.detail)
        return result.to_dict()


class PartitionBackfillOperator(BackfillOperator):
    """Copies one key-range partition in keyset batches; resumes from its checkpoint on retry.

    :param partition: ``{"index", "lo", "hi", "label"}`` from pre-flight (mapped).
    """

    template_fields = ("partition",)

    def __init__(self, *, partition: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition = partition

    def run(self, config, db, context):
        part = Partition.from_dict(self.partition)
        context["partition_label"] = part.label  # for map_index_template
        plan = context["ti"].xcom_pull(task_ids=PREFLIGHT_TASK, key="plan") or {}
        started = time.monotonic()

        def on_batch(progress, chunk: Chunk, rows: int, seconds: float) -> None:
            done = progress.watermark - part.lo + 1
            span = part.hi - part.lo + 1
            elapsed = time.monotonic() - started
            eta = elapsed * (span - done) / done if done else 0
            self.log.info(
                "batch %d keys (%d, %d]: %d rows in %.3fs (%.0f rows/s); partition %.1f%% done, ETA %.0fs",
                progress.batches, chunk.lo, chunk.hi, rows, seconds, rows / seconds if seconds else 0,
                100.0 * done / span, eta,
            )

        with self.probes(config) as probes:
            result = PartitionCopier(config, db, part, plan.get("key_index"), probes, on_batch).run()
        self.log.info(
            "partition %s done: %d rows in %d batches this attempt (%.1fs), %d retries, throttled %s",
            part.label, result.attempt_rows, result.attempt_batches, result.attempt_seconds, result.retries,
            result.throttled_seconds or "never",
        )
        return result.to_dict()


class ValidateOperator(BackfillOperator):
    """Row-count parity and per-partition checksums of source projection vs target."""

    def run(self, config, db, context):
        parts = context["ti"].xcom_pull(task_ids=PREFLIGHT_TASK) or []
        result = checksum.validate(config, db, [Partition.from_dict(p) for p in parts])
        return result.to_dict()


class DecideBranchOperator(BaseBranchOperator, BackfillOperator):
    """Branches to contract or rollback on the seed's thresholds (see :mod:`zdt_backfill.decision`)."""

    @fail_permanent
    def choose_branch(self, context: Context) -> str:
        config = RunConfig.from_params(context["params"], run_id=context["run_id"])
        ti = context["ti"]
        validation = ti.xcom_pull(task_ids=VALIDATE_TASK) or {}
        db = self.database(config)
        with db.session() as conn:
            progress = CheckpointStore(db).progress(conn, config.run_id)
        errors = sum(p.retries for p in progress)
        rows = sum(p.keys_scanned for p in progress)
        with self.probes(config) as probes:
            lag, readings = max_lag(probes) if probes else (0.0, {})
        d = decide_branch(
            validation.get("match_pct", 0.0), validation.get("count_parity", False), errors, rows, lag,
            config.thresholds, unexplained_ranges=validation.get("ranges_unexplained", 1),
        )
        self.log.info("decision: %s because %s (replicas: %s)", d.branch, "; ".join(d.reasons), readings)
        ti.xcom_push(key="decision", value={**d.to_dict(), "lag_seconds": lag, "errors": errors, "rows": rows})
        return CONTRACT_FIRST if d.branch == "contract" else ROLLBACK_FIRST


class StepOperator(BackfillOperator):
    """Runs one named step of a phase; subclasses map step names to engine calls in ``STEPS``."""

    STEPS: dict[str, Callable[[RunConfig, Database, Context], Any]] = {}

    def __init__(self, *, step: str, **kwargs: Any) -> None:
        if step not in self.STEPS:
            raise ValueError(f"step must be one of {sorted(self.STEPS)}, got {step!r}")
        super().__init__(**kwargs)
        self.step = step

    def run(self, config, db, context):
        return self.STEPS[self.step](config, db, context)


class ContractOperator(StepOperator):
    """One contract step: ``flip_routing`` (to ``new``), ``drop_legacy`` (only if conf asks), ``reclaim_storage``."""

    STEPS = {
        "flip_routing": lambda config, db, ctx: contract.flip_routing(config, db, contract.NEW),
        "drop_legacy": lambda config, db, ctx: contract.drop_legacy(
            config, db, (ctx["ti"].xcom_pull(task_ids=VALIDATE_TASK) or {}).get("mismatched", 1)
        ),
        "reclaim_storage": lambda config, db, ctx: contract.reclaim_storage(config, db),
    }


class RollbackOperator(StepOperator):
    """One rollback step: ``stop``, ``flip_routing`` (back to ``legacy``), ``empty_target``,
    ``reset_sequences``, ``clear_caches``."""

    STEPS = {
        "stop": lambda config, db, ctx: {"stopped": rollback.stop(config, db)},
        "flip_routing": lambda config, db, ctx: contract.flip_routing(config, db, contract.LEGACY),
        "empty_target": lambda config, db, ctx: rollback.empty_target(config, db),
        "reset_sequences": lambda config, db, ctx: {"sequences": rollback.reset_sequences(config, db)},
        "clear_caches": lambda config, db, ctx: rollback.clear_caches(config),
    }


class ReportOperator(BackfillOperator):
    """Writes the run report (JSON + Markdown) and releases the run lock.

    Runs as the teardown of pre-flight, so it runs whatever happened in between and the
    DAG run's state still reflects failures upstream. The report goes to
    ``$AIRFLOW_HOME/backfill_reports/<run_id>/`` (or ``reports_dir``) and into the task log.
    """

    def __init__(self, *, reports_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reports_dir = reports_dir

    def run(self, config, db, context):
        ti = context["ti"]
        plan = ti.xcom_pull(task_ids=PREFLIGHT_TASK, key="plan") or {}
        decision = ti.xcom_pull(task_ids=DECIDE_TASK, key="decision")
        contracted = ti.xcom_pull(task_ids=CONTRACT_LAST)
        rolled_back = ti.xcom_pull(task_ids=ROLLBACK_LAST)
        parts = ti.xcom_pull(task_ids=BACKFILL_TASK) or []
        if isinstance(parts, dict):
            parts = [parts]
        throttled: dict[str, float] = {}
        max_lag_seen = 0.0
        for p in parts:
            if not p:
                continue
            for reason, s in (p.get("throttled_seconds") or {}).items():
                throttled[reason] = throttled.get(reason, 0.0) + s
            max_lag_seen = max(max_lag_seen, p.get("max_replica_lag_seconds") or 0.0)
        if decision and decision.get("lag_seconds") is not None:
            max_lag_seen = max(max_lag_seen, decision["lag_seconds"])
        outcome: dict[str, Any]
        if contracted is not None:
            state = "contracted"
            outcome = {"state": state, "contract": {
                "flip_routing": ti.xcom_pull(task_ids=CONTRACT_FIRST),
                "drop_legacy": ti.xcom_pull(task_ids="contract.drop_legacy"),
                "reclaim_storage": contracted,
            }}
        elif rolled_back is not None:
            state = "rolled_back"
            outcome = {"state": state, "rollback": {
                step: ti.xcom_pull(task_ids=f"rollback.{tid}") for step, tid in (
                    ("flip_routing", "flip_routing_back"), ("empty_target", "empty_target"),
                    ("reset_sequences", "reset_sequences"), ("clear_caches", "clear_caches"))
            }}
        else:
            state = "failed"
            outcome = {"state": state, "hint": "a task failed before contract/rollback finished; see its log. "
                       "Clear the failed partitions to resume from their checkpoints."}
        released = contract.finish(config, db, state)
        outcome["lock_released"] = released
        with db.session() as conn:
            store = CheckpointStore(db)
            progress = store.progress(conn, config.run_id)
            span = store.span_seconds(conn, config.run_id)
        r = report.summarize(
            config=config.to_dict(), plan=plan, partitions=progress,
            dual_write=ti.xcom_pull(task_ids=DUAL_WRITE_TASK), validation=ti.xcom_pull(task_ids=VALIDATE_TASK),
            decision=decision, outcome=outcome, wall_seconds=time.time() - plan.get("started_at", time.time()),
            throttled=throttled, max_lag_seconds=round(max_lag_seen, 3), backfill_seconds=span,
        )
        reports_dir = Path(self.reports_dir or os.path.join(os.environ.get("AIRFLOW_HOME", "."), "backfill_reports"))
        out = report.write(r, reports_dir)
        self.log.info("run report written to %s\n%s", out, report.to_markdown(r))
        return {"report_dir": str(out), "state": state, "rows_per_second": r["rows_per_second"], "branch": r["branch"]}
