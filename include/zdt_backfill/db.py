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

from .dialects import Dialect, dialect_for

log = logging.getLogger(__name__)

#: MySQL/MariaDB error codes worth retrying: lock wait timeout, deadlock, server gone
#: away, lost connection, too many connections, can't connect, query interrupted.
MYSQL_TRANSIENT_CODES = frozenset({1205, 1213, 2006, 2013, 1040, 2003, 1317, 1927})
#: PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not
#: available (lock_timeout), query canceled (statement_timeout), admin shutdown,
#: cannot connect now, and the connection-exception class 08.
PG_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P03"})


@dataclass
class Database:
    """A connection factory and the SQL dialect of what it connects to.

    :param connect: returns a new DB-API 2 connection with autocommit off.
    :param dialect: the engine's :class:`~.dialects.Dialect`.
    :param schema: schema (PostgreSQL) or database (MySQL) holding the tables; ``None``
        means the connection's default.
    :param name: a label for logs (the Airflow connection id).
    """

    connect: Callable[[], Any]
    dialect: Dialect
    schema: str | None = None
    name: str = "db"

    @classmethod
    def from_url(cls, url: str, schema: str | None = None) -> "Database":
        """Build from ``postgresql://user@host:port/db`` or ``mysql://user:pw@host:port/db``.

        :raises ValueError: an unsupported scheme.
        """
        u = urlparse(url)
        scheme = u.scheme.split("+")[0]
        dialect = dialect_for("postgres" if scheme.startswith("postgres") else scheme)
        if dialect.name == "postgres":

            def connect() -> Any:
                import psycopg

                return psycopg.connect(
                    host=u.hostname, port=u.port or 5432, user=unquote(u.username or "postgres"),
                    password=unquote(u.password or ""), dbname=u.path.lstrip("/") or "postgres",
                )
        else:

            def connect() -> Any:
                import MySQLdb

                return MySQLdb.connect(
                    host=u.hostname, port=u.port or 3306, user=unquote(u.username or "root"),
                    password=unquote(u.password or ""), database=u.path.lstrip("/"), autocommit=False,
                )

        return cls(connect=connect, dialect=dialect, schema=schema, name=f"{u.hostname}:{u.port}")

    # ------------------------------------------------------------------ sessions
    @contextlib.contextmanager
    def session(
        self, tag: str | None = None, lock_timeout_s: float | None = None, statement_timeout_s: float | None = None
    ) -> Iterator[Any]:
        """A connection for the duration of a ``with`` block, closed afterwards.

        With ``tag`` set, the session gets the backfill's safety settings (see
        :meth:`~.dialects.Dialect.session_setup`) and is committed once before use.
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
        """Apply the session safety settings to an open connection and commit."""
        for sql, params in self.dialect.session_setup(lock_timeout_s, statement_timeout_s, tag):
            self.execute(conn, sql, params)
        conn.commit()

    @staticmethod
    def query(conn: Any, sql: str, params: tuple = ()) -> list[tuple]:
        """Run a statement and return all its rows (a list of tuples)."""
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

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

    def run_autocommit(self, sql: str, params: tuple = ()) -> None:
        """Run one statement outside a transaction (``VACUUM`` cannot run inside one)."""
        conn = self.connect()
        try:
            if self.dialect.name == "postgres":
                conn.autocommit = True
            self.execute(conn, sql, params)
            conn.commit()
        finally:
            conn.close()

    # ------------------------------------------------------------------ errors
    def is_permanent(self, exc: BaseException) -> bool:
        """True for errors no retry can fix: constraint violations, bad data, bad SQL."""
        if self.dialect.name == "postgres":
            import psycopg

            kinds: tuple[type[BaseException], ...] = (
                psycopg.IntegrityError, psycopg.DataError, psycopg.ProgrammingError,
            )
        else:
            import MySQLdb

            kinds = (MySQLdb.IntegrityError, MySQLdb.DataError, MySQLdb.ProgrammingError)
        return isinstance(exc, kinds) and not self.is_transient(exc)

    def is_transient(self, exc: BaseException) -> bool:
        """True for errors a retry can fix: lock waits, deadlocks, timeouts, lost connections."""
        if self.dialect.name == "postgres":
            import psycopg

            sqlstate = getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
            if sqlstate in PG_TRANSIENT_SQLSTATES or (sqlstate or "").startswith("08"):
                return True
            return isinstance(exc, psycopg.OperationalError) and sqlstate is None
        import MySQLdb

        if isinstance(exc, MySQLdb.OperationalError):
            code = exc.args[0] if exc.args else None
            return code in MYSQL_TRANSIENT_CODES
        return False
