"""Monitoring: replica status and the heartbeat, the primary's load signals, the seed's
symptom queries.
"""

from __future__ import annotations

from typing import Any

from .base import DialectBase, Params


class Monitor(DialectBase):
    """The shared part of the monitor role."""

    #: The load signal (:meth:`load_sql`) measuring row-lock waits: critical load's single-partition
    #: mode ends when it is back to its baseline.
    ROW_LOCK_SIGNAL = ""

    def replica_status_sql(self) -> list[str]:
        """The statements that read a replica's own replication status, tried in order (an older
        server knows only the later spelling): see :meth:`parse_replica_status`."""
        raise NotImplementedError

    #: One row ``(writable, detail)`` read on a replica: whether a client could write to it (a
    #: replica that takes writes drifts from its primary, and a copy checked on it proves nothing).
    REPLICA_WRITABLE_SQL = ""

    def parse_replica_status(self, rows: list[dict[str, Any]]) -> tuple[float | None, str]:
        """``(replay lag in seconds or None when unknown, detail)`` from the rows of
        :meth:`replica_status_sql` (as dicts). The second lag signal beside the heartbeat.

        :raises ValueError: the server is not a replica (a misconfigured replica connection
            must fail loudly, never read as "no lag").
        """
        raise NotImplementedError

    def parse_load(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Load signal name -> raw value (counters still cumulative) from the rows of :meth:`load_sql`."""
        raise NotImplementedError

    def active_sessions(self, query: Any) -> int:
        """Sessions running a statement now, besides this one (pre-flight's load check).

        :param query: runs ``(sql, params)`` and returns the rows.
        """
        raise NotImplementedError

    def preflight_settings(self, query: Any, min_lock_wait_s: float) -> list[tuple[str, bool, str, bool]]:
        """Pre-flight's server-setting checks: ``(name, ok, detail, fatal)`` each.

        :param query: runs ``(sql, params)`` in pre-flight's read-only session, returns rows.
        :param min_lock_wait_s: the seed's floor of the server's own row-lock wait (s).
        """
        raise NotImplementedError

    def heartbeat_upsert_sql(self, schema: str | None = None) -> str:
        """Params ``(name, run_id)``: write the primary's ``now()`` into ``zdt_heartbeat``."""
        return self.upsert_values_sql("zdt_heartbeat", ["name", "ts", "run_id"], ["name"], ["%s", self.now, "%s"], schema)

    def heartbeat_age_sql(self, schema: str | None = None) -> str:
        """Params ``(name,)``, run on a replica: seconds since the heartbeat it last applied
        (``now() - ts``), NULL when the row is absent."""
        raise NotImplementedError

    def load_sql(self, schema: str | None, tables: tuple[str, ...]) -> tuple[str, Params]:
        """The primary's load signals: ``(sql, params)``, read by :meth:`parse_load`. Counters
        (``row_lock_waits``, ``deadlocks``, ``wal_bytes``) become rates in
        :class:`~zdt_backfill.signals.load.LoadCollector`."""
        raise NotImplementedError

    def symptom_queries(self) -> list[tuple[str, str, float | None, float | None, Any]]:
        """The seed's diagnostics: ``(check, sql, warn_at, critical_at, describe)`` where
        ``describe(rows) -> (value, detail)``; ``warn_at`` ``None`` is informational."""
        raise NotImplementedError


class PostgresMonitor(Monitor):
    """The Postgres part of the monitor role."""

    ROW_LOCK_SIGNAL = "ungranted_locks"  # sessions waiting on a lock now (pg_locks NOT granted)
    REPLICA_WRITABLE_SQL = ("SELECT NOT pg_is_in_recovery(), 'in_recovery=' || pg_is_in_recovery()::text"
                            " || ', default_transaction_read_only=' || current_setting('default_transaction_read_only')")

    def replica_status_sql(self):
        # The second signal: seconds since the last replayed transaction while replay is
        # behind what was received, 0 when caught up, NULL when unknown (nothing replayed
        # yet) or on a primary. It reads 0 when the WAL receiver is disconnected (nothing
        # received, nothing to replay): the heartbeat is the signal to trust.
        return [
            "SELECT pg_is_in_recovery() AS in_recovery, CASE"
            " WHEN NOT pg_is_in_recovery() THEN NULL"
            " WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0"
            " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END AS lag"
        ]

    def parse_replica_status(self, rows):
        in_recovery, lag = rows[0]["in_recovery"], rows[0]["lag"]
        if not in_recovery:
            raise ValueError("not a replica (pg_is_in_recovery() is false)")
        return (None if lag is None else float(lag)), "" if lag is not None else "nothing replayed yet"

    def parse_load(self, rows):
        return dict(rows[0]) if rows else {}

    def active_sessions(self, query):
        return int(query("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()",
                         ())[0][0])

    def preflight_settings(self, query, min_lock_wait_s):
        lt = query("SHOW lock_timeout", ())[0][0]
        return [("settings", True, f"server lock_timeout={lt}; backfill sessions set their own lock_timeout", False)]


    def heartbeat_age_sql(self, schema=None):
        # clock_timestamp(), not now(): now() is the start of a transaction a pooled session
        # may have opened long ago
        return (
            f"SELECT extract(epoch FROM clock_timestamp() - ts) FROM {self.table('zdt_heartbeat', schema)}"
            " WHERE name = %s"
        )

    def load_sql(self, schema, tables):
        marks = ", ".join(["%s"] * max(1, len(tables)))
        return (
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend') AS active_backends,"
            " (SELECT count(*) FROM pg_locks WHERE NOT granted) AS ungranted_locks,"
            " (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()) AS deadlocks,"
            " (SELECT count(*) FROM pg_stat_progress_vacuum v JOIN pg_class c ON c.oid = v.relid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = coalesce(%s, current_schema())"
            f" AND c.relname IN ({marks})) AS vacuum_on_tables,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal_bytes,"
            # the worst replica's replay distance in WAL bytes, measured on the primary (NULL
            # with no replica attached): a second lag signal beside the heartbeat's seconds
            " (SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) FROM pg_stat_replication)"
            " AS replica_lag_bytes",
            (schema, *(tables or ("",))),
        )

    def symptom_queries(self):
        def count(label):
            return lambda rows: (len(rows), f"{len(rows)} {label}" + (f": {[tuple(r) for r in rows[:3]]}" if rows else ""))

        return [
            ("lock_waits", "SELECT pid, wait_event, left(query, 200), round(extract(epoch FROM now() - query_start))"
             " FROM pg_stat_activity WHERE wait_event_type = 'Lock'", 1, 20, count("session(s) waiting on a lock")),
            ("row_lock_contention", "SELECT count(*) FROM pg_locks WHERE NOT granted", 20, 200,
             lambda rows: (rows[0][0], f"{rows[0][0]} ungranted lock(s)")),
            ("connections", "SELECT count(*) FILTER (WHERE state = 'active'), count(*),"
             " current_setting('max_connections')::int FROM pg_stat_activity", 25, 100,
             lambda rows: (rows[0][0], f"{rows[0][0]} active of {rows[0][1]} connections (max {rows[0][2]})")),
            ("replication_bytes", "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)"
             " FROM pg_stat_replication", 64 * 1024 * 1024, 1024 * 1024 * 1024,
             lambda rows: (max((float(r[1] or 0) for r in rows), default=0.0),
                           f"{len(rows)} replica(s) streaming; replay behind by {[(r[0], r[1]) for r in rows]} bytes")),
            ("backfill_sessions", "SELECT pid, state, left(query, 120) FROM pg_stat_activity"
             " WHERE application_name LIKE 'zdt_backfill:%%'", None, None,
             lambda rows: (len(rows), "; ".join(f"pid {r[0]} {r[1]} (stop it: SELECT pg_cancel_backend({r[0]}))"
                                                for r in rows[:5]) or "none")),
        ]

    def replication_bytes_sql(self):
        """On the primary: rows ``(application_name, bytes the replica's replay is behind)``."""
        return (
            "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)"
            " FROM pg_stat_replication"
        )


class MySQLMonitor(Monitor):
    """The MySQL part of the monitor role."""

    ROW_LOCK_SIGNAL = "row_lock_waits_per_s"  # Innodb_row_lock_waits, per second between readings
    # Oracle MySQL: read_only stops clients, super_read_only also the SUPER/CONNECTION_ADMIN ones
    # (MariaDB has read_only only, which binds every client but those with READ_ONLY ADMIN).
    REPLICA_WRITABLE_SQL = ("SELECT @@GLOBAL.super_read_only = 0, concat('read_only=', @@GLOBAL.read_only,"
                            " ', super_read_only=', @@GLOBAL.super_read_only)")

    def replica_status_sql(self):
        return ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"]

    def parse_replica_status(self, rows):
        if not rows:
            raise ValueError("not a replica (SHOW REPLICA STATUS is empty)")
        status = rows[0]
        lag = status.get("Seconds_Behind_Source", status.get("Seconds_Behind_Master"))
        io = status.get("Replica_IO_Running", status.get("Slave_IO_Running"))
        sql_running = status.get("Replica_SQL_Running", status.get("Slave_SQL_Running"))
        detail = "" if lag is not None else f"replication stopped (IO {io}, SQL {sql_running})"
        return (None if lag is None else float(lag)), detail

    def parse_load(self, rows):
        out = {self.LOAD_STATUS[r["Variable_name"]]: r["Value"] for r in rows if r.get("Variable_name") in self.LOAD_STATUS}
        if out.get("threads_running") is not None:
            out["threads_running"] = float(out["threads_running"]) - 1  # not this probe's own thread
        return out

    def active_sessions(self, query):
        rows = query("SHOW GLOBAL STATUS LIKE 'Threads_running'", ())
        return int(rows[0][1]) - 1 if rows else 0

    def preflight_settings(self, query, min_lock_wait_s):
        fmt, log_bin, image = query("SELECT @@SESSION.binlog_format, @@GLOBAL.log_bin, @@GLOBAL.binlog_row_image", ())[0]
        v = int(query("SELECT @@GLOBAL.innodb_lock_wait_timeout", ())[0][0])
        return [
            # MIXED logs a statement as a statement whenever the server deems it safe, and replicas
            # then re-evaluate the batch's expressions on their own data: only ROW replicates the rows.
            ("binlog_format", not (int(log_bin) and str(fmt).upper() != "ROW"),
             f"binlog_format={fmt} (log_bin={log_bin}, binlog_row_image={image}); the batches need ROW", True),
            ("settings", v >= min_lock_wait_s,
             f"global innodb_lock_wait_timeout={v}s (seed: >= {min_lock_wait_s:g}s so application "
             "transactions outwait a batch); backfill sessions use a short one of their own", False),
        ]

    #: SHOW GLOBAL STATUS names -> load signal names (MySQL 8 has no Innodb_deadlocks /
    #: Innodb_history_list_length status: those read as unknown there).
    LOAD_STATUS = {
        "Threads_running": "threads_running", "Innodb_row_lock_waits": "row_lock_waits",
        "Innodb_row_lock_time": "row_lock_time_ms", "Innodb_deadlocks": "deadlocks",
        "Innodb_history_list_length": "history_list_length",
    }

    def symptom_queries(self):
        def status(rows):
            d = {r[0]: r[1] for r in rows}
            waits = float(d.get("Innodb_row_lock_current_waits", 0) or 0)
            return waits, ", ".join(f"{k}={v}" for k, v in d.items())

        return [
            ("lock_waits", "SELECT trx_id, trx_state, trx_query, trx_wait_started FROM information_schema.innodb_trx"
             " WHERE trx_state = 'LOCK WAIT'", 1, 20,
             lambda rows: (len(rows), f"{len(rows)} transaction(s) in LOCK WAIT" + (f": {[tuple(map(str, r)) for r in rows[:3]]}" if rows else ""))),
            ("row_lock_contention", "SHOW GLOBAL STATUS LIKE 'Innodb_row_lock%%'", 1, 20, status),
            ("connections", "SHOW GLOBAL STATUS LIKE 'Threads_running'", 25, 100,
             lambda rows: (float(rows[0][1]) - 1 if rows else None, f"Threads_running={rows[0][1] if rows else '?'}")),
            ("backfill_sessions", "SELECT id, time, left(info, 120) FROM information_schema.processlist"
             " WHERE info LIKE '/* zdt_backfill:%%'", None, None,
             lambda rows: (len(rows), "; ".join(f"thread {r[0]} for {r[1]}s (stop it: KILL QUERY {r[0]})"
                                                for r in rows[:5]) or "none")),
        ]

    def load_sql(self, schema, tables):
        names = list(self.LOAD_STATUS)
        return f"SHOW GLOBAL STATUS WHERE Variable_name IN ({', '.join(['%s'] * len(names))})", tuple(names)


    def heartbeat_age_sql(self, schema=None):
        return (
            "SELECT timestampdiff(MICROSECOND, ts, sysdate(6)) / 1000000"
            f" FROM {self.table('zdt_heartbeat', schema)} WHERE name = %s"
        )

