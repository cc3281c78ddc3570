"""Environment parity: does staging behave like production for this backfill?

A backfill rehearsed on staging proves something about production only if the two run the
same server, with the settings that shape the backfill's behaviour, on the same schema. This
is the seed's "enforce environment parity between staging and production":
:func:`compare` reads both environments (read-only: catalog and settings queries in a
``READ ONLY`` transaction that is rolled back) and returns a :class:`ParityReport` of every
:class:`Difference`, each with a severity.

What is compared, and why each difference is ``fatal`` or ``warn``:

``fatal``: the rehearsal's behaviour or plan would not carry over.

- **Server flavour and release series** (``server`` / ``flavour``, ``version``): PostgreSQL
  vs MySQL vs MariaDB, PostgreSQL's major version (15 vs 16), MySQL/MariaDB's release series
  (the first two numbers: 8.0 vs 8.4, 10.6 vs 10.11, which change the optimizer, online DDL
  and defaults). A difference within a series (15.4 vs 15.6, 10.11.6 vs 10.11.8) is ``warn``.
- **Schema of the tables involved** (``table``, ``column``, ``column_type``,
  ``column_nullable``, ``index``): a missing table or column, a different column type or
  nullability changes what the copy writes (casts, NULL keys, refused rows); a missing or
  different index (name, columns in order, unique, partial ``WHERE``, method, valid) changes
  the batch plan: a keyset batch without its index is a full scan under lock on production,
  and MySQL's ``FORCE INDEX`` names the index.
- **wal_level / binlog_format**: what the backfill's writes cost the replicas and whether
  row-based replication (and its lag) is what staging measured.
- **sql_mode**: strictness decides whether a bad value is refused or silently truncated, so
  the copied data itself differs.
- **default_transaction_isolation / transaction_isolation** (``tx_isolation`` on MariaDB up
  to 11.0): the snapshot each batch and checksum reads, and the gap locks MySQL takes.

``warn``: the rehearsal's numbers (rate, lag, lock waits) would not carry over, but the
backfill's correctness and plan would.

- **Timeouts** (``lock_timeout``, ``statement_timeout``, ``innodb_lock_wait_timeout``,
  ``lock_wait_timeout``): the backfill sets its own per session, so a different server
  default changes only how the application's sessions wait around it.
- **Capacity** (``shared_buffers``, ``work_mem``, ``innodb_buffer_pool_size``,
  ``max_connections``): production is usually bigger than staging on purpose.
- **Column order** (``column_order``): the engine always names its columns.

Settings are read in a fresh session, as the backfill's own sessions will see them (so a
``ALTER DATABASE ... SET`` or ``SET GLOBAL`` shows). The catalog SQL lives here for now and
belongs in :mod:`zdt_backfill.dialects` later; every name is a bound value, never interpolated.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..db import Database
from ..errors import PreflightError
from ..identifiers import validate_identifier

FATAL = "fatal"
WARN = "warn"

#: Settings compared, per engine, with the severity of a difference (see the module docstring).
PG_SETTINGS: dict[str, str] = {
    "lock_timeout": WARN,
    "statement_timeout": WARN,
    "shared_buffers": WARN,
    "work_mem": WARN,
    "wal_level": FATAL,
    "max_connections": WARN,
    "default_transaction_isolation": FATAL,
}
MYSQL_SETTINGS: dict[str, str] = {
    "innodb_lock_wait_timeout": WARN,
    "lock_wait_timeout": WARN,
    "innodb_buffer_pool_size": WARN,
    "binlog_format": FATAL,
    "transaction_isolation": FATAL,
    "max_connections": WARN,
    "sql_mode": FATAL,
}
#: Severity of schema and server differences, by :attr:`Difference.kind`.
KIND_SEVERITY: dict[str, str] = {
    "flavour": FATAL,
    "table": FATAL,
    "column": FATAL,
    "column_type": FATAL,
    "column_nullable": FATAL,
    "column_order": WARN,
    "index": FATAL,
}


@dataclass(frozen=True)
class Difference:
    """One thing that differs between staging and production.

    :ivar kind: ``flavour``, ``version``, ``setting``, ``table``, ``column``, ``column_type``,
        ``column_nullable``, ``column_order`` or ``index``.
    :ivar name: what differs: ``server``, the setting, ``table``, ``table.column`` or ``table.index``.
    :ivar staging: its value on staging (``None``: absent there).
    :ivar production: its value on production (``None``: absent there).
    :ivar severity: ``fatal`` or ``warn``.
    """

    kind: str
    name: str
    staging: Any
    production: Any
    severity: str

    def line(self) -> str:
        return f"{self.severity.upper()} {self.kind} {self.name}: staging {self.staging!r}, production {self.production!r}"


@dataclass
class ParityReport:
    """Every difference found by :func:`compare`; ``ok`` when none is fatal."""

    staging: str
    production: str
    tables: list[str]
    differences: list[Difference] = field(default_factory=list)

    @property
    def fatal(self) -> list[Difference]:
        return [d for d in self.differences if d.severity == FATAL]

    @property
    def warnings(self) -> list[Difference]:
        return [d for d in self.differences if d.severity == WARN]

    @property
    def ok(self) -> bool:
        return not self.fatal

    def to_dict(self) -> dict[str, Any]:
        return {
            "staging": self.staging, "production": self.production, "tables": list(self.tables),
            "ok": self.ok, "fatal": len(self.fatal), "warn": len(self.warnings),
            "differences": [asdict(d) for d in self.differences],
        }

    def raise_if_fatal(self) -> None:
        """:raises PreflightError: listing every fatal difference."""
        if self.fatal:
            raise PreflightError(
                f"environment parity: {len(self.fatal)} fatal difference(s) between staging {self.staging}"
                f" and production {self.production}: " + "; ".join(d.line() for d in self.fatal)
            )


# ---------------------------------------------------------------------- catalog SQL
# (belongs in the dialects; here until parity is wired into pre-flight)
def pg_version_sql() -> str:
    return "SELECT current_setting('server_version'), current_setting('server_version_num')"


def mysql_version_sql() -> str:
    return "SELECT VERSION()"


def pg_settings_sql(names: list[str]) -> tuple[str, tuple]:
    marks = ", ".join(["%s"] * len(names))
    return f"SELECT name, current_setting(name) FROM pg_settings WHERE name IN ({marks})", tuple(names)


def mysql_settings_sql(names: list[str]) -> tuple[str, tuple]:
    marks = ", ".join(["%s"] * len(names))
    return f"SHOW SESSION VARIABLES WHERE Variable_name IN ({marks})", tuple(names)


def pg_columns_sql() -> str:
    """Params ``(schema_or_null, table)``: rows ``(name, type, nullable)`` in order."""
    return (
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s"
        " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    )


def mysql_columns_sql() -> str:
    """Params ``(schema_or_null, table)``: rows ``(name, type, nullable)`` in order."""
    return (
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES' FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = coalesce(%s, database()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
    )


def pg_indexes_sql() -> str:
    """Params ``(schema_or_null, table)``: rows ``(name, [key columns], unique, where, method, valid)``."""
    return (
        "SELECT i.relname,"
        " array(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnkeyatts) k ORDER BY k),"
        " x.indisunique, pg_get_expr(x.indpred, x.indrelid, true), am.amname, x.indisvalid"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = i.relam"
        " WHERE n.nspname = coalesce(%s, current_schema()) AND t.relname = %s ORDER BY i.relname"
    )


def mysql_indexes_sql() -> str:
    """Params ``(schema_or_null, table)``: one row per index column
    ``(index, seq, column, non_unique, sub_part, index_type)``."""
    return (
        "SELECT INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE, SUB_PART, INDEX_TYPE"
        " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = coalesce(%s, database()) AND TABLE_NAME = %s"
        " ORDER BY INDEX_NAME, SEQ_IN_INDEX"
    )


def pg_table_exists_sql() -> str:
    return (
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s"
    )


def mysql_table_exists_sql() -> str:
    return (
        "SELECT count(*) FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = coalesce(%s, database()) AND TABLE_NAME = %s"
    )


# ---------------------------------------------------------------------- snapshot
@dataclass
class Snapshot:
    """What :func:`compare` reads from one environment."""

    engine: str
    flavour: str  # PostgreSQL, MySQL or MariaDB
    version: str  # 15.4, 10.11.6
    settings: dict[str, str | None]
    #: table -> None (absent) or {"columns": [(name, type, nullable)], "indexes": {name: descriptor}}
    tables: dict[str, dict[str, Any] | None]

    @property
    def series(self) -> str:
        """The release whose difference is fatal: PostgreSQL's major, MySQL/MariaDB's major.minor."""
        parts = self.version.split(".")
        return parts[0] if self.engine == "postgres" else ".".join(parts[:2])


def _pg_version(text: str, num: str) -> str:
    n = int(num)
    return f"{n // 10000}.{n % 10000}" if n >= 100000 else text.split()[0]


def _mysql_version(text: str) -> tuple[str, str]:
    flavour = "MariaDB" if "mariadb" in text.lower() else "MySQL"
    m = re.match(r"(?:5\.5\.5-)?(\d+\.\d+\.\d+)", text)  # MariaDB 10.x may announce 5.5.5-10.x
    return flavour, (m.group(1) if m else text)


def describe_index(columns: list[str], unique: bool, where: str | None, method: str | None,
                   valid: bool = True) -> str:
    """``UNIQUE btree (a, b) WHERE ...`` — the form an index is compared and reported in."""
    text = ("UNIQUE " if unique else "") + (f"{method.lower()} " if method else "") + f"({', '.join(columns)})"
    if where:
        text += f" WHERE {where}"
    if not valid:
        text += " INVALID"
    return text


def snapshot(db: Database, tables: list[str]) -> Snapshot:
    """Read one environment's server, settings and table schemas in a read-only session."""
    pg = db.dialect.name == "postgres"
    with db.session() as conn:  # no tag: the server's defaults, as a fresh session sees them
        db.execute(conn, "SET TRANSACTION READ ONLY" if pg else "START TRANSACTION READ ONLY")
        if pg:
            text, num = db.query(conn, pg_version_sql())[0]
            flavour, version = "PostgreSQL", _pg_version(str(text), str(num))
            names = list(PG_SETTINGS)
            sql, params = pg_settings_sql(names)
            got = {str(k): str(v) for k, v in db.query(conn, sql, params)}
        else:
            flavour, version = _mysql_version(str(db.query(conn, mysql_version_sql())[0][0]))
            names = [*MYSQL_SETTINGS, "tx_isolation"]
            sql, params = mysql_settings_sql(names)
            got = {str(k).lower(): str(v) for k, v in db.query(conn, sql, params)}
            if "transaction_isolation" not in got and "tx_isolation" in got:
                got["transaction_isolation"] = got["tx_isolation"]
            names = list(MYSQL_SETTINGS)
        settings = {n: got.get(n) for n in names}
        if "sql_mode" in settings and settings["sql_mode"] is not None:
            settings["sql_mode"] = ",".join(sorted(m for m in settings["sql_mode"].split(",") if m))
        out: dict[str, dict[str, Any] | None] = {}
        for table in tables:
            params = (db.schema, table)
            if not db.query(conn, pg_table_exists_sql() if pg else mysql_table_exists_sql(), params)[0][0]:
                out[table] = None
                continue
            columns = [(str(n), str(t), bool(nl))
                       for n, t, nl in db.query(conn, pg_columns_sql() if pg else mysql_columns_sql(), params)]
            indexes: dict[str, str] = {}
            if pg:
                for name, cols, unique, where, method, valid in db.query(conn, pg_indexes_sql(), params):
                    indexes[str(name)] = describe_index([str(c) for c in cols], bool(unique), where, method, bool(valid))
            else:
                grouped: dict[str, dict[str, Any]] = {}
                for name, _seq, col, non_unique, sub_part, itype in db.query(conn, mysql_indexes_sql(), params):
                    g = grouped.setdefault(str(name), {"cols": [], "unique": not int(non_unique), "type": itype})
                    c = str(col) if col is not None else "(expression)"
                    g["cols"].append(f"{c}({sub_part})" if sub_part else c)
                for name, g in grouped.items():
                    indexes[name] = describe_index(g["cols"], g["unique"], None, g["type"])
            out[table] = {"columns": columns, "indexes": indexes}
        conn.rollback()
    return Snapshot(db.dialect.name, flavour, version, settings, out)


# ---------------------------------------------------------------------- comparison
def diff_snapshots(staging: Snapshot, production: Snapshot) -> list[Difference]:
    """The differences between two snapshots (pure: unit-testable without a server)."""
    out: list[Difference] = []
    s, p = staging, production
    if s.flavour != p.flavour:
        # settings and type names of different engines do not map onto each other
        return [Difference("flavour", "server", s.flavour, p.flavour, FATAL)]
    if s.version != p.version:
        out.append(Difference("version", "server", f"{s.flavour} {s.version}", f"{p.flavour} {p.version}",
                              FATAL if s.series != p.series else WARN))
    severities = PG_SETTINGS if s.engine == "postgres" else MYSQL_SETTINGS
    for name, severity in severities.items():
        if s.settings.get(name) != p.settings.get(name):
            out.append(Difference("setting", name, s.settings.get(name), p.settings.get(name), severity))
    for table in [*s.tables, *(t for t in p.tables if t not in s.tables)]:
        out.extend(_diff_table(table, s.tables.get(table), p.tables.get(table)))
    return out


def _diff_table(table: str, s: dict[str, Any] | None, p: dict[str, Any] | None) -> list[Difference]:
    if s is None and p is None:
        return []  # absent on both: the same (pre-flight refuses a missing table)
    if s is None or p is None:
        return [Difference("table", table, "present" if s else None, "present" if p else None, FATAL)]
    out: list[Difference] = []
    scols = {n: (t, nl) for n, t, nl in s["columns"]}
    pcols = {n: (t, nl) for n, t, nl in p["columns"]}
    for name in [n for n, _, _ in s["columns"]] + [n for n, _, _ in p["columns"] if n not in scols]:
        key = f"{table}.{name}"
        a, b = scols.get(name), pcols.get(name)
        if a is None or b is None:
            def show(c: tuple[str, bool] | None) -> str | None:
                return None if c is None else f"{c[0]}{'' if c[1] else ' NOT NULL'}"
            out.append(Difference("column", key, show(a), show(b), KIND_SEVERITY["column"]))
            continue
        if a[0] != b[0]:
            out.append(Difference("column_type", key, a[0], b[0], KIND_SEVERITY["column_type"]))
        if a[1] != b[1]:
            out.append(Difference("column_nullable", key, "NULL" if a[1] else "NOT NULL",
                                  "NULL" if b[1] else "NOT NULL", KIND_SEVERITY["column_nullable"]))
    sorder = [n for n, _, _ in s["columns"] if n in pcols]
    porder = [n for n, _, _ in p["columns"] if n in scols]
    if sorder != porder:
        out.append(Difference("column_order", table, sorder, porder, KIND_SEVERITY["column_order"]))
    for name in sorted(s["indexes"].keys() | p["indexes"].keys()):
        a, b = s["indexes"].get(name), p["indexes"].get(name)
        if a != b:
            out.append(Difference("index", f"{table}.{name}", a, b, KIND_SEVERITY["index"]))
    return out


def compare(staging: Database, production: Database, tables: list[str]) -> ParityReport:
    """Compare two environments' server, settings and the schema of ``tables``. Read-only.

    :param staging: the environment the backfill was rehearsed on.
    :param production: the environment it will run on.
    :param tables: the tables involved (source and target), in each side's ``schema``.
    :raises ConfigError: a table name that is not a plain identifier.
    """
    tables = [validate_identifier(t, "table") for t in dict.fromkeys(tables)]
    differences = diff_snapshots(snapshot(staging, tables), snapshot(production, tables))
    return ParityReport(staging.name, production.name, tables, differences)
