"""Operators of the zero-downtime backfill DAG.

Each operator is thin, in the manner of Airflow's providers: it reads the run's
:class:`~zdt_backfill.config.RunConfig` from ``context["params"]``, builds the run's
:class:`~zdt_backfill.lifecycle.Runner` over the database of :class:`~zdt_airflow.hooks.BackfillHook`,
calls one Runner method, logs what happened and returns a JSON-ready dict (its XCom). Every
decision and precondition is read by the engine from the run-state table, never from an XCom.
Engine errors that a retry cannot fix (bad input, failed pre-flight, a concurrent run, a refused
step) become ``AirflowFailException``; every failure is recorded in the run-state table first.
Whether a task renews the run's lease while it works is the steps table's
(:data:`zdt_backfill.state.runstate.STEPS`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator
from airflow.sdk import BaseOperator, BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from zdt_airflow import metrics
from zdt_airflow.control import variable_control
from zdt_airflow.flagstores import flag_store_for
from zdt_airflow.hooks import BackfillHook, with_connections
from zdt_backfill import lifecycle, report
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Chunk, Partition
from zdt_backfill.db import Database
from zdt_backfill.errors import PermanentError
from zdt_backfill.lifecycle import Runner
from zdt_backfill.signals.lag import PROBE_TIMEOUT_SECONDS, ReplicaLagProbe
from zdt_backfill.state.runstate import STEPS

#: How often the main thread wakes while a step runs in its worker thread (s): the longest
#: Airflow's SIGTERM handler waits before it runs.
WORKER_JOIN_SECONDS = 0.2
#: How long ``on_kill`` waits for the stopped step to end (s).
ON_KILL_WAIT_SECONDS = 20.0

#: Task ids inside the DAG (group-prefixed).
PREFLIGHT_TASK = "preflight.check"
DECIDE_TASK = "decide"
CONTRACT_FIRST = "contract.flip_routing"
ROLLBACK_FIRST = "rollback.stop_backfill"
HOLD_TASK = "approval.hold"


def fail_permanent(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the engine's :class:`PermanentError` into ``AirflowFailException`` (no retries)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PermanentError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def config_and_db(context: Context) -> tuple[RunConfig, Database]:
    """The run's :class:`RunConfig` (from ``context["params"]``) and its database."""
    config = with_connections(RunConfig.from_params(context["params"], run_id=context["run_id"]))
    return config, BackfillHook(config.conn_id, config.schema).get_database()


def runner_for(context: Context) -> Runner:
    """The run's :class:`~zdt_backfill.lifecycle.Runner` for this task: its config and database, the
    routing flag store, and the Airflow Variable's live control (no replica probes: see
    :func:`probes`)."""
    config, db = config_and_db(context)
    return Runner(config, db, owner=owner_of(context),
                  flag_store=flag_store_for(config.flag_store, db, config.flag_store_url),
                  control=variable_control(config.target_table))


@contextlib.contextmanager
def probes(runner: Runner, heartbeat: bool = True) -> Iterator[list[ReplicaLagProbe]]:
    """Lag probes of the run's replicas, with connect and read timeouts, reading the run's heartbeat
    row (``heartbeat``; pre-flight has none yet), set on ``runner`` and closed when the block ends."""
    c = runner.config
    name = runner.heartbeat_name if heartbeat else None
    found = [ReplicaLagProbe(BackfillHook(conn_id, c.schema).get_probe_database(PROBE_TIMEOUT_SECONDS), name)
             for conn_id in c.replica_conn_ids]
    runner.probes = list(found)
    try:
        yield found
    finally:
        runner.probes = []
        for p in found:
            p.close()


def responder(event: dict[str, Any]) -> str | None:
    """Who answered a human-in-the-loop request; ``None`` when it timed out (nothing chosen by a human)."""
    if "error" in event or event.get("timedout"):
        return None
    return (event.get("responded_by_user") or {}).get("name", "unknown")


def owner_of(context: Context) -> str:
    """``task_id[map_index]#try``: who holds the lease while this task works."""
    ti = context["ti"]
    index = getattr(ti, "map_index", -1)
    return f"{ti.task_id}{f'[{index}]' if index is not None and index >= 0 else ''}#{getattr(ti, 'try_number', 0)}"


class BackfillOperator(BaseOperator):
    """Base: builds the run's Runner from context, keeps the lease as the steps table says for
    :attr:`step`, and records failures."""

    ui_color = "#e8f4ea"
    #: The step of :data:`~zdt_backfill.state.runstate.STEPS` this task does (its lease rule).
    run_step = "copy"

    @fail_permanent
    def execute(self, context: Context) -> Any:
        runner = self._runner = runner_for(context)
        try:
            with runner.lease_kept(STEPS[self.run_step].keeps_lease):
                return self._in_worker(lambda: self.run(runner, context))
        except Exception as exc:
            runner.record_failure(exc)
            raise
        finally:
            self._runner = None

    def run(self, runner: Runner, context: Context) -> Any:
        raise NotImplementedError

    def _in_worker(self, fn: Callable[[], Any]) -> Any:
        """Run the step in a worker thread while this (the main) thread waits in short joins, so
        Airflow's SIGTERM handler, which runs in the main thread between bytecodes, calls
        :meth:`on_kill` at once even while a driver is blocked in C on a statement (mysqlclient
        never returns to Python until its statement ends). The step's context variables go with it."""
        box: dict[str, Any] = {}
        ctx = contextvars.copy_context()

        def target() -> None:
            try:
                box["result"] = ctx.run(fn)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                box["error"] = exc

        worker = self._worker = threading.Thread(target=target, name=f"zdt-{self.task_id}", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(WORKER_JOIN_SECONDS)
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def on_kill(self) -> None:
        """Airflow told the task to stop (SIGTERM: *mark failed*, a worker's warm shutdown; or
        ``execution_timeout``): cancel the statement in flight and stop the step's loop now
        (:meth:`~zdt_backfill.lifecycle.Runner.stop`). The task then fails with
        ``CancelledError``; a retry resumes from the last committed checkpoint."""
        runner = getattr(self, "_runner", None)
        if runner is not None:
            self.log.warning("on_kill: stopping %s (the statement in flight is cancelled)", self.task_id)
            runner.stop(f"Airflow stopped task {self.task_id} (on_kill)")
            worker = getattr(self, "_worker", None)
            if worker is not None and worker is not threading.current_thread():
                # After an execution_timeout the main thread no longer waits: let the step end
                # (its batch rolled back, its attempt recorded) before the task process exits.
                worker.join(ON_KILL_WAIT_SECONDS)


class PreflightOperator(BackfillOperator):
    """Read-only checks, partition planning, then the run lock (or the takeover of a dead run).

    Returns the partition list (the return value is what dynamic task mapping expands
    over) and pushes the whole plan under the XCom key ``plan`` for display."""

    run_step = "preflight"

    def __init__(self, *, pre_check: Callable[[RunConfig], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pre_check = pre_check

    def run(self, runner, context):
        import time

        config = runner.config
        self.log.info("config: %s", config.describe())
        if self.pre_check is not None:
            self.pre_check(config)  # raises to refuse; nothing has been read or written yet
        if config.dry_run:
            import json

            from airflow.sdk.exceptions import AirflowSkipException

            out = runner.dry_run()
            context["ti"].xcom_push(key="dry_run", value=out)
            self.log.info("dry run (nothing written):\n%s", json.dumps(out, indent=2, default=str))
            raise AirflowSkipException("dry run: the plan is in this log and in XCom 'dry_run'; nothing was written")
        if config.parity_conn_id:
            runner.parity_db = BackfillHook(config.parity_conn_id, config.schema).get_database()
        with probes(runner, heartbeat=False):
            plan = runner.preflight()
        self.log.info(
            "plan: keys %s..%s (~%s rows) in %d partition(s) of batches of %d rows, key index %s; lock: %s",
            plan["min_key"], plan["max_key"], plan["rows_estimate"], len(plan["partitions"]), config.batch_size,
            plan["key_index"], plan["lock"],
        )
        context["ti"].xcom_push(key="plan", value={**plan, "started_at": time.time()})
        return plan["partitions"]


class DualWriteOperator(BackfillOperator):
    """Confirms the application writes both schemas (or records ``assumed``)."""

    run_step = "dual_write"

    def run(self, runner, context):
        result = runner.confirm_dual_write()
        self.log.info("dual-write: %s", result["detail"])
        return result


class PartitionBackfillOperator(BackfillOperator):
    """Copies one key-range partition in keyset batches; resumes from its checkpoint on retry.

    :param partition: ``{"index", "lo", "hi", "label"}`` and, when the plan estimated them, its
        ``"rows"``, from pre-flight (mapped).
    """

    template_fields = ("partition",)
    run_step = "copy"

    def __init__(self, *, partition: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition = partition

    def run(self, runner, context):
        table = runner.config.target_table
        part = Partition.from_dict(self.partition)
        context["partition_label"] = part.label  # for map_index_template

        def on_batch(progress, chunk: Chunk, rows: int, seconds: float) -> None:
            # the batch line, the run's progress and the summary in words are the engine's log lines
            metrics.batch(table, f"p{part.index}", rows, seconds)

        runner.on_batch = on_batch
        with probes(runner):
            result = runner.copy_partition(self.partition)
        metrics.partition_attempt(table, f"p{part.index}", result)
        return result


class ValidateOperator(BackfillOperator):
    """Row counts and per-range checksums of source projection vs target; recorded in the state table."""

    run_step = "validate"

    def run(self, runner, context):
        c = runner.config
        if c.validation_source == "replica":
            runner.replica = BackfillHook(c.replica_conn_ids[0], c.schema).get_database()
        with probes(runner):
            return runner.validate()


class RepairOperator(BackfillOperator):
    """Repairs the keys validation named, then re-validates the affected ranges."""

    run_step = "repair"

    def run(self, runner, context):
        with probes(runner):
            return runner.repair()


class DecideOperator(BackfillOperator):
    """Holds for healthy replicas, then decides forward / rollback / hold (see :mod:`zdt_backfill.lifecycle.decision`)."""

    run_step = "decide"

    def run(self, runner, context):
        with probes(runner):
            out = runner.decide()
        d = out["decision"]
        self.log.info("decision: %s (%s); next: %s\n%s", d.get("branch"), "; ".join(d.get("reasons") or []) or
                      "no reason given", out["next"], out["body"])
        return out


class ApprovalBranchOperator(HITLBranchOperator):
    """Approval before anything destructive, with Airflow's human-in-the-loop branch operator.

    The options are ``contract``, ``roll back`` and ``hold``. The page shows the validation
    numbers, the repaired keys and the exact destructive SQL of each option. While the run is
    not ``awaiting_approval`` in the state table (``approval: auto`` and a clear decision), the
    step takes the decision's branch at once. A timeout takes ``hold`` (nothing destroyed).
    """

    template_fields = ("subject", "body")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            subject="Zero-downtime backfill: contract, roll back or hold?",
            body="{{ ti.xcom_pull(task_ids='decide')['body'] if ti.xcom_pull(task_ids='decide') else '' }}",
            options=list(lifecycle.APPROVAL_OPTIONS),
            defaults=[lifecycle.HOLD_OPTION],
            options_mapping={lifecycle.CONTRACT: CONTRACT_FIRST, lifecycle.ROLL_BACK: ROLLBACK_FIRST,
                             lifecycle.HOLD_OPTION: HOLD_TASK},
            **kwargs,
        )

    @fail_permanent
    def execute(self, context: Context) -> Any:
        runner = runner_for(context)
        config = runner.config
        pending = runner.pending_decision()
        if pending["state"] != "awaiting_approval":
            branch = {"contract": CONTRACT_FIRST, "rollback": ROLLBACK_FIRST}.get(pending["next"], HOLD_TASK)
            runner.record_approval(pending["next"], "auto")
            self.log.info("approval: auto (%s): %s", pending["decision"], branch)
            return self.do_branch(context, branch)
        self.response_timeout = timedelta(minutes=config.approval_timeout_minutes)
        self.body = pending["body"]
        self.log.info("waiting up to %s for a human's answer:\n%s", self.response_timeout, self.body)
        return super().execute(context)

    @fail_permanent
    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        runner = runner_for(context)
        user = responder(event)
        if user is None:  # a timeout: hold, nothing destroyed
            event, user = {**event, "chosen_options": [lifecycle.HOLD_OPTION]}, "timeout"
        option = event["chosen_options"][0]
        runner.record_approval(option, user)
        self.log.info("approval: %s by %s", option, user)
        return self.do_branch(context, self.options_mapping[option])


class DropApprovalOperator(ApprovalOperator):
    """Its own approval for ``legacy_action`` ``rename`` / ``drop``, after the soak.

    With ``approval: auto`` or ``legacy_action: keep`` it approves at once (recorded). A
    Reject (or a timeout) keeps the legacy schema; the run still ends contracted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(subject="Zero-downtime backfill: drop or rename the legacy schema?",
                         body="", defaults=[ApprovalOperator.REJECT], **kwargs)

    @fail_permanent
    def execute(self, context: Context) -> Any:
        runner = runner_for(context)
        config = runner.config
        if config.approval == "auto" or config.legacy_action == "keep":
            self.log.info("legacy_action=%s, approval=%s: no human needed", config.legacy_action, config.approval)
            return {"chosen_options": [self.APPROVE], "auto": True}
        self.body = runner.drop_approval_body()
        self.response_timeout = timedelta(minutes=config.approval_timeout_minutes)
        runner.renew_lease_for_wait(config.approval_timeout_minutes * 60)
        return super().execute(context)

    @fail_permanent
    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        user = responder(event)
        option = "approve" if user is not None and event["chosen_options"][0] == self.APPROVE else "reject"
        user = user or "timeout"
        runner_for(context).record_approval(option, user, what="drop")
        return {"chosen_options": [self.APPROVE if option == "approve" else self.REJECT], "user": user}


class SoakSensor(BaseSensorOperator):
    """Waits out the soak between the application writing the new schema only and the legacy
    drop, deferred to the triggerer (no worker slot). The end is read from the state table."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    @fail_permanent
    def execute(self, context: Context) -> Any:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger
        from airflow.sdk.timezone import utcnow

        config = RunConfig.from_params(context["params"], run_id=context["run_id"])
        if config.legacy_action == "keep":
            self.log.info("legacy_action is keep: nothing waits for the soak")
            return {"soaked": False}
        left = runner_for(context).soak_remaining()
        if left is None:
            raise AirflowFailException("the writes were never flipped to the new schema: nothing to soak")
        if left <= 0:
            return {"soaked": True}
        self.log.info("soaking %.0f s more before the legacy schema may go", left)
        self.defer(trigger=DateTimeTrigger(moment=utcnow() + timedelta(seconds=left)), method_name="execute_complete")

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        return {"soaked": True}


class StepOperator(BackfillOperator):
    """Runs one named step of a phase; subclasses list their step names in ``STEPS``."""

    STEPS: tuple[str, ...] = ()
    run_step = "rollback"

    def __init__(self, *, step: str, **kwargs: Any) -> None:
        if step not in self.STEPS:
            raise ValueError(f"step must be one of {self.STEPS}, got {step!r}")
        super().__init__(**kwargs)
        self.step = step


class ContractOperator(StepOperator):
    """One contract step: ``flip_routing``, ``legacy_action``, ``reclaim_storage``, ``finish``."""

    STEPS = lifecycle.CONTRACT_STEPS
    run_step = "flip_routing"

    def run(self, runner, context):
        return runner.contract_step(self.step)


class RollbackOperator(StepOperator):
    """One rollback step: ``stop``, ``flip_routing`` (back to legacy), ``empty_target``,
    ``restore_sequences``, ``clear_caches``, ``finish``."""

    STEPS = lifecycle.ROLLBACK_STEPS

    def run(self, runner, context):
        with probes(runner):
            return runner.rollback_step(self.step)


class DiagnoseOperator(BackfillOperator):
    """The seed's symptom queries with verdicts (lock waits, replication lag, row-lock
    contention, connections, the backfill's own sessions), logged for the operator. Read-only,
    and it never fails the run: a diagnostic that cannot run says so in its finding."""

    run_step = "diagnose"

    def run(self, runner, context):
        config = runner.config
        try:
            replicas = [BackfillHook(c, config.schema).get_probe_database(PROBE_TIMEOUT_SECONDS)
                        for c in config.replica_conn_ids]
            findings = runner.diagnose(replicas)
        except Exception as exc:
            self.log.warning("diagnose could not run: %s", exc)
            return {"error": str(exc)}
        for f in findings:
            self.log.info("%s", f["line"])
        return {"findings": findings}


class ReportOperator(BackfillOperator):
    """Releases the lease, writes the run report (JSON + Markdown), and fails the Airflow run
    unless the run contracted.

    Runs as the teardown of pre-flight with ``on_failure_fail_dagrun``, so the DagRun ends
    *success* only when the state table says ``contracted``: a rollback, a halt, a hold or a
    failure anywhere ends *failed*, and Airflow's failure callbacks fire. The report is built
    from the state tables (:func:`zdt_backfill.report.from_state`) and stored as a row of
    ``zdt_backfill_reports`` in the target database, reachable from every worker; a copy goes
    to ``$AIRFLOW_HOME/backfill_reports/<run_id>/`` (or ``reports_dir``) on this worker. The
    task log prints the summary and where the report is; the DAG run's note gets the summary
    through the REST API when the ``zdt_airflow_api`` connection exists
    (:mod:`zdt_airflow.notes`). ``post_report(config, db, report)``, when given, may add to
    the report before it is stored (the staging rehearsal's comparison and restore).
    """

    def __init__(self, *, reports_dir: str | None = None,
                 post_report: Callable[[RunConfig, Database, dict[str, Any]], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reports_dir = reports_dir
        self.post_report = post_report

    run_step = "report"

    @fail_permanent
    def execute(self, context: Context) -> Any:  # no failure event: this task *reports* the ending
        return self.run(runner_for(context), context)

    def run(self, runner, context):
        from zdt_airflow import notes

        config = runner.config
        reports_dir = Path(self.reports_dir or os.path.join(os.environ.get("AIRFLOW_HOME", "."), "backfill_reports"))
        out = runner.report(reports_dir, self.post_report)
        ending, r = out["ending"], out["report"]
        if r is None:
            raise AirflowFailException(f"no report: {ending['reason']}")
        where, line = out["where"], out["summary"]
        metrics.run_report(config.target_table, r)
        self.log.info("%s", line)
        self.log.info("report stored in the target database (connection %s): %s; local copy on this worker: %s",
                      config.conn_id, where, out["dir"])
        self.log.info("the report as HTML with its charts (rows/s per partition, replica lag with the gate, "
                      "throttled periods shaded): column report_html of %s, and %s", where, out["dir"] / "report.html")
        self.log.info("report:\n%s", report.to_markdown(r))
        dag_run = context.get("dag_run")
        note = f"{line}\nReport: {where} on connection {config.conn_id}."
        outcome = notes.set_dag_run_note(getattr(dag_run, "dag_id", None) or context["dag"].dag_id,
                                         context["run_id"], note, notes.api_settings())
        self.log.info("DAG run note %s", outcome)
        post_error = out["post_error"]
        if post_error is not None:
            raise AirflowFailException(f"after the report: {type(post_error).__name__}: {post_error} (report: {where})")
        if not ending["success"]:
            raise AirflowFailException(f"the run ended {ending['state']}: {ending['reason']} (report: {where})")
        return {"report_dir": str(out["dir"]), "report": where, "state": ending["state"],
                "rows_per_second": r["rows_per_second"]}
