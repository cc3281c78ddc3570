"""A database as the engine sees it: a DB-API connection factory plus its dialect.

The Airflow layer builds a :class:`Database` from a connection id (through
PostgresHook / MySqlHook); tests and the CLI build one from a URL. Both drivers
(psycopg 3, mysqlclient) use the ``format`` paramstyle, so every statement is
executed with a params tuple, even an empty one.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlparse

from .dialects import Dialect, Statement, dialect_for, flavour_for_version
from .errors import StatementTimeoutError

log = logging.getLogger(__name__)

#: Attempts at one DDL statement, each waiting at most the DDL lock wait for its lock.
DDL_ATTEMPTS = 10
#: Lock wait of a DDL statement (s): a queued exclusive lock queues the application behind it,
#: so it gives up quickly and retries with backoff. MySQL rounds it up to 1 s.
DDL_LOCK_WAIT_SECONDS = 1.0
#: Lock wait and statement timeout of the session that cancels another session's statement (s).
CANCEL_TIMEOUT_SECONDS = 5.0


@dataclass
class Database:
    """A connection factory and the SQL dialect of what it connects to.

    :param connect: returns a new DB-API 2 connection with autocommit off.
    :param dialect: the engine's :class:`~zdt_backfill.dialects.Dialect`.
    :param schema: schema (PostgreSQL) or database (MySQL) holding the tables; ``None``
        means the connection's default.
    :param name: a label for logs (the Airflow connection id).
    """

    connect: Callable[[], Any]
    dialect: Dialect
    schema: str | None = None
    name: str = "db"

    def __post_init__(self) -> None:
        """Wrap ``connect`` so the first connection tells the dialect which server it reached
        (a MySQL-family connection is MariaDB or Oracle MySQL: :func:`~.dialects.flavour_for_version`)."""
        raw, self._flavour_known = self.connect, not self.dialect.detects_flavour

        def connect() -> Any:
            conn = raw()
            if not self._flavour_known:
                try:
                    version = str(self.query(conn, self.dialect.version_sql())[0][0])
                    conn.rollback()
                except Exception:  # the caller's first statement will meet the same trouble
                    with contextlib.suppress(Exception):
                        conn.rollback()
                else:
                    self.dialect = flavour_for_version(self.dialect, version)
                    self._flavour_known = True
            return conn

        self.connect = connect

    def ensure_flavour(self) -> Dialect:
        """Learn which server this is now, if not yet known (one short connection), so SQL built
        before the first statement uses the right flavour's spelling (MariaDB's share lock is not
        Oracle MySQL's). An unreachable server is left for the first statement to report.

        :returns: the dialect.
        """
        if not self._flavour_known:
            with contextlib.suppress(Exception):
                self.connect().close()
        return self.dialect

    @classmethod
    def from_url(cls, url: str, schema: str | None = None, timeout_s: float | None = None) -> "Database":
        """Build from ``postgresql://user@host:port/db`` or ``mysql://user:pw@host:port/db``.

        :param timeout_s: connect and read timeout (s), for probes; ``None``: the drivers' defaults.
        :raises ValueError: an unsupported scheme.
        """
        u = urlparse(url)
        return cls.direct(
            u.scheme, u.hostname or "127.0.0.1", u.port, unquote(u.username or ""), unquote(u.password or ""),
            u.path.lstrip("/"), schema=schema, name=f"{u.hostname}:{u.port}", timeout_s=timeout_s,
        )

    @classmethod
    def direct(
        cls, engine: str, host: str, port: int | None, user: str, password: str, database: str,
        schema: str | None = None, name: str | None = None, timeout_s: float | None = None,
    ) -> "Database":
        """A database reached with the drivers directly (psycopg 3, mysqlclient).

        MySQL connections use ``utf8mb4`` (a latin1 connection turns 4-byte characters into
        ``?``). With ``timeout_s`` a connection gives up connecting, and (MySQL) reading or
        writing, after that many seconds: probes of a hung replica must not hang the caller.

        :raises ValueError: an unsupported engine.
        """
        dialect = dialect_for(engine)

        def connect() -> Any:
            return dialect.connect(host, port, user, password, database, timeout_s)

        return cls(connect=connect, dialect=dialect, schema=schema, name=name or f"{host}:{port}")

    # ------------------------------------------------------------------ sessions
    @contextlib.contextmanager
    def session(
        self, tag: str | None = None, lock_timeout_s: float | None = None, statement_timeout_s: float | None = None
    ) -> Iterator[Any]:
        """A connection for the duration of a ``with`` block, closed afterwards.

        With ``tag`` set, the session gets the backfill's safety settings (see
        :meth:`~zdt_backfill.dialects.Dialect.session_setup`) and is committed once before use.
        """
        conn = self.connect()
        try:
            if tag is not None:
                self.configure(conn, tag, lock_timeout_s or 0.5, statement_timeout_s or 60.0)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()

    def configure(self, conn: Any, tag: str, lock_timeout_s: float, statement_timeout_s: float) -> None:
        """Apply the session safety settings to an open connection and commit. A setting the
        server does not have (MySQL error 1193: MariaDB's ``max_statement_time`` on MySQL, MySQL's
        ``max_execution_time`` on MariaDB) is skipped."""
        for sql, params in self.dialect.session_setup(lock_timeout_s, statement_timeout_s, tag):
            try:
                self.execute(conn, sql, params)
            except Exception as exc:
                if self.dialect.is_unknown_variable(exc):
                    continue
                raise
        conn.commit()

    @staticmethod
    def query(conn: Any, sql: str, params: tuple = ()) -> list[tuple]:
        """Run a statement and return all its rows (a list of tuples)."""
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    @staticmethod
    def query_last(conn: Any, sql: str, params: Any = ()) -> list[tuple]:
        """Run a statement, or several separated by ``;`` (MySQL multi-statements), and return
        the rows of the last result set; every result is read, so an error in any statement
        raises here."""
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(sql, params)
            rows = list(cur.fetchall()) if cur.description else []
            nextset = getattr(cur, "nextset", None)
            while nextset is not None and nextset():
                rows = list(cur.fetchall()) if cur.description else []
            return rows

    @staticmethod
    def query_dicts(conn: Any, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """Run a statement and return its rows as dicts keyed by column name."""
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(sql, params)
            if not cur.description:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @staticmethod
    def execute(conn: Any, sql: str, params: tuple = ()) -> int:
        """Run a statement; return its row count (rows inserted/updated/deleted)."""
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def set_autocommit(self, conn: Any) -> None:
        """Put an open connection in autocommit (a probe's single reads then need no ROLLBACK)."""
        conn.rollback()
        self.dialect.set_autocommit(conn)

    def run_autocommit(self, sql: str, params: tuple = ()) -> None:
        """Run one statement outside a transaction (``VACUUM`` cannot run inside one)."""
        conn = self.connect()
        try:
            self.dialect.set_autocommit(conn)
            self.execute(conn, sql, params)
            conn.commit()
        finally:
            conn.close()

    def run_ddl(
        self, statements: list[tuple[str, tuple]], tag: str, lock_wait_s: float = DDL_LOCK_WAIT_SECONDS,
        attempts: int = DDL_ATTEMPTS, autocommit: bool = False, log_fn: Callable[[str], None] | None = None,
        fence: Callable[[Any], None] | None = None,
    ) -> list[list[tuple]]:
        """Run DDL (or any statement that takes a table-level lock) with a bounded lock wait, retried.

        Each attempt opens a session with :meth:`~zdt_backfill.dialects.Dialect.ddl_session_setup` (PostgreSQL
        ``lock_timeout``; MySQL ``lock_wait_timeout`` for the metadata lock and
        ``innodb_lock_wait_timeout``), runs ``statements`` in one transaction and commits. A lock
        wait that times out is a transient error: the attempt rolls back and the next one starts
        after an exponential backoff with jitter (tenacity), so the application is never queued
        behind this statement for longer than ``lock_wait_s`` at a time.

        :param statements: ``(sql, params)`` pairs.
        :param tag: session tag naming the run (``application_name`` / ``@zdt_backfill_run``).
        :param lock_wait_s: longest wait for a lock per attempt (s).
        :param attempts: attempts before giving up.
        :param autocommit: run outside a transaction (PostgreSQL ``VACUUM``).
        :param log_fn: called with each statement before it runs (destructive-step logging).
        :param fence: the run's fence (:meth:`~zdt_backfill.state.runstate.RunHandle.fencer`), taken
            in each attempt's transaction before the first statement: on PostgreSQL, whose DDL is
            transactional, the statements commit under it; DDL that commits by itself (MySQL's,
            ``autocommit``) is checked right before it runs.
        :returns: the rows of each statement.
        :raises RunStoppedError: the fence did not hold (nothing was run; not retried).
        :raises Exception: the last transient error after ``attempts``, or the first permanent one.
        """
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        def attempt() -> list[list[tuple]]:
            with self.session() as conn:  # rolled back and closed on any failure
                for sql, params in self.dialect.ddl_session_setup(lock_wait_s, tag):
                    self.execute(conn, sql, params)
                conn.commit()
                if fence:
                    fence(conn)
                    if autocommit:
                        conn.commit()
                if autocommit:
                    self.dialect.set_autocommit(conn)
                out = []
                for sql, params in statements:
                    if log_fn:
                        log_fn(sql)
                    out.append(self.query(conn, sql, params))
                conn.commit()
                return out

        def before_sleep(state: Any) -> None:
            log.warning("DDL attempt %d gave up waiting for its lock (%s); retrying", state.attempt_number,
                        state.outcome.exception() if state.outcome else "")

        return Retrying(
            retry=retry_if_exception(self.is_transient), wait=wait_exponential_jitter(initial=0.5, max=10),
            stop=stop_after_attempt(attempts), before_sleep=before_sleep, reraise=True,
        )(attempt)

    def apply(self, statements: list[Statement], tag: str, lock_wait_s: float = DDL_LOCK_WAIT_SECONDS,
              fence: Callable[[Any], None] | None = None) -> None:
        """Run :class:`~.dialects.ddl.Statement` s in order through :meth:`run_ddl` (bounded lock
        wait, retried; under ``fence`` when given): the plain ones in one transaction, then the DDL
        ones in another."""
        for group in ([s for s in statements if not s.ddl], [s for s in statements if s.ddl]):
            if group:
                self.run_ddl([(s.sql, s.params) for s in group], tag, lock_wait_s=lock_wait_s, fence=fence)

    def cancel_statement(self, session_id: Any, tag: str, timeout_s: float = CANCEL_TIMEOUT_SECONDS) -> None:
        """Cancel the statement session ``session_id`` is running, from a new tagged session whose
        own statements give up after ``timeout_s`` (PostgreSQL ``pg_cancel_backend``, MySQL
        ``KILL QUERY``: :meth:`~zdt_backfill.dialects.Dialect.cancel_statement_sql`); the
        cancelled statement and its transaction roll back, the session stays.

        :raises Exception: the driver's error (the caller logs it: the statement then ends by its own
            timeout).
        """
        with self.session(tag, timeout_s, timeout_s) as conn:
            self.execute(conn, self.dialect.cancel_statement_sql(), (int(session_id),))
            conn.commit()

    def resolved_schema(self, conn: Any) -> str:
        """The schema (PostgreSQL) or database (MySQL) the tables live in: :attr:`schema`, or the
        connection's current one when unset."""
        if self.schema:
            return self.schema
        return str(self.query(conn, self.dialect.current_schema_sql())[0][0])

    # ------------------------------------------------------------------ errors
    def is_permanent(self, exc: BaseException) -> bool:
        """True for errors no retry can fix: constraint violations, bad data, bad SQL
        (:meth:`~.dialects.errors.Errors.is_permanent`)."""
        return self.dialect.is_permanent(exc)

    def is_statement_timeout(self, exc: BaseException) -> bool:
        """True when a statement ran out of its statement timeout (the batch was too big for
        the time allowed): PostgreSQL 57014 "canceling statement due to statement timeout",
        MariaDB 1969, MySQL 3024."""
        return isinstance(exc, StatementTimeoutError) or self.dialect.is_statement_timeout(exc)

    def is_transient(self, exc: BaseException) -> bool:
        """True for errors a retry can fix: lock waits, deadlocks, timeouts, lost connections."""
        return self.dialect.is_transient(exc)
