"""Session settings: lock waits, statement timeouts, the run's tag, plan pinning, probe
timeouts, cancelling another session's statement.
"""

from __future__ import annotations

from typing import Any

from .base import DialectBase, Params


class Session(DialectBase):
    """The shared part of the session role."""

    #: the engine's SQL of :meth:`backend_id_sql`, :meth:`cancel_statement_sql`, :meth:`read_only_begin_sql`
    BACKEND_ID_SQL = CANCEL_STATEMENT_SQL = READ_ONLY_BEGIN_SQL = ""

    def session_setup(self, lock_timeout_s: float, statement_timeout_s: float, tag: str) -> list[tuple[str, Params]]:
        """Statements that make a backfill session safe: short lock waits, a statement
        timeout, and a tag naming the run so DBAs can find it."""
        raise NotImplementedError

    def ddl_session_setup(self, lock_wait_s: float, tag: str) -> list[tuple[str, Params]]:
        """Session settings that bound every lock wait of a DDL statement (``TRUNCATE``, ``DROP``,
        ``ALTER``, ``RENAME``): a DDL statement queued for its exclusive lock queues every later
        application statement on the table behind it, so it must give up quickly and retry.

        PostgreSQL ``lock_timeout``; MySQL/MariaDB ``lock_wait_timeout`` (metadata locks, whose
        default is a year on MySQL and a day on MariaDB) and ``innodb_lock_wait_timeout`` (rows),
        both whole seconds, 1 at least."""
        raise NotImplementedError

    def plan_pinning(self) -> list[str]:
        """Session statements that pin the batch plan to the key index; run once on each
        batch session, and inside pre-flight's ``EXPLAIN`` transaction, which rolls back."""
        return []

    #: Whether the session's statement timeout (:meth:`session_setup`) bounds DML too. Oracle
    #: MySQL's ``max_execution_time`` bounds read-only ``SELECT`` s only: there the copier cancels
    #: a batch past its timeout itself (:class:`~zdt_backfill.cancel.StatementDeadline`).
    SERVER_BOUNDS_DML = True

    def backend_id_sql(self) -> str:
        """The session's server-side id (PostgreSQL backend pid, MySQL connection id): what
        :meth:`cancel_statement_sql` takes."""
        return self.BACKEND_ID_SQL

    def cancel_statement_sql(self) -> str:
        """Cancel the statement another session is running, keeping that session (its
        transaction rolls back on PostgreSQL; on MySQL the statement is rolled back). Param: the
        session id. PostgreSQL ``pg_cancel_backend``; MySQL ``KILL QUERY`` (gh-ost's panic path)."""
        return self.CANCEL_STATEMENT_SQL

    def tag_statement(self, sql: str, tag: str) -> str:
        """A statement that names the run to whoever looks at the server's process list
        (PostgreSQL tags the session's ``application_name`` instead)."""
        return sql

    def probe_session_setup(self, timeout_s: float) -> list[tuple[str, Params]]:
        """Read timeout of a probe session: a hung replica must not stall the batch loop."""
        return []

    def read_only_begin_sql(self) -> str:
        """Starts a read-only transaction on a fresh connection (a user's query, a parity read)."""
        return self.READ_ONLY_BEGIN_SQL

    # ------------------------------------------------------------------ the driver
    def connect(self, host: str, port: int | None, user: str, password: str, database: str,
                timeout_s: float | None = None) -> Any:
        """A new DB-API 2 connection with autocommit off, by the engine's driver (psycopg 3,
        mysqlclient). With ``timeout_s`` it gives up connecting (and, on MySQL, reading and
        writing) after that many seconds: probes of a hung replica must not hang the caller."""
        raise NotImplementedError

    def set_autocommit(self, conn: Any, on: bool = True) -> None:
        """Switch an open connection's autocommit (a probe's single reads, ``VACUUM``)."""
        raise NotImplementedError


class PostgresSession(Session):
    """The Postgres part of the session role."""

    def ddl_session_setup(self, lock_wait_s, tag):
        return [
            ("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(lock_wait_s * 1000))}ms",)),
            ("SELECT set_config('application_name', %s, false)", (tag[:63],)),
        ]

    def session_setup(self, lock_timeout_s, statement_timeout_s, tag):
        return [
            ("SELECT set_config('lock_timeout', %s, false)", (f"{int(lock_timeout_s * 1000)}ms",)),
            ("SELECT set_config('statement_timeout', %s, false)", (f"{int(statement_timeout_s * 1000)}ms",)),
            ("SELECT set_config('application_name', %s, false)", (tag[:63],)),
        ]

    def plan_pinning(self):
        # The seed's "force index hints if the optimizer defaults to full table scans":
        # PostgreSQL has no hints, so batch sessions turn sequential scans off (their
        # connection runs nothing but batches); pre-flight EXPLAINs under the same setting.
        return ["SET enable_seqscan = off"]

    def probe_session_setup(self, timeout_s):
        return [("SELECT set_config('statement_timeout', %s, false)", (f"{max(1, int(timeout_s * 1000))}ms",))]

    BACKEND_ID_SQL = "SELECT pg_backend_pid()"
    CANCEL_STATEMENT_SQL = "SELECT pg_cancel_backend(%s)"
    READ_ONLY_BEGIN_SQL = "SET TRANSACTION READ ONLY"

    def connect(self, host, port, user, password, database, timeout_s=None):
        import psycopg

        extra = {"connect_timeout": max(1, int(timeout_s))} if timeout_s else {}
        return psycopg.connect(host=host, port=port or 5432, user=user or "postgres", password=password,
                               dbname=database or "postgres", **extra)

    def set_autocommit(self, conn, on=True):
        conn.autocommit = on


class MySQLSession(Session):
    """The MySQL part of the session role."""

    def ddl_session_setup(self, lock_wait_s, tag):
        wait = max(1, round(lock_wait_s))
        return [
            ("SET SESSION lock_wait_timeout = %s", (wait,)),
            ("SET SESSION innodb_lock_wait_timeout = %s", (wait,)),
            ("SET @zdt_backfill_run = %s", (tag,)),
        ]

    def session_setup(self, lock_timeout_s, statement_timeout_s, tag):
        # innodb_lock_wait_timeout is whole seconds, 1 at least. The statement timeout is
        # MariaDB's max_statement_time (s, every statement) or MySQL 8's max_execution_time
        # (ms, read-only SELECTs only: a batch's INSERT ... SELECT is bounded by the lock
        # wait instead); the one the server does not know is skipped (error 1193).
        lock_wait = max(1, round(lock_timeout_s))
        return [
            ("SET SESSION innodb_lock_wait_timeout = %s", (lock_wait,)),
            ("SET SESSION lock_wait_timeout = %s", (lock_wait,)),
            # READ COMMITTED: the INSERT ... SELECT reads the source without gap locks.
            ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", ()),
            ("SET SESSION max_statement_time = %s", (float(statement_timeout_s),)),
            ("SET SESSION max_execution_time = %s", (int(statement_timeout_s * 1000),)),
            ("SET @zdt_backfill_run = %s", (tag,)),
        ]

    def tag_statement(self, sql, tag):
        safe = "".join(ch for ch in tag if ch.isalnum() or ch in "_.:+-")
        return f"/* {safe} */ {sql}"

    BACKEND_ID_SQL = "SELECT CONNECTION_ID()"
    CANCEL_STATEMENT_SQL = "KILL QUERY %s"
    READ_ONLY_BEGIN_SQL = "START TRANSACTION READ ONLY"

    def connect(self, host, port, user, password, database, timeout_s=None):
        # utf8mb4: a latin1 connection turns 4-byte characters into '?'
        import MySQLdb

        extra = ({"connect_timeout": max(1, int(timeout_s)), "read_timeout": max(1, int(timeout_s)),
                  "write_timeout": max(1, int(timeout_s))} if timeout_s else {})
        return MySQLdb.connect(host=host, port=port or 3306, user=user or "root", password=password,
                               database=database, autocommit=False, charset="utf8mb4", **extra)

    def set_autocommit(self, conn, on=True):
        conn.autocommit(on)
