"""Every engine difference, in one package: one module per role, one class per engine that
answers for all of them.

==================  ==============================================================================
:mod:`.base`        naming (identifiers always quoted by SQLAlchemy's preparer), key ranges, the clock
:mod:`.types`       column types, the one typed projection, the value encodings the checksums hash
:mod:`.rows`        row-copy SQL: keyset chunk ends, copy/fill batches, the fused batch, repair
:mod:`.compare`     validation SQL: chunk checksums, row diffs, the checklist, the dual-write check
:mod:`.catalog`     columns, key and unique indexes, row estimates, relation kinds
:mod:`.ddl`         ``TRUNCATE``, the legacy drop/rename, the storage reclaim, sequences
:mod:`.triggers`    the dual-write ("up") triggers on the legacy table (``dual_write: trigger``)
:mod:`.schema`      the ``zdt_*`` control tables' DDL
:mod:`.session`     the driver, session settings (lock waits, timeouts, tags), cancelling a statement
:mod:`.errors`      transient vs permanent errors, statement timeouts
:mod:`.explain`     ``EXPLAIN`` of the batch statement and what it says about the source
:mod:`.monitor`     replica status, the heartbeat, load signals, pre-flight's settings, diagnostics
:mod:`.inventory`   server flavour, version, settings and table schemas, for environment parity
==================  ==============================================================================

Rules every builder follows:

- identifiers are quoted by SQLAlchemy's dialect ``identifier_preparer`` (after
  :func:`~zdt_backfill.identifiers.validate_identifier`); values are bound ``%s`` parameters
  (psycopg 3 and mysqlclient both use the ``format`` paramstyle);
- keyset ranges only (``key > %s AND key <= %s``), never ``OFFSET`` paging;
- a batch is one set-based statement (``INSERT ... SELECT`` or ``UPDATE``), never a
  row-by-row loop;
- the builders are pure (unit-tested without a database: ``tests/unit/test_dialects.py``).

Engines: :class:`PostgresDialect`; the MySQL family :class:`MySQLDialect` (Oracle MySQL) and
:class:`MariaDBDialect` (a flavour of it). Which flavour a MySQL connection reaches is read from
the server itself (:func:`flavour_for_version`), never from a conf field. Outside this package no
module branches on an engine's name (``tests/unit/test_dialect_boundary.py``). To add an engine or
a flavour: one class here composed of one part per role, and its tests.
"""

from __future__ import annotations

from .base import DialectBase, MySQLDialectBase, Params, PostgresDialectBase, Range, expr
from .catalog import Catalog, MySQLCatalog, PostgresCatalog
from .compare import Compare, MySQLCompare, PostgresCompare
from .ddl import DDL, MySQLDDL, PostgresDDL, Statement
from .errors import Errors, MySQLErrors, PostgresErrors
from .explain import Explain, MySQLExplain, PostgresExplain
from .inventory import Inventory, MySQLInventory, PostgresInventory
from .monitor import Monitor, MySQLMonitor, PostgresMonitor
from .rows import MySQLRows, PostgresRows, Rows
from .schema import Schema
from .session import MySQLSession, PostgresSession, Session
from .triggers import MySQLTriggers, PostgresTriggers, Triggers
from .types import ColumnType, MySQLTypes, PostgresTypes, Types


class Dialect(Types, Rows, Compare, Catalog, DDL, Triggers, Schema, Session, Errors, Explain, Monitor, Inventory, DialectBase):
    """SQL and behaviour of one database engine, every role in one object (the type the engine
    passes around). Concrete engines: :class:`PostgresDialect`, :class:`MySQLDialect`,
    :class:`MariaDBDialect`.

    :ivar name: the engine family (``postgres`` or ``mysql``): the sqlglot dialect of expressions.
    :ivar flavour: the server (``postgres``, ``mysql`` or ``mariadb``).
    """

    flavour = "base"


class PostgresDialect(PostgresTypes, PostgresRows, PostgresCompare, PostgresCatalog, PostgresDDL, PostgresTriggers,
                      PostgresSession,
                      PostgresErrors, PostgresExplain, PostgresMonitor, PostgresInventory, PostgresDialectBase, Dialect):
    """PostgreSQL 12+ (tested on 15)."""

    flavour = "postgres"


class MySQLDialect(MySQLTypes, MySQLRows, MySQLCompare, MySQLCatalog, MySQLDDL, MySQLTriggers, MySQLSession, MySQLErrors,
                   MySQLExplain, MySQLMonitor, MySQLInventory, MySQLDialectBase, Dialect):
    """The MySQL family: MySQL 8.0+ and, through :class:`MariaDBDialect`, MariaDB 10.6+."""

    flavour = "mysql"
    SERVER_BOUNDS_DML = False  # max_execution_time bounds read-only SELECTs only


class MariaDBDialect(MySQLDialect):
    """MariaDB 10.6+ (tested on 10.11): the MySQL family's SQL, with MariaDB's own spellings."""

    flavour = "mariadb"
    SERVER_BOUNDS_DML = True  # max_statement_time bounds every statement
    share_lock = "LOCK IN SHARE MODE NOWAIT"  # MariaDB has no FOR SHARE
    ROW_ALIAS = None  # no row alias: ON DUPLICATE KEY UPDATE c = VALUES(c)
    ROW_DIGEST = "md5({})"  # faster than SHA-256 here; Oracle MySQL 9.7 has no MD5()
    GLOBAL_STATUS_TABLE = "information_schema.global_status"
    REPLICA_WRITABLE_SQL = "SELECT @@GLOBAL.read_only = 0, concat('read_only=', @@GLOBAL.read_only)"

    def explain_session(self):
        return []  # one JSON plan format


#: Engine names (URL schemes, Airflow connection types) -> dialect class.
_ENGINES: dict[str, type[Dialect]] = {
    "postgres": PostgresDialect, "postgresql": PostgresDialect,
    "mysql": MySQLDialect, "mariadb": MariaDBDialect,
}


def dialect_for(engine: str) -> Dialect:
    """The :class:`Dialect` of an engine name: ``postgres``/``postgresql`` (a URL scheme such as
    ``postgresql+psycopg`` too), ``mysql`` or ``mariadb``. A ``mysql`` dialect is the family's;
    :func:`flavour_for_version` refines it once the server answered.

    :raises ValueError: unknown engine.
    """
    cls = _ENGINES.get(engine.split("+")[0].lower())
    if cls is None:
        raise ValueError(f"unsupported database engine {engine!r}: use PostgreSQL or MySQL/MariaDB")
    return cls()


def flavour_for_version(dialect: Dialect, version: str) -> Dialect:
    """The dialect of the server that answered ``SELECT VERSION()``: a MySQL-family connection
    reaching MariaDB gets :class:`MariaDBDialect`, one reaching Oracle MySQL :class:`MySQLDialect`;
    other engines keep theirs."""
    if not isinstance(dialect, MySQLDialect):
        return dialect
    cls = MariaDBDialect if "mariadb" in version.lower() else MySQLDialect
    return dialect if type(dialect) is cls else cls()


__all__ = [
    "ColumnType", "Dialect", "DialectBase", "MariaDBDialect", "MySQLDialect", "Params", "PostgresDialect", "Range",
    "Statement", "dialect_for", "expr", "flavour_for_version",
]
