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
``ALTER DATABASE ... SET`` or ``SET GLOBAL`` shows). The catalog SQL is the dialects'
(:mod:`zdt_backfill.dialects.inventory`); every name is a bound value, never interpolated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..db import Database
from ..dialects import dialect_for
from ..dialects.inventory import FATAL, WARN
from ..errors import PreflightError
from ..identifiers import validate_identifier

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
        return dialect_for(self.engine).release_series(self.version)


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
    d = db.dialect
    with db.session() as conn:  # no tag: the server's defaults, as a fresh session sees them
        db.execute(conn, d.read_only_begin_sql())
        flavour, version = d.parse_version(db.query(conn, d.version_sql())[0])
        settings = d.parse_settings(db.query(conn, *d.settings_sql()))
        out: dict[str, dict[str, Any] | None] = {}
        for table in tables:
            params = (db.schema, table)
            if not db.query(conn, d.table_exists_sql(), params)[0][0]:
                out[table] = None
                continue
            columns = [(str(n), str(ty), bool(nl)) for n, ty, nl in db.query(conn, d.parity_columns_sql(), params)]
            indexes = {name: describe_index(cols, unique, where, method, valid)
                       for name, (cols, unique, where, method, valid)
                       in d.parse_indexes(db.query(conn, d.indexes_sql(), params)).items()}
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
    severities = dialect_for(s.engine).parity_settings
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
