"""Validation SQL: per-chunk count + 64-bit hash sums of both sides in one statement, the row
diff, bisection spans, the checklist's queries and read-only snapshots.
"""

from __future__ import annotations

from typing import Any

from .base import DialectBase, Params, Range, expr


class Compare(DialectBase):
    """The shared part of the compare role."""

    def snapshot_sql(self) -> list[str]:
        """Statements that open a read-only REPEATABLE READ transaction with its snapshot taken
        now, so a range's checksum and its row diff read the same data. Run right after a
        commit or rollback; end the transaction with a rollback."""
        raise NotImplementedError

    def checksum_sql(self, source: str, target: str, key: str, columns: dict[str, str], rng: Range,
                     schema: str | None = None, casts: dict[str, str] | None = None) -> tuple[str, Params]:
        """One statement returning ``(source_rows, source_sum, target_rows, target_sum)`` for a range.

        The source side hashes the *typed projection* (key and each column expression cast
        to its target column's type, :meth:`typed_projection`); the target side hashes the
        key and the target columns. Both sides are read by one statement, so they see one
        snapshot even while the application writes. The per-row hash is 64 bits (PostgreSQL
        ``hashtextextended``, MySQL the first 64 bits of MD5) over the values, each encoded by
        type (:meth:`encode_value`) as hex, NULL spelled ``N`` (:meth:`row_hash`); summed per
        range, which is order-independent
        (pt-table-checksum XORs CRC32s; a sum does not cancel duplicate rows).
        ``casts`` maps target columns to their :class:`ColumnType` (or type name).
        """
        k = self.quote(key)
        src_pred, src_params = self.range_predicate(key, rng)
        tgt_pred, tgt_params = self.range_predicate(key, rng)
        types = {c: self._column_type(t) for c, t in (casts or {}).items()}
        col_types = [None, *(types.get(c) for c in columns)]
        src_hash = self.row_hash([k, *self.typed_projection(columns, types)], col_types)
        tgt_hash = self.row_hash([k, *(self.quote(c) for c in columns)], col_types)
        sql = (
            "SELECT s.n, s.h, t.n, t.h FROM "
            f"(SELECT count(*) AS n, coalesce(sum(x.h), 0) AS h FROM (SELECT {src_hash} AS h "
            f"FROM {self.table(source, schema)} WHERE {src_pred}) AS x) AS s CROSS JOIN "
            f"(SELECT count(*) AS n, coalesce(sum(y.h), 0) AS h FROM (SELECT {tgt_hash} AS h "
            f"FROM {self.table(target, schema)} WHERE {tgt_pred}) AS y) AS t"
        )
        return sql, src_params + tgt_params

    def key_span_sql(self, source: str, target: str, key: str, rng: Range,
                     schema: str | None = None) -> tuple[str, Params]:
        """``(min key, max key)`` over source and target together in a range (four index reads;
        NULLs when both are empty there): the bounds a differing chunk is bisected between."""
        k = self.quote(key)
        pred, params = self.range_predicate(key, rng)
        parts = [f"SELECT {agg}({k}) AS k FROM {self.table(t, schema)} WHERE {pred}"
                 for t in (source, target) for agg in ("min", "max")]
        return f"SELECT min(b.k), max(b.k) FROM ({' UNION ALL '.join(parts)}) AS b", params * 4

    def nulls_left_sql(self, source: str, target: str, key: str, columns: dict[str, str],
                       schema: str | None = None, copy_mode: bool = True) -> tuple[str, Params]:
        """One row: per target column (``columns`` order), the rows whose target value is NULL while
        the expected value (the source expression) is not (the checklist's "no NULL left")."""
        k = self.quote(key)
        exprs = ", ".join(f"{expr(e)} AS {self.quote('zdt_c' + str(i))}" for i, e in enumerate(columns.values()))
        sums = ", ".join(
            f"coalesce(sum(CASE WHEN t.{self.quote(c)} IS NULL AND s.{self.quote('zdt_c' + str(i))} IS NOT NULL"
            " THEN 1 ELSE 0 END), 0)" for i, c in enumerate(columns)
        )
        src = f"(SELECT {k}, {exprs} FROM {self.table(source, schema)}) AS s"
        return f"SELECT {sums} FROM {src} JOIN {self.table(target, schema)} AS t ON t.{k} = s.{k}", ()

    def foreign_keys_sql(self) -> str:
        """Params ``(schema_or_null, table, schema_or_null, table)``: single-column foreign keys from
        or to ``table``, rows ``(name, child_table, child_column, parent_table, parent_column)``."""
        raise NotImplementedError

    def orphans_sql(self, child: str, child_col: str, parent: str, parent_col: str,
                    schema: str | None = None) -> str:
        """Rows of ``child`` whose non-NULL ``child_col`` has no ``parent.parent_col`` (an anti-join)."""
        cc, pc = self.quote(child_col), self.quote(parent_col)
        return (f"SELECT count(*) FROM {self.table(child, schema)} AS c WHERE c.{cc} IS NOT NULL AND NOT EXISTS"
                f" (SELECT 1 FROM {self.table(parent, schema)} AS p WHERE p.{pc} = c.{cc})")

    def cache_hit_sql(self) -> str:
        """One row ``(cache misses, cache read requests)`` (counters since the server started)."""
        raise NotImplementedError

    def diff_sql(self, source: str, target: str, key: str, columns: dict[str, str], rng: Range,
                 schema: str | None = None, copy_mode: bool = True,
                 casts: dict[str, str] | None = None) -> tuple[str, Params]:
        """Keys that differ in a range: rows ``(key, kind)`` with kind ``missing``,
        ``different`` or ``extra``.

        Run only on ranges whose checksums differ, in the checksum's snapshot (see
        :meth:`snapshot_sql`). The source's typed projection is computed in a derived table,
        so column expressions resolve against the source alone. Values compare NULL-safely
        on the encodings the checksum hashes (:meth:`null_safe_equal`), so every range whose
        checksum differs has its differing keys named (collations are often
        case-insensitive, and charsets mixed).
        """
        k = self.quote(key)
        types = {c: self._column_type(t) for c, t in (casts or {}).items()}
        exprs = ", ".join(
            f"{e} AS {self.quote('zdt_c' + str(i))}" for i, e in enumerate(self.typed_projection(columns, types))
        )
        src_pred, src_params = self.range_predicate(key, rng)
        equal = " AND ".join(
            self.null_safe_equal(f"t.{self.quote(c)}", f"s.{self.quote('zdt_c' + str(i))}", types.get(c))
            for i, c in enumerate(columns)
        )
        tgt = self.table(target, schema)
        src = self.table(source, schema)
        if not copy_mode:  # fill: source and target are the same rows
            projection = f"(SELECT {k}, {exprs} FROM {src} WHERE {src_pred}) AS s"
            sql = (
                f"SELECT s.{k}, 'different' FROM {projection} JOIN {tgt} AS t ON t.{k} = s.{k}"
                f" WHERE NOT ({equal})"
            )
            return sql, src_params
        tgt_pred, tgt_params = self.range_predicate(key, rng, alias="t")
        projection = f"(SELECT {k}, {exprs} FROM {src} WHERE {src_pred}) AS s"
        sql = (
            f"SELECT s.{k}, CASE WHEN t.{k} IS NULL THEN 'missing' ELSE 'different' END"
            f" FROM {projection} LEFT JOIN {tgt} AS t ON t.{k} = s.{k}"
            f" WHERE t.{k} IS NULL OR NOT ({equal})"
            f" UNION ALL SELECT t.{k}, 'extra' FROM {tgt} AS t WHERE {tgt_pred}"
            f" AND NOT EXISTS (SELECT 1 FROM {src} AS s2 WHERE s2.{k} = t.{k})"
        )
        return sql, src_params + tgt_params


    def dual_write_check_sql(self, source: str, target: str, key: str, updated_column: str, columns: dict[str, str],
                             schema: str | None = None, types: dict[str, Any] | None = None) -> str:
        """``(recent_rows, mismatched_rows)`` over source rows changed in the window.

        Params: ``(window_seconds,)``. A recent row mismatches when the target has no row with its
        key or a target column differs from its expected value (the typed projection), compared on
        the checksum's encodings, so a correctly dual-written ``balance * 100`` in a
        ``DECIMAL(16,0)`` column is equal.
        """
        k, uc = self.quote(key), self.quote(updated_column)
        names = [self.quote(f"zdt_c{i}") for i in range(len(columns))]
        types = types or {}
        proj = ", ".join(f"{e} AS {n}" for e, n in zip(self.typed_projection(columns, types), names, strict=True))
        equal = " AND ".join(self.null_safe_equal(f"t.{self.quote(col)}", f"s.{n}", types.get(col))
                             for col, n in zip(columns, names, strict=True))
        return (
            f"SELECT count(*), coalesce(sum(CASE WHEN t.{k} IS NULL OR NOT ({equal}) THEN 1 ELSE 0 END), 0)"
            f" FROM (SELECT {k}, {proj} FROM {self.table(source, schema)} WHERE {uc} >= {self.now_minus()}) AS s"
            f" LEFT JOIN {self.table(target, schema)} AS t ON t.{k} = s.{k}"
        )


class PostgresCompare(Compare):
    """The Postgres part of the compare role."""

    def snapshot_sql(self):
        return ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"]

    def foreign_keys_sql(self):
        return (
            "SELECT c.conname, cr.relname, ca.attname, pr.relname, pa.attname FROM pg_constraint c"
            " JOIN pg_class cr ON cr.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cr.relnamespace"
            " JOIN pg_class pr ON pr.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pr.relnamespace"
            " JOIN pg_attribute ca ON ca.attrelid = c.conrelid AND ca.attnum = c.conkey[1]"
            " JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1]"
            " WHERE c.contype = 'f' AND cardinality(c.conkey) = 1"
            " AND ((cn.nspname = coalesce(%s, current_schema()) AND cr.relname = %s)"
            " OR (pn.nspname = coalesce(%s, current_schema()) AND pr.relname = %s)) ORDER BY c.conname"
        )

    def cache_hit_sql(self):
        return ("SELECT blks_read, blks_hit + blks_read FROM pg_stat_database"
                " WHERE datname = current_database()")


class MySQLCompare(Compare):
    """The MySQL part of the compare role."""

    def snapshot_sql(self):
        return [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        ]

    def foreign_keys_sql(self):
        return (
            "SELECT k.constraint_name, k.table_name, k.column_name, k.referenced_table_name,"
            " k.referenced_column_name FROM information_schema.key_column_usage k"
            " WHERE k.referenced_table_name IS NOT NULL AND ((k.table_schema = coalesce(%s, database())"
            " AND k.table_name = %s) OR (k.referenced_table_schema = coalesce(%s, database())"
            " AND k.referenced_table_name = %s)) AND NOT EXISTS (SELECT 1 FROM information_schema.key_column_usage o"
            " WHERE o.constraint_schema = k.constraint_schema AND o.table_name = k.table_name"
            " AND o.constraint_name = k.constraint_name AND o.ordinal_position > 1) ORDER BY k.constraint_name"
        )

    #: Where the server's status counters are a table: Oracle MySQL 8.0+ moved them to
    #: performance_schema (MariaDB keeps information_schema, :class:`~zdt_backfill.dialects.MariaDBDialect`).
    GLOBAL_STATUS_TABLE = "performance_schema.global_status"

    def cache_hit_sql(self):
        return ("SELECT sum(CASE WHEN upper(variable_name) = 'INNODB_BUFFER_POOL_READS' THEN variable_value END),"
                " sum(CASE WHEN upper(variable_name) = 'INNODB_BUFFER_POOL_READ_REQUESTS' THEN variable_value END)"
                f" FROM {self.GLOBAL_STATUS_TABLE}"
                " WHERE upper(variable_name) IN ('INNODB_BUFFER_POOL_READS', 'INNODB_BUFFER_POOL_READ_REQUESTS')")

