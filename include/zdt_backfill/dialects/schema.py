"""The control tables' schema: one place for every ``zdt_*`` table (pgroll's ``pkg/state``).

Each table is created ``IF NOT EXISTS`` after pre-flight passed (so a refused run writes
nothing), with the engine's own types for timestamps, auto-numbered keys and long documents.
Columns added by later versions of this package are added by :meth:`Schema.added_columns`
(``ALTER TABLE ... ADD COLUMN``, instant on PostgreSQL 11+, MySQL 8.0.29+ and MariaDB 10.3+).

=============================  =============================================================
``zdt_backfill_runs``          one row per target table: the run holding it, state, lease,
                               recorded sequences, config, live control, critical-load mode
``zdt_backfill_events``        append-only: transitions, validations, destructive steps, ...
``zdt_backfill_checkpoints``   per run and partition: key range, watermark, counters
``zdt_heartbeat``              the primary's clock, read on each replica (replica lag)
``zdt_routing_flags``          the read and write flags (``flag_store: table``)
``zdt_backfill_reports``       one row per written report (JSON, Markdown, HTML)
=============================  =============================================================
"""

from __future__ import annotations

from .base import DialectBase

RUNS = "zdt_backfill_runs"
EVENTS = "zdt_backfill_events"
CHECKPOINTS = "zdt_backfill_checkpoints"
HEARTBEAT = "zdt_heartbeat"
FLAGS = "zdt_routing_flags"
REPORTS = "zdt_backfill_reports"


class Schema(DialectBase):
    """The control tables' DDL (the same layout on every engine, in each engine's types)."""

    def control_table_sql(self, name: str, schema: str | None = None) -> str:
        """``CREATE TABLE IF NOT EXISTS`` of one control table (:data:`RUNS`, :data:`EVENTS`,
        :data:`CHECKPOINTS`, :data:`HEARTBEAT`, :data:`FLAGS`, :data:`REPORTS`).

        :raises KeyError: not a control table.
        """
        ts, t = self.timestamp_type, self.table(name, schema)
        long_text = self.long_text_type
        columns = {
            RUNS: "lock_key varchar(200) PRIMARY KEY, run_id varchar(250) NOT NULL, state varchar(32) NOT NULL,"
                  f" reason text NULL, owner varchar(250) NULL, heartbeat_at {ts} NULL, lease_expires_at {ts} NULL,"
                  f" started_at {ts} NULL, updated_at {ts} NULL, config text NULL, sequences text NULL,"
                  " control text NULL, critical text NULL",
            EVENTS: f"id {self.serial_pk}, lock_key varchar(200) NOT NULL, run_id varchar(250) NOT NULL, at {ts} NULL,"
                    " kind varchar(32) NOT NULL, state_from varchar(32) NULL, state_to varchar(32) NULL,"
                    " reason text NULL, detail text NULL",
            CHECKPOINTS: "run_id varchar(250) NOT NULL, partition_no int NOT NULL, lo bigint NOT NULL,"
                         " hi bigint NOT NULL, watermark bigint NOT NULL, rows_written bigint NOT NULL DEFAULT 0,"
                         " keys_scanned bigint NOT NULL DEFAULT 0, batches int NOT NULL DEFAULT 0,"
                         " retries int NOT NULL DEFAULT 0, throttled_seconds double precision NOT NULL DEFAULT 0,"
                         " seconds double precision NOT NULL DEFAULT 0, status varchar(16) NOT NULL,"
                         f" data_errors int NOT NULL DEFAULT 0, started_at {ts} NULL, updated_at {ts} NULL,"
                         " PRIMARY KEY (run_id, partition_no)",
            HEARTBEAT: f"name varchar(200) PRIMARY KEY, ts {ts} NOT NULL, run_id varchar(250) NULL",
            FLAGS: f"{self.quote('flag')} varchar(128) PRIMARY KEY, {self.quote('value')} varchar(64) NOT NULL,"
                   f" {self.quote('percent')} int NOT NULL DEFAULT 0, {self.quote('run_id')} varchar(250),"
                   f" {self.quote('updated_at')} {ts} NULL",
            REPORTS: f"id {self.serial_pk}, run_id varchar(250) NOT NULL, source_table varchar(128) NULL,"
                     f" target_table varchar(128) NULL, state varchar(32) NULL, created_at {ts} NULL,"
                     f" report_json {long_text} NOT NULL, report_md {long_text} NOT NULL, report_html {long_text} NULL",
        }[name]
        return f"CREATE TABLE IF NOT EXISTS {t} ({columns})"

    def added_columns(self, name: str) -> dict[str, str]:
        """Columns a later version added to a control table: ``{column: its definition}``; a table
        made by an earlier version gets them by ``ALTER TABLE ... ADD COLUMN``."""
        return {
            RUNS: {"critical": "text NULL"},
            FLAGS: {"percent": "int NOT NULL DEFAULT 0"},
            REPORTS: {"report_html": f"{self.long_text_type} NULL"},
        }.get(name, {})

    def add_column_sql(self, name: str, column: str, definition: str, schema: str | None = None) -> str:
        """``ALTER TABLE <control table> ADD COLUMN <column> <definition>``."""
        return f"ALTER TABLE {self.table(name, schema)} ADD COLUMN {self.quote(column)} {definition}"
