"""Error classification: which driver errors a retry can fix (transient: lock waits, deadlocks,
timeouts, lost connections), which it cannot (permanent: constraint violations, bad data, bad
SQL), and which say a statement ran out of its time.

Transient errors are how the backfill yields to the application: they are retried with backoff
and counted as *yields*, never as errors.
"""

from __future__ import annotations

from .base import DialectBase

#: MySQL/MariaDB error codes worth retrying: lock wait timeout, deadlock, server gone
#: away, lost connection, too many connections, can't connect, query interrupted.
#: 4031 (idle client disconnected by the server) and 2055 (lost connection, system error)
#: are lost connections too; 1969/3024 are statement timeouts. A ``NOWAIT`` read that meets
#: a locked row fails with 1205 (MariaDB) or 3572 (MySQL 8).
MYSQL_TRANSIENT_CODES = frozenset({1205, 1213, 2006, 2013, 2055, 4031, 1040, 2003, 1317, 1927, 1969, 3024, 3572})
#: Errors a retry cannot fix that mysqlclient raises as OperationalError: 1644 is a SIGNAL
#: from a trigger or procedure (the application refusing the row).
MYSQL_PERMANENT_CODES = frozenset({1644})
#: A statement ran out of its time: MariaDB max_statement_time (1969), MySQL max_execution_time (3024).
MYSQL_STATEMENT_TIMEOUT_CODES = frozenset({1969, 3024})
#: PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock, lock not
#: available (lock_timeout), query canceled (statement_timeout), admin shutdown,
#: cannot connect now, and the connection-exception class 08.
PG_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P03"})


def sqlstate(exc: BaseException) -> str | None:
    """A psycopg error's SQLSTATE (``None`` for other errors)."""
    return getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)


def mysql_code(exc: BaseException) -> int | None:
    """A mysqlclient error's numeric code (``None`` for other errors)."""
    args = getattr(exc, "args", None)
    return args[0] if args and isinstance(args[0], int) else None


class Errors(DialectBase):
    """The shared part of the errors role."""

    def is_transient(self, exc: BaseException) -> bool:
        """True for errors a retry can fix: lock waits, deadlocks, timeouts, lost connections."""
        raise NotImplementedError

    def is_permanent(self, exc: BaseException) -> bool:
        """True for errors no retry can fix: constraint violations, bad data, bad SQL."""
        raise NotImplementedError

    def is_statement_timeout(self, exc: BaseException) -> bool:
        """True when a statement ran out of its statement timeout (the batch was too big for the
        time allowed)."""
        raise NotImplementedError

    def is_missing_table(self, exc: BaseException) -> bool:
        """True when a statement named a table that does not exist (PostgreSQL 42P01, MySQL 1146)."""
        raise NotImplementedError

    def is_syntax_error(self, exc: BaseException) -> bool:
        """True when the server did not parse the statement (an older server's spelling)."""
        raise NotImplementedError

    def is_unknown_variable(self, exc: BaseException) -> bool:
        """True when a ``SET`` named a variable this server does not have (MySQL error 1193:
        MariaDB's ``max_statement_time`` on MySQL, MySQL's ``max_execution_time`` on MariaDB)."""
        return False


class PostgresErrors(Errors):
    """The Postgres part of the errors role."""

    def is_transient(self, exc):
        import psycopg

        state = sqlstate(exc)
        if state in PG_TRANSIENT_SQLSTATES or (state or "").startswith("08"):
            return True
        return isinstance(exc, psycopg.OperationalError) and state is None

    def is_permanent(self, exc):
        import psycopg

        kinds = (psycopg.IntegrityError, psycopg.DataError, psycopg.ProgrammingError)
        return isinstance(exc, kinds) and not self.is_transient(exc)

    def is_statement_timeout(self, exc):
        # 57014 is also a cancel (pg_cancel_backend): only the timeout's message counts here
        return sqlstate(exc) == "57014" and "statement timeout" in str(exc)

    def is_missing_table(self, exc):
        return sqlstate(exc) == "42P01"

    def is_syntax_error(self, exc):
        return sqlstate(exc) == "42601"


class MySQLErrors(Errors):
    """The MySQL part of the errors role (MySQL and MariaDB share the codes used here)."""

    def is_transient(self, exc):
        import MySQLdb

        return isinstance(exc, MySQLdb.OperationalError) and mysql_code(exc) in MYSQL_TRANSIENT_CODES

    def is_permanent(self, exc):
        import MySQLdb

        if isinstance(exc, MySQLdb.OperationalError) and mysql_code(exc) in MYSQL_PERMANENT_CODES:
            return True
        kinds = (MySQLdb.IntegrityError, MySQLdb.DataError, MySQLdb.ProgrammingError)
        return isinstance(exc, kinds) and not self.is_transient(exc)

    def is_statement_timeout(self, exc):
        return mysql_code(exc) in MYSQL_STATEMENT_TIMEOUT_CODES

    def is_missing_table(self, exc):
        return mysql_code(exc) == 1146

    def is_syntax_error(self, exc):
        return mysql_code(exc) == 1064

    def is_unknown_variable(self, exc):
        return mysql_code(exc) == 1193
