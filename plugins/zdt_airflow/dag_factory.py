"""Builds the zero-downtime backfill DAG: the expand/contract compatibility windows as task groups.

    preflight.check (setup: takes the run lock, or takes over a dead run and resumes it)
      -> dual_write.confirm
      -> backfill.copy_partition  (mapped: one task per key-range partition)
      -> replica_catchup.wait_for_replicas  (deferrable)
      -> validation.checksum -> validation.repair (repairs named keys, re-validates)
      -> decide  (holds for lagging replicas; forward / rollback / hold from the state table)
      -> approval.review  (human-in-the-loop branch: contract | roll back | hold; auto when allowed)
           -> contract.flip_routing (1 % ramp watched, 100 %, writes new only) -> contract.soak (deferrable)
              -> contract.approve_drop -> contract.legacy_action -> contract.reclaim_storage -> contract.finish
           -> rollback.stop_backfill -> rollback.flip_routing_back -> rollback.empty_target
              -> rollback.restore_sequences -> rollback.clear_caches -> rollback.finish
           -> approval.hold
      -> report.diagnose  (the seed's symptom queries with verdicts; never fails)
      -> report.write_report  (teardown of preflight: releases the lease, writes the report, and
                               fails the run unless it contracted)

One factory so ``zero_downtime_backfill`` and a scheduled staging rehearsal share
every task and differ only in their defaults and schedule.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from zdt_airflow.operators import (
    ApprovalBranchOperator,
    ContractOperator,
    DecideOperator,
    DiagnoseOperator,
    DropApprovalOperator,
    DualWriteOperator,
    PartitionBackfillOperator,
    PreflightOperator,
    RepairOperator,
    ReportOperator,
    RollbackOperator,
    SoakSensor,
    ValidateOperator,
)
from zdt_airflow.sensors import ReplicaLagSensor
from zdt_backfill.config import RunConfig
from zdt_backfill.fields import FIELD_LIST, demo_defaults

#: Each Param's schema names JSON Schema draft-07 (every keyword the form uses is in it). Airflow
#: validates a Param with ``jsonschema.validate``, which first checks the schema against its
#: metaschema, and it does so each time a DAG is serialized (by every operator's params
#: comparison and repr): about 250 times per ``airflow dags test`` of this DAG's 55 fields, and on
#: every parse by the DAG processor. Draft-07's metaschema checks 3.3x faster than the default
#: 2020-12 one (0.25 vs 0.82 ms a field, measured here); issue 9's profile of ``airflow dags test``
#: found this validation to be the largest part of the DAG's fixed cost.
PARAM_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

#: Defaults of the demo: the embedded PostgreSQL primary + replica that `make demo` starts.
DEMO_DEFAULTS: dict[str, Any] = demo_defaults()


def build_params(defaults: dict[str, Any]) -> dict[str, Param]:
    """The trigger form: one Param per conf field of :data:`zdt_backfill.fields.FIELDS`, titled,
    described, sectioned and bounded as declared there, valued from ``defaults`` over the demo's.

    :param defaults: a DAG's own form values (the staging rehearsal's), by field name.
    :returns: ``{field name: Param}`` in the declaration's (the form's) order.
    """
    return {f.name: Param(f.form_value(defaults), title=f.title, description=f.description, section=f.section,
                          **{"$schema": PARAM_SCHEMA_DIALECT, **f.form_schema()})
            for f in FIELD_LIST}


def build_backfill_dag(
    dag_id: str,
    defaults: dict[str, Any] | None = None,
    schedule: Any = None,
    tags: list[str] | None = None,
    description: str = "Zero-downtime backfill through the expand/contract compatibility windows",
    partition_retries: int = 3,
    post_report: Callable[..., None] | None = None,
    pre_check: Callable[[RunConfig], None] | None = None,
) -> DAG:
    """Build the backfill DAG.

    :param dag_id: the DAG id.
    :param defaults: Param defaults overriding :data:`DEMO_DEFAULTS`.
    :param schedule: ``None`` for manual runs; a cron string for rehearsals.
    :param partition_retries: retries of each partition task (each resumes from its checkpoint).
    :param post_report: ``(config, db, report)`` called by the report task before the report is
        stored (the staging rehearsal's restore and comparison; see :mod:`zdt_airflow.rehearsal`).
    :param pre_check: ``(config)`` called by pre-flight before anything else; it raises to refuse
        the run (the staging rehearsal's :func:`~zdt_airflow.rehearsal.require_staging`).
    """
    with DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=None,
        catchup=False,
        max_active_runs=1,
        params=build_params(defaults or {}),
        render_template_as_native_obj=True,
        tags=tags or ["backfill", "expand-contract", "zero-downtime"],
        default_args={"retries": 0, "owner": "platform"},
        doc_md=__doc__,
    ) as dag:
        with TaskGroup("preflight", tooltip="Read-only checks, partition plan, run lock"):
            check = PreflightOperator(task_id="check", pre_check=pre_check)
        with TaskGroup("dual_write", tooltip="Application writes both schemas"):
            confirm = DualWriteOperator(task_id="confirm")
        with TaskGroup("backfill", tooltip="Keyset batches per key-range partition"):
            copy = PartitionBackfillOperator.partial(
                task_id="copy_partition",
                retries=partition_retries,
                retry_delay=timedelta(seconds=5),
                retry_exponential_backoff=True,
                map_index_template="{{ partition_label }}",
            ).expand(partition=check.output)
        with TaskGroup("replica_catchup", tooltip="Replicas under the forward lag threshold"):
            # NONE_FAILED: an empty source maps zero partitions (skipped); validation still runs.
            catchup = ReplicaLagSensor(
                task_id="wait_for_replicas", deferrable=True, poll_interval=1.0, trigger_rule=TriggerRule.NONE_FAILED
            )
        with TaskGroup("validation", tooltip="Checksums in the database, repair of the named keys, re-validation"):
            validate = ValidateOperator(task_id="checksum")
            fix = RepairOperator(task_id="repair")
            validate >> fix
        decide = DecideOperator(task_id="decide")
        with TaskGroup("approval", tooltip="Contract, roll back or hold: a human's choice (auto when allowed)"):
            review = ApprovalBranchOperator(task_id="review")
            hold = EmptyOperator(task_id="hold")
        with TaskGroup("contract", tooltip="Ramp reads, writes new only, soak, legacy action, reclaim online"):
            c1 = ContractOperator(task_id="flip_routing", step="flip_routing")
            soak = SoakSensor(task_id="soak", poke_interval=60)
            approve_drop = DropApprovalOperator(task_id="approve_drop")
            c2 = ContractOperator(task_id="legacy_action", step="legacy_action")
            c3 = ContractOperator(task_id="reclaim_storage", step="reclaim_storage")
            c4 = ContractOperator(task_id="finish", step="finish")
            c1 >> soak >> approve_drop >> c2 >> c3 >> c4
        with TaskGroup("rollback", tooltip="Stop, routing back, empty target, restore sequences, clear caches"):
            r1 = RollbackOperator(task_id="stop_backfill", step="stop")
            r2 = RollbackOperator(task_id="flip_routing_back", step="flip_routing")
            r3 = RollbackOperator(task_id="empty_target", step="empty_target")
            r4 = RollbackOperator(task_id="restore_sequences", step="restore_sequences")
            r5 = RollbackOperator(task_id="clear_caches", step="clear_caches")
            r6 = RollbackOperator(task_id="finish", step="finish")
            r1 >> r2 >> r3 >> r4 >> r5 >> r6
        with TaskGroup("report", tooltip="Diagnostics; releases the lease; JSON + Markdown report; fails the run unless contracted"):
            diagnose = DiagnoseOperator(task_id="diagnose", trigger_rule=TriggerRule.ALL_DONE)
            write = ReportOperator(task_id="write_report", trigger_rule=TriggerRule.ALL_DONE, post_report=post_report)
            diagnose >> write

        check >> confirm >> copy >> catchup >> validate
        fix >> decide >> review >> [c1, r1, hold]
        [c4, r6, hold] >> diagnose
        # Teardown of pre-flight: runs once pre-flight took the lock, whatever happens after. It
        # fails (and with it the DagRun) unless the state table says contracted.
        write.as_teardown(setups=check, on_failure_fail_dagrun=True)
    return dag
