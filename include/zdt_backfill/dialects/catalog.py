"""Catalog reads: columns and their types, key indexes, unique indexes, row estimates,
sequences and AUTO_INCREMENT.
"""

from __future__ import annotations

from .base import DialectBase, Params


class Catalog(DialectBase):
    """The shared part of the catalog role."""

    #: What a relation other than a table is, by the catalog's kind (:meth:`relation_kind_sql`).
    NOT_A_TABLE: dict[str, str] = {}

    def shadowed_functions_sql(self) -> str | None:
        """Param: a list of function names. Rows ``(name, schema)`` of a function of that name in
        a schema the session searches *before* the built-ins (``pg_catalog``): an unqualified call
        would run it instead of the built-in. ``None`` where built-ins always win (MySQL: a
        stored function named like a built-in must be called qualified)."""
        return None

    def relation_kind_sql(self) -> str:
        """Params ``(schema_or_null, name)``: one row with the relation's kind (PostgreSQL
        ``pg_class.relkind``, MySQL ``information_schema.tables.table_type``); none when absent."""
        raise NotImplementedError

    def keys_absent_from_sql(self, table: str, other: str, key: str, schema: str | None = None) -> str:
        """One count: rows of ``table`` whose key ``other`` does not hold (pre-flight: a fresh
        expand target holds no key absent from the source)."""
        k = self.quote(key)
        return (f"SELECT count(*) FROM {self.table(table, schema)} AS t WHERE NOT EXISTS"
                f" (SELECT 1 FROM {self.table(other, schema)} AS s WHERE s.{k} = t.{k})")

    def current_schema_sql(self) -> str:
        """One value: the connection's current schema (PostgreSQL) / database (MySQL)."""
        return f"SELECT {self.current_schema}"

    def rows_estimate_sql(self, table: str, schema: str | None = None) -> tuple[str, Params]:
        """A scalar query estimating a table's rows from catalog statistics."""
        raise NotImplementedError

    def columns_sql(self) -> str:
        """Params ``(schema_or_null, table)``: rows ``(column_name, data_type, is_nullable)``."""
        return (
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
            f" WHERE table_schema = coalesce(%s, {self.current_schema}) AND table_name = %s ORDER BY ordinal_position"
        )

    def key_index_sql(self) -> str:
        """Params ``(schema_or_null, table, column)``: names of indexes whose first column is ``column``."""
        raise NotImplementedError

    def primary_key_sql(self) -> str:
        """Params ``(schema_or_null, table)``: the primary key's column names, one row each, in
        the index's order; no rows when the table has no primary key (or does not exist)."""
        raise NotImplementedError

    #: Whether the upsert of :meth:`~zdt_backfill.dialects.rows.Rows.copy_batch_sql` matches a
    #: conflict on any unique index (MySQL) rather than on the key alone (PostgreSQL).
    upsert_matches_any_unique_index = False

    def other_unique_indexes_sql(self) -> str:
        """Params ``(schema_or_null, table, key)``: unique indexes of a table other than exactly ``(key)``."""
        raise NotImplementedError

    def column_types_sql(self, table: str, schema: str | None = None) -> tuple[str, Params]:
        """Rows ``(column, ...)`` of a table's column types: what :meth:`column_type` takes
        after the name (:meth:`target_types` turns the rows into ``{column: ColumnType}``)."""
        raise NotImplementedError


class PostgresCatalog(Catalog):
    """The Postgres part of the catalog role."""

    NOT_A_TABLE = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "S": "a sequence"}

    def shadowed_functions_sql(self):
        # current_schemas(true): the search path as resolved, implicit pg_catalog and pg_temp included
        return (
            "SELECT DISTINCT p.proname, n.nspname FROM pg_catalog.pg_proc p"
            " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
            " WHERE p.proname = ANY(%s) AND n.nspname <> 'pg_catalog'"
            " AND pg_catalog.array_position(pg_catalog.current_schemas(true), n.nspname::text)"
            " < pg_catalog.array_position(pg_catalog.current_schemas(true), 'pg_catalog')"
            " ORDER BY 1, 2"
        )

    def relation_kind_sql(self):
        return ("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s")



    def rows_estimate_sql(self, table, schema=None):
        # the regclass parameter is the quoted, qualified name
        return "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c WHERE c.oid = %s::regclass", (
            self.table(table, schema),
        )

    def column_types_sql(self, table, schema=None):
        # a domain's base type decides the encoding (its own name is the cast)
        return (
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), coalesce(b.typname, t.typname),"
            " coalesce(b.typcategory, t.typcategory) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (self.table(table, schema),),
        )

    def key_index_sql(self):
        return (
            "SELECT i.relname FROM pg_index x"
            " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND t.relname = %s AND a.attname = %s"
            " AND x.indisvalid ORDER BY x.indisprimary DESC, x.indisunique DESC"
        )

    def primary_key_sql(self):
        return (
            "SELECT a.attname FROM pg_index x"
            " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
            " CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND t.relname = %s AND x.indisprimary"
            " ORDER BY k.pos"
        )

    def unique_key_sql(self):
        """Params ``(schema_or_null, table, column)``: 1 if a unique index is exactly ``(column)``."""
        return (
            "SELECT count(*) FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND t.relname = %s AND a.attname = %s"
            " AND x.indisunique AND x.indnatts = 1 AND x.indisvalid AND x.indpred IS NULL"
        )


class MySQLCatalog(Catalog):
    """The MySQL part of the catalog role."""

    NOT_A_TABLE = {"VIEW": "a view", "SYSTEM VIEW": "a system view", "SEQUENCE": "a sequence"}
    #: ``ON DUPLICATE KEY UPDATE`` fires on *any* unique index: a target with another unique index
    #: would silently skip rows colliding on it, so pre-flight refuses one.
    upsert_matches_any_unique_index = True

    def relation_kind_sql(self):
        return ("SELECT table_type FROM information_schema.tables"
                " WHERE table_schema = coalesce(%s, database()) AND table_name = %s")



    def rows_estimate_sql(self, table, schema=None):
        return (
            "SELECT table_rows FROM information_schema.tables WHERE table_schema = coalesce(%s, database())"
            " AND table_name = %s",
            (schema, table),
        )

    def column_types_sql(self, table, schema=None):
        return (
            "SELECT column_name, data_type, column_type, numeric_precision, numeric_scale, datetime_precision,"
            " character_set_name, character_maximum_length FROM information_schema.columns"
            " WHERE table_schema = coalesce(%s, database()) AND table_name = %s",
            (schema, table),
        )

    def key_index_sql(self):
        return (
            "SELECT index_name FROM information_schema.statistics"
            " WHERE table_schema = coalesce(%s, database()) AND table_name = %s AND column_name = %s"
            " AND seq_in_index = 1 ORDER BY index_name = 'PRIMARY' DESC, non_unique"
        )

    def primary_key_sql(self):
        return (
            "SELECT column_name FROM information_schema.statistics"
            " WHERE table_schema = coalesce(%s, database()) AND table_name = %s AND index_name = 'PRIMARY'"
            " ORDER BY seq_in_index"
        )

    def unique_key_sql(self):
        return (
            "SELECT count(*) FROM (SELECT index_name FROM information_schema.statistics"
            " WHERE table_schema = coalesce(%s, database()) AND table_name = %s AND non_unique = 0"
            " GROUP BY index_name HAVING count(*) = 1 AND max(column_name) = %s) AS u"
        )

    def other_unique_indexes_sql(self):
        """Params ``(schema_or_null, table, key)``: unique indexes of a table other than exactly ``(key)``."""
        return (
            "SELECT index_name FROM information_schema.statistics"
            " WHERE table_schema = coalesce(%s, database()) AND table_name = %s AND non_unique = 0"
            " GROUP BY index_name HAVING NOT (count(*) = 1 AND max(column_name) = %s)"
        )

