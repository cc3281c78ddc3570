"""What a server is, for environment parity (:mod:`zdt_backfill.verify.parity`): its flavour and
version, the settings that shape a backfill (each with the severity of a difference), and the
schema of the tables involved (columns in order, indexes as descriptors). Every name is a bound
value, never interpolated.
"""

from __future__ import annotations

import re
from typing import Any

from .base import DialectBase, Params

FATAL = "fatal"
WARN = "warn"


class Inventory(DialectBase):
    """The shared part of the inventory role."""

    #: Settings compared, with the severity of a difference (see :mod:`zdt_backfill.verify.parity`).
    parity_settings: dict[str, str] = {}

    def version_sql(self) -> str:
        raise NotImplementedError

    def parse_version(self, row: tuple) -> tuple[str, str]:
        """``(flavour, version)`` from the row of :meth:`version_sql`: ``("PostgreSQL", "15.4")``,
        ``("MariaDB", "10.11.6")``, ``("MySQL", "9.7.4")``."""
        raise NotImplementedError

    def release_series(self, version: str) -> str:
        """The release whose difference is fatal: PostgreSQL's major, MySQL/MariaDB's major.minor."""
        raise NotImplementedError

    def settings_sql(self) -> tuple[str, Params]:
        """Rows ``(name, value)`` of the settings :attr:`parity_settings` names, as a fresh session sees them."""
        raise NotImplementedError

    def parse_settings(self, rows: list[tuple]) -> dict[str, str | None]:
        """``{setting: value}`` for every name of :attr:`parity_settings` (``None``: unknown here)."""
        got = {str(k).lower(): str(v) for k, v in rows}
        return {n: got.get(n) for n in self.parity_settings}

    def table_exists_sql(self) -> str:
        """Params ``(schema_or_null, table)``: one count."""
        raise NotImplementedError

    def parity_columns_sql(self) -> str:
        """Params ``(schema_or_null, table)``: rows ``(name, type, nullable)`` in order."""
        raise NotImplementedError

    def indexes_sql(self) -> str:
        """Params ``(schema_or_null, table)``: the table's indexes, read by :meth:`parse_indexes`."""
        raise NotImplementedError

    def parse_indexes(self, rows: list[tuple]) -> dict[str, tuple[list[str], bool, str | None, str | None, bool]]:
        """``{index: (columns in order, unique, partial WHERE, method, valid)}``."""
        raise NotImplementedError


class PostgresInventory(Inventory):
    """The Postgres part of the inventory role."""

    parity_settings = {
        "lock_timeout": WARN, "statement_timeout": WARN, "shared_buffers": WARN, "work_mem": WARN,
        "wal_level": FATAL, "max_connections": WARN, "default_transaction_isolation": FATAL,
    }

    def version_sql(self):
        return "SELECT current_setting('server_version'), current_setting('server_version_num')"

    def parse_version(self, row):
        text, num = str(row[0]), int(row[1])
        return "PostgreSQL", f"{num // 10000}.{num % 10000}" if num >= 100000 else text.split()[0]

    def release_series(self, version):
        return version.split(".")[0]

    def settings_sql(self):
        names = list(self.parity_settings)
        marks = ", ".join(["%s"] * len(names))
        return f"SELECT name, current_setting(name) FROM pg_settings WHERE name IN ({marks})", tuple(names)

    def table_exists_sql(self):
        return (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s"
        )

    def parity_columns_sql(self):
        return (
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s"
            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        )

    def indexes_sql(self):
        return (
            "SELECT i.relname,"
            " array(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnkeyatts) k ORDER BY k),"
            " x.indisunique, pg_get_expr(x.indpred, x.indrelid, true), am.amname, x.indisvalid"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = i.relam"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND t.relname = %s ORDER BY i.relname"
        )

    def parse_indexes(self, rows):
        return {str(name): ([str(c) for c in cols], bool(unique), where, method, bool(valid))
                for name, cols, unique, where, method, valid in rows}


class MySQLInventory(Inventory):
    """The MySQL part of the inventory role (MySQL and MariaDB)."""

    parity_settings = {
        "innodb_lock_wait_timeout": WARN, "lock_wait_timeout": WARN, "innodb_buffer_pool_size": WARN,
        "binlog_format": FATAL, "transaction_isolation": FATAL, "max_connections": WARN, "sql_mode": FATAL,
    }

    def version_sql(self):
        return "SELECT VERSION()"

    def parse_version(self, row):
        text = str(row[0])
        flavour = "MariaDB" if "mariadb" in text.lower() else "MySQL"
        m = re.match(r"(?:5\.5\.5-)?(\d+\.\d+\.\d+)", text)  # MariaDB 10.x may announce 5.5.5-10.x
        return flavour, (m.group(1) if m else text)

    def release_series(self, version):
        return ".".join(version.split(".")[:2])

    def settings_sql(self):
        names = [*self.parity_settings, "tx_isolation"]  # MariaDB up to 11.0 names it tx_isolation
        marks = ", ".join(["%s"] * len(names))
        return f"SHOW SESSION VARIABLES WHERE Variable_name IN ({marks})", tuple(names)

    def parse_settings(self, rows):
        got = {str(k).lower(): str(v) for k, v in rows}
        if "transaction_isolation" not in got and "tx_isolation" in got:
            got["transaction_isolation"] = got["tx_isolation"]
        out = {n: got.get(n) for n in self.parity_settings}
        if out.get("sql_mode") is not None:
            out["sql_mode"] = ",".join(sorted(m for m in out["sql_mode"].split(",") if m))
        return out

    def table_exists_sql(self):
        return (
            "SELECT count(*) FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = coalesce(%s, database()) AND TABLE_NAME = %s"
        )

    def parity_columns_sql(self):
        return (
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES' FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = coalesce(%s, database()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
        )

    def indexes_sql(self):
        return (
            "SELECT INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE, SUB_PART, INDEX_TYPE"
            " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = coalesce(%s, database()) AND TABLE_NAME = %s"
            " ORDER BY INDEX_NAME, SEQ_IN_INDEX"
        )

    def parse_indexes(self, rows):
        grouped: dict[str, dict[str, Any]] = {}
        for name, _seq, col, non_unique, sub_part, itype in rows:
            g = grouped.setdefault(str(name), {"cols": [], "unique": not int(non_unique), "type": itype})
            c = str(col) if col is not None else "(expression)"
            g["cols"].append(f"{c}({sub_part})" if sub_part else c)
        return {name: (g["cols"], g["unique"], None, g["type"], True) for name, g in grouped.items()}
