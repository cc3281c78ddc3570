"""Builds the zero-downtime backfill DAG: the expand/contract compatibility windows as task groups.

    preflight.check (setup, takes the run lock)
      -> dual_write.confirm
      -> backfill.copy_partition  (mapped: one task per key-range partition)
      -> replica_catchup.wait_for_replicas  (deferrable)
      -> validation.checksum
      -> decide  --> contract.flip_routing -> contract.drop_legacy -> contract.reclaim_storage
                 \\-> rollback.stop_backfill -> rollback.flip_routing_back -> rollback.empty_target
                     -> rollback.reset_sequences -> rollback.clear_caches
      -> report.write_report  (teardown of preflight: always runs, releases the lock)

One factory so ``zero_downtime_backfill`` and a scheduled staging rehearsal share
every task and differ only in their defaults and schedule.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from zdt_airflow.operators import (
    ContractOperator,
    DecideBranchOperator,
    DualWriteOperator,
    PartitionBackfillOperator,
    PreflightOperator,
    ReportOperator,
    RollbackOperator,
    ValidateOperator,
)
from zdt_airflow.sensors import ReplicaLagSensor
from zdt_backfill.config import MAX_BATCH_SIZE, MAX_PARTITIONS, PROFILES

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: Defaults of the demo: the embedded PostgreSQL primary + replica that `make demo` starts.
DEMO_DEFAULTS: dict[str, Any] = {
    "conn_id": "backfill_pg",
    "replica_conn_ids": ["backfill_pg_replica"],
    "mode": "copy",
    "source_table": "users_legacy",
    "target_table": "users_new",
    "key": "id",
    "columns": {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"},
    "profile": "prod",
    "dual_write": "check",
}


def build_params(defaults: dict[str, Any]) -> dict[str, Param]:
    """The trigger form: every conf field titled, described and grouped in sections."""
    d = {**DEMO_DEFAULTS, **defaults}

    def opt_num(name: str, title: str, description: str, section: str, kind: str = "number", **schema: Any) -> Param:
        return Param(d.get(name), type=["null", kind], title=title, description=description, section=section, **schema)

    return {
        # --- Connection and tables
        "conn_id": Param(d["conn_id"], type="string", minLength=1, title="Connection id",
                         description="Airflow connection (postgres or mysql) of the database holding source and target.",
                         section="Connection and tables"),
        "replica_conn_ids": Param(d["replica_conn_ids"], type="array", items={"type": "string"},
                                  title="Replica connection ids",
                                  description="Replicas whose lag gates batches and must catch up before validation.",
                                  section="Connection and tables"),
        "schema": Param(d.get("schema"), type=["null", "string"], pattern=IDENT, title="Schema",
                        description="PostgreSQL schema / MySQL database of the tables; empty = the connection's default.",
                        section="Connection and tables"),
        "mode": Param(d["mode"], type="string", enum=["copy", "fill"], title="Backfill shape",
                      description="copy: source table -> target table (INSERT ... SELECT, insert-if-absent). "
                                  "fill: UPDATE the source table's new column(s) where still NULL.",
                      section="Connection and tables"),
        "source_table": Param(d["source_table"], type="string", pattern=IDENT, title="Source table",
                              description="Legacy table read by the backfill (the table filled, in fill mode).",
                              section="Connection and tables"),
        "target_table": Param(d.get("target_table"), type=["null", "string"], pattern=IDENT, title="Target table",
                              description="New table written in copy mode; leave empty in fill mode.",
                              section="Connection and tables"),
        "key": Param(d["key"], type="string", pattern=IDENT, title="Key column",
                     description="Unique integer key (usually the primary key) used for keyset chunking.",
                     section="Connection and tables"),
        "columns": Param(d["columns"], type="object", minProperties=1, propertyNames={"pattern": IDENT},
                         additionalProperties={"type": "string", "minLength": 1},
                         title="Target columns",
                         description='{"target_column": "SQL expression over source columns"}, '
                                     'e.g. {"email_normalized": "lower(trim(email))"}.',
                         section="Connection and tables"),
        # --- Tuning
        "profile": Param(d["profile"], type="string", enum=sorted(PROFILES), title="Environment profile",
                         description="Defaults from the seed's matrix: dev 50k-row batches, no throttle; staging 10k at "
                                     "1000 rows/s; prod 1000 at 500 rows/s. Fields below override it.",
                         section="Tuning"),
        "batch_size": opt_num("batch_size", "Batch size (rows)", "Rows per batch transaction; empty = profile.",
                              "Tuning", "integer", minimum=1, maximum=MAX_BATCH_SIZE),
        "partitions": opt_num("partitions", "Partitions", "Key-range partitions copied in parallel (mapped tasks).",
                              "Tuning", "integer", minimum=1, maximum=MAX_PARTITIONS),
        "max_rows_per_second": opt_num("max_rows_per_second", "Rate ceiling (rows/s)",
                                       "Rows/s for the whole run, shared by partitions; 0 = unthrottled; empty = profile.",
                                       "Tuning", minimum=0),
        "max_replica_lag_seconds": opt_num("max_replica_lag_seconds", "Replica lag gate (s)",
                                           "Batches pause while a replica lags more; 0 = off; empty = profile.",
                                           "Tuning", minimum=0),
        "lock_timeout_seconds": opt_num("lock_timeout_seconds", "Lock timeout (s)",
                                        "Lock wait of backfill sessions (PostgreSQL lock_timeout, MySQL "
                                        "innodb_lock_wait_timeout rounded up to 1 s); default 0.5.",
                                        "Tuning", minimum=0.001),
        "statement_timeout_seconds": opt_num("statement_timeout_seconds", "Statement timeout (s)",
                                             "Longest a batch statement may run; default 60.", "Tuning", minimum=0.1),
        # --- Dual-write
        "dual_write": Param(d["dual_write"], type="string", enum=["check", "assumed"], title="Dual-write",
                            description="check: recent source changes must already be in the target. "
                                        "assumed: not checked; the report records the assumption.",
                            section="Dual-write"),
        "dual_write_updated_column": Param(d.get("dual_write_updated_column", "updated_at"), type=["null", "string"],
                                           pattern=IDENT, title="Last-write timestamp column",
                                           description="Source column holding each row's last write time.",
                                           section="Dual-write"),
        "dual_write_window_minutes": opt_num("dual_write_window_minutes", "Check window (min)",
                                             "Rows changed within this many minutes are checked; default 10.",
                                             "Dual-write", minimum=0.1),
        # --- Thresholds
        "min_checksum_match_pct": opt_num("min_checksum_match_pct", "Forward: checksum match >= (%)",
                                          "Seed default 99.99.", "Thresholds", minimum=0, maximum=100),
        "forward_max_lag_seconds": opt_num("forward_max_lag_seconds", "Forward: replica lag < (s)",
                                           "Seed default 2; also what the catch-up sensor waits for.", "Thresholds",
                                           minimum=0),
        "rollback_lag_seconds": opt_num("rollback_lag_seconds", "Rollback: replica lag > (s)", "Seed default 5.",
                                        "Thresholds", minimum=0),
        "max_error_rate_pct": opt_num("max_error_rate_pct", "Rollback: error rate > (%)",
                                      "Transient errors per processed row; seed default 0.01.", "Thresholds",
                                      minimum=0, maximum=100),
        "replica_wait_timeout_seconds": opt_num("replica_wait_timeout_seconds", "Replica wait timeout (s)",
                                                "Longest the lag gate and catch-up sensor wait; default 600.",
                                                "Thresholds", minimum=1),
        # --- Contract and rollback
        "routing_flag": Param(d.get("routing_flag"), type=["null", "string"], maxLength=128, title="Routing flag",
                              description="Flag in zdt_routing_flags flipped to 'new' on contract and 'legacy' on "
                                          "rollback; empty = <target_table>_read_path.",
                              section="Contract and rollback"),
        "drop_legacy": Param(bool(d.get("drop_legacy", False)), type="boolean", title="Drop legacy on contract",
                             description="Drop the legacy table (copy) or legacy_columns (fill) on contract. "
                                         "Off by default: the legacy schema is kept.",
                             section="Contract and rollback"),
        "legacy_columns": Param(d.get("legacy_columns", []), type="array", items={"type": "string", "pattern": IDENT},
                                title="Legacy columns (fill mode)", description="Columns dropped on contract in fill mode.",
                                section="Contract and rollback"),
        "reclaim_storage": Param(d.get("reclaim_storage", "online"), type="string", enum=["online", "none"],
                                 title="Reclaim storage",
                                 description="online: VACUUM (ANALYZE) / ANALYZE TABLE. Never VACUUM FULL or "
                                             "OPTIMIZE TABLE, which lock or rebuild the table.",
                                 section="Contract and rollback"),
        "cache_redis_url": Param(d.get("cache_redis_url"), type=["null", "string"], title="Cache Redis URL",
                                 description="Redis cleared on rollback (SCAN + UNLINK), e.g. redis://127.0.0.1:6379/0.",
                                 section="Contract and rollback"),
        "cache_key_pattern": Param(d.get("cache_key_pattern"), type=["null", "string"], title="Cache key pattern",
                                   description="Keys to clear on rollback, e.g. users:*.",
                                   section="Contract and rollback"),
    }


def build_backfill_dag(
    dag_id: str,
    defaults: dict[str, Any] | None = None,
    schedule: Any = None,
    tags: list[str] | None = None,
    description: str = "Zero-downtime backfill through the expand/contract compatibility windows",
    partition_retries: int = 3,
) -> DAG:
    """Build the backfill DAG.

    :param dag_id: the DAG id.
    :param defaults: Param defaults overriding :data:`DEMO_DEFAULTS`.
    :param schedule: ``None`` for manual runs; a cron string for rehearsals.
    :param partition_retries: retries of each partition task (each resumes from its checkpoint).
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
            check = PreflightOperator(task_id="check")
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
        with TaskGroup("validation", tooltip="Row counts and checksums, in the database"):
            validate = ValidateOperator(task_id="checksum")
        decide = DecideBranchOperator(task_id="decide")
        with TaskGroup("contract", tooltip="Flip routing, drop legacy (opt-in), reclaim storage online"):
            c1 = ContractOperator(task_id="flip_routing", step="flip_routing")
            c2 = ContractOperator(task_id="drop_legacy", step="drop_legacy")
            c3 = ContractOperator(task_id="reclaim_storage", step="reclaim_storage")
            c1 >> c2 >> c3
        with TaskGroup("rollback", tooltip="Stop, flip routing back, empty target, reset sequences, clear caches"):
            r1 = RollbackOperator(task_id="stop_backfill", step="stop")
            r2 = RollbackOperator(task_id="flip_routing_back", step="flip_routing")
            r3 = RollbackOperator(task_id="empty_target", step="empty_target")
            r4 = RollbackOperator(task_id="reset_sequences", step="reset_sequences")
            r5 = RollbackOperator(task_id="clear_caches", step="clear_caches")
            r1 >> r2 >> r3 >> r4 >> r5
        with TaskGroup("report", tooltip="JSON + Markdown report; releases the run lock"):
            write = ReportOperator(task_id="write_report", trigger_rule=TriggerRule.ALL_DONE)

        check >> confirm >> copy >> catchup >> validate >> decide >> [c1, r1]
        [c3, r5] >> write
        # Teardown of pre-flight: runs once pre-flight took the lock, whatever happens after;
        # a failed report (lock not released) fails the run.
        write.as_teardown(setups=check, on_failure_fail_dagrun=True)
    return dag
