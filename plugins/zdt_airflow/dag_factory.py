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
from zdt_backfill.config import MAX_BATCH_SIZE, MAX_PARTITIONS, PROFILES, RunConfig

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Each Param's schema names JSON Schema draft-07 (every keyword the form uses is in it). Airflow
#: validates a Param with ``jsonschema.validate``, which first checks the schema against its
#: metaschema, and it does so each time a DAG is serialized (by every operator's params
#: comparison and repr): about 250 times per ``airflow dags test`` of this DAG's 55 fields, and on
#: every parse by the DAG processor. Draft-07's metaschema checks 3.3x faster than the default
#: 2020-12 one (0.25 vs 0.82 ms a field, measured here); issue 9's profile of ``airflow dags test``
#: found this validation to be the largest part of the DAG's fixed cost.
PARAM_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

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


def unclamped_bounds(minimum: float | None, maximum: float | None) -> dict[str, Any]:
    """JSON-schema bounds for a number field that the trigger form refuses instead of clamping.

    Airflow's form passes a field's top-level ``minimum``/``maximum`` to its number input, which
    silently clamps what was typed (a batch size of 0 became 1 and a run started). The same bounds
    inside ``allOf`` are invisible to the input but still validated, so the API refuses the value
    with HTTP 400 and a readable first line (``Invalid input for param batch_size: 0 is less than
    the minimum of 1``). :meth:`~zdt_backfill.config.RunConfig.from_params` refuses it again
    (``ConfigError`` naming field, value and range).

    :returns: schema keywords to merge into the Param.
    """
    bounds = {k: v for k, v in (("minimum", minimum), ("maximum", maximum)) if v is not None}
    return {"allOf": [bounds]} if bounds else {}


def build_params(defaults: dict[str, Any]) -> dict[str, Param]:
    """The trigger form: every conf field titled, described and grouped in sections."""
    d = {**DEMO_DEFAULTS, **defaults}

    def opt_num(name: str, title: str, description: str, section: str, kind: str = "number",
                minimum: float | None = None, maximum: float | None = None, **schema: Any) -> Param:
        return Param(d.get(name), type=["null", kind], title=title, description=description, section=section,
                     **unclamped_bounds(minimum, maximum), **schema)

    params = {
        # --- Connection and tables
        "conn_id": Param(d["conn_id"], type="string", minLength=1, title="Connection id",
                         description="Airflow connection (postgres or mysql) of the database holding source and target.",
                         section="Connection and tables"),
        "replica_conn_ids": Param(d["replica_conn_ids"], type=["null", "array"], items={"type": "string"},
                                  title="Replica connection ids",
                                  description="Replicas whose lag gates batches and must catch up before validation.",
                                  section="Connection and tables"),
        "parity_conn_id": Param(d.get("parity_conn_id"), type=["null", "string"], title="Staging connection (parity)",
                                description="The other environment's Airflow connection: pre-flight compares server "
                                            "version, settings and the tables' schema and indexes with it, and fails "
                                            "on a difference that changes the backfill's behaviour.",
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
        "dry_run": Param(bool(d.get("dry_run", False)), type="boolean", title="Dry run",
                         description="Only pre-flight, EXPLAIN of the batch statements, partition and batch "
                                     "boundaries and a duration estimate, in the pre-flight task's log: nothing is "
                                     "written, no lock is taken; the run ends success with every task skipped.",
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
                                             "Longest a batch statement may run; a batch that hits it is halved and "
                                             "tried again; default 60.", "Tuning", minimum=0.1),
        "target_batch_seconds": opt_num("target_batch_seconds", "Batch time target (s)",
                                        "The time a batch should stay within: the size starts at 1,000 rows and "
                                        "adapts (the slow end aimed at 70 % of it; grow <= 1.5x a step, shrink 10x on "
                                        "a 5x miss), never above the batch size; 0 = fixed; default 0.5.",
                                        "Tuning", minimum=0),
        "min_batch_size": opt_num("min_batch_size", "Smallest batch (rows)",
                                  "Floor of the adaptive size and of halving; empty = profile (dev 1000, staging 500, "
                                  "prod 100).", "Tuning", "integer", minimum=1, maximum=MAX_BATCH_SIZE),
        "max_load": Param(d.get("max_load"), type=["null", "object"],
                          additionalProperties={"type": "number", "minimum": 0}, title="Load limits",
                          description='Load signals at or above which batches wait, merged over the defaults, e.g. '
                                      '{"threads_running": 25, "row_lock_time_avg_ms": 50}; 0 turns one off.',
                          section="Tuning"),
        "critical_load": Param(d.get("critical_load"), type=["null", "object"],
                               additionalProperties={"type": "number", "minimum": 0}, title="Critical load",
                               description='Load at or above which the batch in flight is cancelled and the run drops to '
                                           'one active partition until row-lock waits are back to baseline; '
                                           'critical load again then halts (gh-ost --critical-load), e.g. '
                                           '{"threads_running": 100}; none by default.', section="Tuning"),
        "throttle_query": Param(d.get("throttle_query"), type=["null", "string"], title="Throttle query",
                                description="One read-only SELECT on the primary returning a number (CPU %, a queue "
                                            "depth); batches wait while it is >= throttle_query_max.",
                                section="Tuning"),
        "throttle_query_max": opt_num("throttle_query_max", "Throttle query limit",
                                      "The throttle query's value at or above which batches wait (the seed: CPU < 70).",
                                      "Tuning", minimum=0),
        "allow_functions": Param(d.get("allow_functions", []), type=["null", "array"], items={"type": "string", "pattern": IDENT},
                                 title="Extra allowed functions",
                                 description="Deterministic functions allowed in column expressions beyond the "
                                             "built-in allow-list (never now(), random(), sleep(), ...).",
                                 section="Connection and tables"),
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
        "forward_max_lag_seconds": opt_num("forward_max_lag_seconds", "Forward: replica lag < (s)",
                                           "Seed default 2. Lag holds the run (never rolls back): the catch-up sensor "
                                           "and the decision wait for it.", "Thresholds", minimum=0.001),
        "max_error_rate_pct": opt_num("max_error_rate_pct", "Rollback: error rate > (%)",
                                      "Data errors plus differences left after repair, per processed row; seed default "
                                      "0.01. Zero goes forward; in between holds for a human. Transient retries are "
                                      "not errors.", "Thresholds", minimum=0, maximum=100),
        "max_5xx_rate_pct": opt_num("max_5xx_rate_pct", "Ramp: 5xx rate > (%) flips back",
                                    "Seed default 0.1: at 1 % of reads, a higher 5xx rate flips reads back to legacy.",
                                    "Thresholds", minimum=0, maximum=100),
        "replica_wait_timeout_seconds": opt_num("replica_wait_timeout_seconds", "Hold deadline (s)",
                                                "Longest the lag gate, the catch-up sensor and the decision hold for "
                                                "replicas before the run halts (nothing destroyed); default 600.",
                                                "Thresholds", minimum=1),
        "halt_lag_seconds": opt_num("halt_lag_seconds", "Halt on lag above (s)",
                                    "Replica lag above this, sustained for halt_lag_after_seconds, halts the copy "
                                    "(held, nothing destroyed); default 5, the seed's rollback threshold.",
                                    "Thresholds", minimum=0.1),
        "halt_lag_after_seconds": opt_num("halt_lag_after_seconds", "... sustained for (s)",
                                          "How long lag must stay above halt_lag_seconds before the copy halts; "
                                          "default 300.", "Thresholds", minimum=1),
        # --- Validation
        "validation": Param(d.get("validation", "full"), type="string", enum=["full", "sampled"],
                            title="Validation",
                            description="full (default, required before contract on prod): every key, chunk by "
                                        "chunk. sampled: random keyset chunks sized for the confidence below; the "
                                        "report states the sample size, confidence and method.",
                            section="Validation"),
        "validation_source": Param(d.get("validation_source", "primary"), type="string",
                                   enum=["primary", "replica"], title="Validation reads",
                                   description="replica: the checksums read the first replica once its heartbeat "
                                               "shows it replayed past the start of validation; differing keys are "
                                               "re-checked on the primary. Needs replica connection ids.",
                                   section="Validation"),
        "validation_chunk_seconds": opt_num("validation_chunk_seconds", "Checksum chunk time (s)",
                                            "Target time of one checksum statement (pt-table-checksum's 0.5); the "
                                            "chunk adapts between 1,000 and 200,000 rows; default 0.5.",
                                            "Validation", minimum=0.01, maximum=60),
        "validation_recheck_seconds": opt_num("validation_recheck_seconds", "Re-check after (s)",
                                              "Differing keys are diffed again on the primary after this wait; only "
                                              "keys differing both times count (a dual-write in flight is not a "
                                              "mismatch); default 2.", "Validation", minimum=0, maximum=600),
        "validation_confidence": opt_num("validation_confidence", "Sample confidence",
                                         "sampled: probability of seeing at least one differing row; default 0.999.",
                                         "Validation", minimum=0.5, maximum=0.999999),
        "validation_detect_pct": opt_num("validation_detect_pct", "Sample detects mismatch rate (%)",
                                         "sampled: the mismatch rate seen with that confidence; default 0.01 "
                                         "(69,075 rows at 99.9 %).", "Validation", minimum=0.0001, maximum=50),
        # --- Approval, routing and contract
        "approval": Param(d.get("approval"), type=["null", "string"], enum=[None, "required", "auto"],
                          title="Approval",
                          description="required: a human approves contract, rollback and the legacy drop in the "
                                      "Required Actions page. auto: the decision proceeds (a hold still waits for a "
                                      "human). Empty = profile (prod required, dev/staging auto).",
                          section="Approval and contract"),
        "approval_timeout_minutes": opt_num("approval_timeout_minutes", "Approval timeout (min)",
                                            "Past it, the run holds (nothing destroyed); default 4320 (72 h).",
                                            "Approval and contract", minimum=1),
        "flag_store": Param(d.get("flag_store", "table"), type="string", enum=["table", "variable", "http"],
                            title="Routing flag store",
                            description="Where the application reads its routing flags: table zdt_routing_flags in "
                                        "the application database, an Airflow Variable (zdt_flag_<flag>), or an HTTP "
                                        "endpoint (GET/PUT <url>/<flag>).",
                            section="Approval and contract"),
        "flag_store_url": Param(d.get("flag_store_url"), type=["null", "string"], title="Flag store URL",
                                description="Base URL of the HTTP flag store (flag_store http).",
                                section="Approval and contract"),
        "flag_store_conn_id": Param(d.get("flag_store_conn_id"), type=["null", "string"], title="Flag store connection",
                        description="An Airflow HTTP connection for the flag store (preferred over a URL: its password stays in Airflow).",
                        section="Approval and contract"),
        "routing_flag": Param(d.get("routing_flag"), type=["null", "string"], maxLength=128, title="Read flag",
                              description="Read-path flag: legacy, then new at ramp_percent, then new at 100 %; "
                                          "<target_table>_read_path when empty. The write flag is <...>_write_path.",
                              section="Approval and contract"),
        "ramp_percent": opt_num("ramp_percent", "Ramp (% of reads)", "First step of the read ramp; seed default 1.",
                                "Approval and contract", "integer", minimum=1, maximum=100),
        "ramp_watch_minutes": opt_num("ramp_watch_minutes", "Ramp watch (min)",
                                      "How long the error signal is watched at the first step; empty = profile "
                                      "(prod 10, staging 1, dev 0).", "Approval and contract", minimum=0),
        "error_signal_sql": Param(d.get("error_signal_sql"), type=["null", "string"], title="Error signal (SQL)",
                                  description="One read-only SELECT on the application database returning the 5xx "
                                              "rate in percent.", section="Approval and contract"),
        "error_signal_url": Param(d.get("error_signal_url"), type=["null", "string"], title="Error signal (HTTP)",
                                  description="GET URL returning JSON with the 5xx rate in percent.",
                                  section="Approval and contract"),
        "error_signal_conn_id": Param(d.get("error_signal_conn_id"), type=["null", "string"], title="Error signal connection",
                        description="An Airflow HTTP connection returning the 5xx rate (extra endpoint: the path); preferred over a URL.",
                        section="Approval and contract"),
        "error_signal_json_key": Param(d.get("error_signal_json_key", "error_rate_pct"), type="string",
                                       title="Error signal JSON key", description="Key of the rate in that JSON.",
                                       section="Approval and contract"),
        "allow_unwatched_ramp": Param(bool(d.get("allow_unwatched_ramp", False)), type="boolean",
                                      title="Allow an unwatched ramp (prod)",
                                      description="Prod refuses a read ramp with no error signal unless this is set; "
                                                  "the override is recorded in the report.",
                                      section="Approval and contract"),
        "soak_minutes": opt_num("soak_minutes", "Soak (min)",
                                "Minutes between the application writing the new schema only and the legacy "
                                "rename/drop; empty = profile (prod 1440, dev/staging 0).", "Approval and contract",
                                minimum=0),
        "legacy_action": Param(d.get("legacy_action", "keep"), type="string", enum=["keep", "rename", "drop"],
                               title="Legacy schema after the soak",
                               description="keep (default), rename to <name>_zdt_archived, or drop; rename and drop "
                                           "need an exact validation and their own approval.",
                               section="Approval and contract"),
        "legacy_columns": Param(d.get("legacy_columns", []), type=["null", "array"], items={"type": "string", "pattern": IDENT},
                                title="Legacy columns (fill mode)",
                                description="Columns renamed or dropped by legacy_action in fill mode.",
                                section="Approval and contract"),
        "reclaim_storage": Param(d.get("reclaim_storage", "online"), type="string", enum=["online", "none"],
                                 title="Reclaim storage",
                                 description="online: VACUUM (ANALYZE) / ANALYZE TABLE. Never VACUUM FULL or "
                                             "OPTIMIZE TABLE, which lock or rebuild the table.",
                                 section="Approval and contract"),
        "cache_redis_url": Param(d.get("cache_redis_url"), type=["null", "string"], title="Cache Redis URL",
                                 description="Redis cleared on rollback (SCAN + UNLINK), e.g. redis://127.0.0.1:6379/0.",
                                 section="Rollback"),
        "cache_conn_id": Param(d.get("cache_conn_id"), type=["null", "string"], title="Cache Redis connection",
                        description="An Airflow Redis connection for the cache cleared on rollback; preferred over a URL.",
                        section="Rollback"),
        "cache_key_pattern": Param(d.get("cache_key_pattern"), type=["null", "string"], title="Cache key pattern",
                                   description="Keys to clear on rollback, e.g. users:*.",
                                   section="Rollback"),
    }
    for p in params.values():
        p.schema.setdefault("$schema", PARAM_SCHEMA_DIALECT)
    return params


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
