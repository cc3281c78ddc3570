"""Per-engine SQL, built by pure functions.

Every statement the engine runs against user tables is rendered here, so the SQL
of each engine sits in one place and is unit-tested without a database (the
rendered text is compared in ``tests/unit/test_dialects.py``).

Rules every builder follows:

- identifiers are quoted by SQLAlchemy's dialect ``identifier_preparer`` (after
  :func:`~.identifiers.validate_identifier`); values are bound ``%s`` parameters
  (psycopg 3 and mysqlclient both use the ``format`` paramstyle);
- keyset ranges only (``key > %s AND key <= %s``), never ``OFFSET`` paging;
- a batch is one set-based statement (``INSERT ... SELECT`` or ``UPDATE``), never a
  row-by-row loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_postgresql

from ..identifiers import validate_identifier

Params = tuple


def expr(sql: str) -> str:
    """A column expression ready to embed: parenthesised, ``%`` doubled for the
    ``format`` paramstyle (every statement here is executed with a params tuple)."""
    return "(" + sql.replace("%", "%%") + ")"


@dataclass(frozen=True)
class Range:
    """A half-open key range ``(lo, hi]``; ``None`` bounds are unbounded.

    Validation ranges use open ends so rows the application inserted after
    planning (keys above the planned maximum) are covered too.
    """

    lo: int | None
    hi: int | None


@dataclass(frozen=True)
class ColumnType:
    """A target column's type, as the typed projection and the value encodings need it.

    Built from the catalog by :meth:`Dialect.target_types` (rows of :meth:`Dialect.column_types_sql`),
    or from a type name alone by :meth:`Dialect.parse_type`.

    :ivar sql: the type as the catalog spells it (``numeric(16,0)``, ``decimal(16,0)``), for messages.
    :ivar cast: what the typed projection casts an expression to: a PostgreSQL type (length
        modifiers of ``varchar(n)``/``char(n)`` dropped, so an explicit cast never truncates
        silently), or a MySQL ``CAST`` target (``DECIMAL(16,0)``, ``DATETIME(6)``, ``BINARY(4)``);
        ``None``: the expression as it is.
    :ivar kind: how a value is encoded to be hashed and compared: ``text`` (hex of its UTF-8
        bytes), ``char`` (MySQL ``CHAR``: text without the trailing spaces the column drops),
        ``binary`` (hex of its bytes), ``json``, ``bit``, or ``value`` (the canonical text of a
        number, a date/time or any other type, at the column's precision).
    """

    sql: str
    cast: str | None
    kind: str


_PG_TEXT_TYPE = re.compile(r"(text|character varying|varchar|character|char|bpchar|citext|name)\b(?!.*\[\])", re.I)
_PG_VARCHAR_N = re.compile(r"^character varying\(\d+\)((?:\[\])*)$")
_PG_CHAR_N = re.compile(r"^character\(\d+\)((?:\[\])*)$")
_MY_INTEGER_TYPES = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
_MY_BINARY_TYPES = frozenset({"varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_MY_TEXT_TYPES = frozenset({"varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"})
_MY_SPATIAL_TYPES = frozenset({
    "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
    "geometrycollection", "geomcollection",
})


def _text(v: Any) -> str:
    """A catalog value as text (MySQL 8's information_schema may return bytes)."""
    if v is None:
        return ""
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


class Dialect:
    """SQL of one database engine. Subclasses: :class:`PostgresDialect`, :class:`MySQLDialect`."""

    name = "base"
    _preparer = None
    #: SQL naming the connection's current schema (PostgreSQL) / database (MySQL).
    current_schema = ""
    #: Column type and expression of a microsecond timestamp, for the control tables.
    timestamp_type = ""
    now = ""
    #: The load signal (:meth:`load_sql`) measuring row-lock waits: critical load's single-partition
    #: mode ends when it is back to its baseline.
    ROW_LOCK_SIGNAL = ""
    #: Column definition of an auto-numbered primary key, for the control tables.
    serial_pk = ""
    #: Column type of a document of up to megabytes (the run reports' JSON and Markdown).
    long_text_type = "text"

    def now_plus(self) -> str:
        """SQL of ``now() + %s seconds`` (one bound parameter, seconds, may be fractional)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ naming
    def quote(self, name: str) -> str:
        """Quote a validated identifier for this engine (always quoted, never bare)."""
        return self._preparer.quote_identifier(validate_identifier(name))

    def table(self, name: str, schema: str | None = None) -> str:
        """Quoted, optionally schema-qualified table name."""
        return f"{self.quote(schema)}.{self.quote(name)}" if schema else self.quote(name)

    # ------------------------------------------------------------------ ranges
    def range_predicate(self, key: str, rng: Range, alias: str | None = None) -> tuple[str, Params]:
        """``key > lo AND key <= hi`` for the bounds that are set; ``TRUE`` for none."""
        col = f"{alias}.{self.quote(key)}" if alias else self.quote(key)
        parts, params = [], []
        if rng.lo is not None:
            parts.append(f"{col} > %s")
            params.append(rng.lo)
        if rng.hi is not None:
            parts.append(f"{col} <= %s")
            params.append(rng.hi)
        return (" AND ".join(parts) or "1 = 1"), tuple(params)

    # ------------------------------------------------------------------ keyset chunking
    def key_bounds_sql(self, table: str, key: str, schema: str | None = None) -> tuple[str, Params]:
        """``(min(key), max(key), estimated rows)`` of a table; both ends use the key index,
        the estimate comes from catalog statistics (no count)."""
        k, t = self.quote(key), self.table(table, schema)
        sql, params = self.rows_estimate_sql(table, schema)
        return f"SELECT (SELECT min({k}) FROM {t}), (SELECT max({k}) FROM {t}), ({sql})", params

    def rows_estimate_sql(self, table: str, schema: str | None = None) -> tuple[str, Params]:
        """A scalar query estimating a table's rows from catalog statistics."""
        raise NotImplementedError

    def chunk_end_sql(self, table: str, key: str, schema: str | None = None) -> str:
        """The key closing the next keyset chunk: the ``limit``-th key above the watermark.

        Params: ``(watermark, partition_hi, limit)``. Returns one row ``(last_key, keys)``:
        the chunk's upper key (NULL when the partition has no keys left) and how many keys
        the chunk holds. It reads at most
        ``limit`` index entries (a range scan on the key index, not OFFSET paging), so a
        chunk holds at most ``limit`` rows however sparse the keys are.
        """
        k = self.quote(key)
        return (
            f"SELECT max(b.{k}), count(*) FROM (SELECT {k} FROM {self.table(table, schema)}"
            f" WHERE {k} > %s AND {k} <= %s ORDER BY {k} LIMIT %s) AS b"
        )

    # ------------------------------------------------------------------ batch statements
    def copy_batch_sql(
        self,
        source: str,
        target: str,
        key: str,
        columns: dict[str, str],
        schema: str | None = None,
        key_index: str | None = None,
        types: dict[str, Any] | None = None,
    ) -> str:
        """Insert-if-absent of one chunk: ``INSERT INTO target SELECT ... FROM source``.

        ``types`` (:meth:`target_types`) casts each expression to its target column's type:
        the one typed projection the checksum, the diff and the dual-write check also use.

        Params: ``(chunk_lo_exclusive, chunk_hi_inclusive)``. Rows already in the target
        (dual-written by the application) are kept as they are. Source rows are read
        with a shared lock, so a concurrent application update or delete of a row in the
        chunk waits for the batch to commit instead of racing it (gh-ost and
        pt-online-schema-change read their chunks ``LOCK IN SHARE MODE`` for the same reason).
        On MySQL/MariaDB the read is ``NOWAIT`` (gh-ost's ``FOR SHARE NOWAIT``, PR 1455): a batch
        that meets a row the application holds fails at once and retries after a backoff,
        instead of waiting while holding shared locks on the rows before it; InnoDB would
        otherwise resolve the resulting deadlock by killing the application's transaction,
        which has written fewer rows than the batch.
        ``key_index`` names the index on the key (MySQL forces it; PRIMARY when ``None``).
        """
        raise NotImplementedError

    def _copy_lists(self, quoted_key: str, columns: dict[str, str], types: dict[str, Any] | None = None) -> tuple[str, str]:
        """The INSERT's column list and the SELECT's value list of a copy batch (key first),
        each value the typed projection of its expression."""
        cols = ", ".join([quoted_key, *(self.quote(c) for c in columns)])
        exprs = ", ".join([quoted_key, *self.typed_projection(columns, types)])
        return cols, exprs

    def _typed_sets(self, columns: dict[str, str], types: dict[str, Any] | None) -> str:
        return ", ".join(f"{self.quote(c)} = {v}" for c, v in zip(columns, self.typed_projection(columns, types), strict=True))

    def fill_batch_sql(
        self, table: str, key: str, columns: dict[str, str], schema: str | None = None, types: dict[str, Any] | None = None,
    ) -> str:
        """``UPDATE table SET col = expr`` for one chunk, only rows whose target columns are all NULL.

        Params: ``(chunk_lo_exclusive, chunk_hi_inclusive)``. A row the application already
        wrote (any target column set) is left alone.
        """
        k = self.quote(key)
        sets = self._typed_sets(columns, types)
        still_null = " AND ".join(f"{self.quote(c)} IS NULL" for c in columns)
        return (
            f"UPDATE {self.table(table, schema)} SET {sets}"
            f" WHERE {k} > %s AND {k} <= %s AND {still_null}"
        )

    def select_chunk_sql(self, source: str, key: str, columns: dict[str, str], schema: str | None = None) -> str:
        """The read side of a batch, for ``EXPLAIN`` in pre-flight. Params as the batch."""
        k = self.quote(key)
        exprs = ", ".join(expr(e) for e in columns.values())
        return f"SELECT {k}, {exprs} FROM {self.table(source, schema)} WHERE {k} > %s AND {k} <= %s"

    def fused_copy_batch_sql(
        self, source: str, target: str, key: str, columns: dict[str, str], checkpoint: Any,
        schema: str | None = None, key_index: str | None = None, types: dict[str, Any] | None = None,
        plain_when_empty: bool = True, tag: str = "",
    ) -> str | None:
        """One copy batch in one round trip: the chunk end, the insert-if-absent and the guarded
        checkpoint UPDATE (the guarantees of :meth:`copy_batch_sql`, :meth:`chunk_end_sql` and
        :meth:`~zdt_backfill.state.checkpoint.CheckpointStore.advance`, unchanged); ``None`` when the engine has none.

        Named params: ``lo`` (the watermark), ``hi`` (the partition's last key), ``n`` (the batch
        size), ``run``, ``part`` and the guard's (``checkpoint(new, rows, keys, extra_where)``
        renders the UPDATE with them). Returns one row ``(chunk_end, keys, rows_written,
        checkpoints_updated)``; ``chunk_end`` NULL when the partition is done, ``checkpoints_updated``
        0 when the guard or the old watermark no longer holds (the caller rolls back).

        ``plain_when_empty`` (PostgreSQL): when the target holds no key of the chunk (read in the
        statement's snapshot) the rows go in by a plain ``INSERT`` (no ``ON CONFLICT``
        speculative insertion, a third of the statement's time); a row the application
        dual-writes after that snapshot then fails the batch with a unique violation (never
        overwritten), and the caller redoes the batch with ``plain_when_empty=False``.
        """
        return None

    # ------------------------------------------------------------------ session
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

    # ------------------------------------------------------------------ repair
    def repair_upsert_sql(
        self, source: str, target: str, key: str, columns: dict[str, str], n_keys: int, schema: str | None = None,
        copy_mode: bool = True, types: dict[str, Any] | None = None,
    ) -> str:
        """Rewrite the named keys of the target from the source, in one statement.

        Params: ``n_keys`` keys. Copy mode: ``INSERT ... SELECT ... WHERE key IN (...)`` with the
        source rows read under a shared lock, overwriting the target row when present (the keys
        were named as missing or different by validation). Fill mode: ``UPDATE ... SET col = expr
        WHERE key IN (...)``. Spirit repairs a differing chunk by re-copying it; this re-copies only
        the differing keys.
        """
        k = self.quote(key)
        if not copy_mode:
            sets = self._typed_sets(columns, types)
            return f"UPDATE {self.table(source, schema)} SET {sets} WHERE {k} IN ({self._in_list(n_keys)})"
        cols, exprs = self._copy_lists(k, columns, types)
        return (
            f"INSERT INTO {self.table(target, schema)} ({cols})"
            f" SELECT {exprs} FROM {self.table(source, schema)} WHERE {k} IN ({self._in_list(n_keys)})"
            f" {self.share_lock} {self._overwrite(k, columns)}"
        )

    #: The shared-lock clause of a batch's read of the source (see :meth:`copy_batch_sql`).
    share_lock = "FOR SHARE"

    def _overwrite(self, quoted_key: str, columns: dict[str, str]) -> str:
        """The upsert clause that overwrites a target row with the inserted values."""
        raise NotImplementedError

    def delete_extra_sql(self, source: str, target: str, key: str, n_keys: int, schema: str | None = None) -> str:
        """Delete the named target keys that have no source row *now* (checked in the same
        statement, so a row the application inserted since validation is kept). Params: the keys."""
        raise NotImplementedError

    def nullify_batch_sql(self, table: str, key: str, columns: Sequence[str], schema: str | None = None) -> str:
        """Fill-mode rollback of one chunk: the filled columns back to NULL.
        Params: ``(chunk_lo_exclusive, chunk_hi_inclusive)``."""
        k = self.quote(key)
        sets = ", ".join(f"{self.quote(c)} = NULL" for c in columns)
        any_set = " OR ".join(f"{self.quote(c)} IS NOT NULL" for c in columns)
        return f"UPDATE {self.table(table, schema)} SET {sets} WHERE {k} > %s AND {k} <= %s AND ({any_set})"

    def chunk_keys_sql(self, table: str, key: str, schema: str | None = None) -> str:
        """Params ``(lo_exclusive, hi_inclusive)``: the keys of one chunk, in order."""
        k = self.quote(key)
        return f"SELECT {k} FROM {self.table(table, schema)} WHERE {k} > %s AND {k} <= %s ORDER BY {k}"

    def backend_id_sql(self) -> str:
        """The session's server-side id (PostgreSQL backend pid, MySQL connection id): what
        :meth:`cancel_statement_sql` takes."""
        return "SELECT pg_backend_pid()" if self.name == "postgres" else "SELECT CONNECTION_ID()"

    def cancel_statement_sql(self) -> str:
        """Cancel the statement another session is running, keeping that session (its
        transaction rolls back on PostgreSQL; on MySQL the statement is rolled back). Param: the
        session id. PostgreSQL ``pg_cancel_backend``; MySQL ``KILL QUERY`` (gh-ost's panic path)."""
        return "SELECT pg_cancel_backend(%s)" if self.name == "postgres" else "KILL QUERY %s"

    def tag_statement(self, sql: str, tag: str) -> str:
        """A statement that names the run to whoever looks at the server's process list
        (PostgreSQL tags the session's ``application_name`` instead)."""
        return sql

    def _in_list(self, n: int) -> str:
        return ", ".join(["%s"] * max(1, n))

    # ------------------------------------------------------------------ validation
    # One typed projection: the expected value of each target column is its expression cast to
    # the column's type (:meth:`typed_projection`), and every value is hashed and compared through
    # one typed, binary-safe, NULL-safe encoding (:meth:`encode_value`). The checksum, the row diff
    # and the dual-write check all use both, so they cannot disagree on types.
    def column_type(self, *catalog: Any) -> ColumnType:
        """A :class:`ColumnType` from one row of :meth:`column_types_sql` (without the column name)."""
        raise NotImplementedError

    def parse_type(self, sql_type: str) -> ColumnType:
        """A :class:`ColumnType` from a type name alone (``numeric(10,2)``, ``decimal(16,0)``)."""
        raise NotImplementedError

    def target_types(self, rows: Sequence[Sequence[Any]]) -> dict[str, ColumnType]:
        """``{column: ColumnType}`` from the rows of :meth:`column_types_sql`."""
        return {str(r[0]): self.column_type(*r[1:]) for r in rows}

    def _column_type(self, t: ColumnType | str | None) -> ColumnType | None:
        return self.parse_type(t) if isinstance(t, str) else t

    def cast_value(self, value: str, t: ColumnType | None) -> str:
        """SQL of ``value`` cast to a target column's type (``value`` unchanged when ``t`` is None)."""
        raise NotImplementedError

    def typed_projection(
        self, columns: dict[str, str], target_types: dict[str, ColumnType | str] | None = None
    ) -> list[str]:
        """The expected value of each target column, in ``columns`` order: its expression
        (parenthesised, ``%`` doubled like :func:`expr`) cast to the column's type.

        PostgreSQL: ``CAST(expr AS numeric(16,0))``. MySQL: ``CAST(expr AS DECIMAL(16,0))``,
        ``CAST(expr AS DATETIME(6))``, ``CONVERT(expr USING utf8mb4)`` for text. A column
        missing from ``target_types`` keeps its expression as it is.

        :param target_types: ``{column: ColumnType}`` (:meth:`target_types`) or ``{column: type name}``.
        """
        types = target_types or {}
        return [self.cast_value(expr(e), self._column_type(types.get(c))) for c, e in columns.items()]

    def encode_value(self, value: str, t: ColumnType | None) -> str:
        """SQL of the canonical ASCII encoding of one value (NULL stays NULL): hex of the bytes of
        text (in UTF-8) and binary values, the canonical text of numbers and times."""
        raise NotImplementedError

    def row_hash(self, values: Sequence[str], types: Sequence[ColumnType | str | None] | None = None) -> str:
        """SQL of a 64-bit hash of a row's values (NULL-safe), summed per range.

        Each value is encoded by :meth:`encode_value` with its type (``types``, in ``values``
        order; ``None``: a generic encoding) and then as hex (:meth:`hex_field`), NULL spelled
        ``N``, the fields joined by ``:``. A field is ``[0-9a-f]*`` or ``N``, so NULL and ``''``
        differ and no two rows encode alike, and each expression is evaluated once (a length
        prefix repeats it: PostgreSQL and MySQL do not share common subexpressions; measured
        1.4x slower on both).
        """
        raise NotImplementedError

    def hex_field(self, encoded: str, t: ColumnType | None) -> str:
        """SQL of ``encoded`` (an :meth:`encode_value`) as lowercase or uppercase hex digits only."""
        raise NotImplementedError

    def _hex_fields(self, values: Sequence[str], types: Sequence[ColumnType | str | None] | None) -> list[str]:
        ts = list(types) if types is not None else [None] * len(values)
        return [self.hex_field(self.encode_value(v, ct), ct)
                for v, ct in ((v, self._column_type(t)) for v, t in zip(values, ts, strict=True))]

    def snapshot_sql(self) -> list[str]:
        """Statements that open a read-only REPEATABLE READ transaction with its snapshot taken
        now, so a range's checksum and its row diff read the same data. Run right after a
        commit or rollback; end the transaction with a rollback."""
        raise NotImplementedError

    def checksum_sql(
        self,
        source: str,
        target: str,
        key: str,
        columns: dict[str, str],
        rng: Range,
        schema: str | None = None,
        casts: dict[str, str] | None = None,
    ) -> tuple[str, Params]:
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

    def table_checksum_sql(self, table: str, key: str, schema: str | None = None) -> str:
        """One row whose last column is a checksum of the whole table, equal for byte-identical
        tables of the same definition (MySQL ``CHECKSUM TABLE``; PostgreSQL ``md5(string_agg(row
        text ORDER BY key))``)."""
        raise NotImplementedError

    def cache_hit_sql(self) -> str:
        """One row ``(cache misses, cache read requests)`` (counters since the server started)."""
        raise NotImplementedError

    def expected(self, columns: dict[str, str], casts: dict[str, ColumnType | str] | None) -> list[str]:
        """The expected value of each target column: :meth:`typed_projection`."""
        return self.typed_projection(columns, casts)

    def null_safe_equal(self, a: str, b: str, t: ColumnType | str | None = None) -> str:
        """NULL-safe equality of two values of type ``t`` as the checksum sees them: their
        :meth:`encode_value` encodings, byte for byte (no collation, no charset conversion)."""
        raise NotImplementedError

    def diff_sql(
        self,
        source: str,
        target: str,
        key: str,
        columns: dict[str, str],
        rng: Range,
        schema: str | None = None,
        copy_mode: bool = True,
        casts: dict[str, str] | None = None,
    ) -> tuple[str, Params]:
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

    # ------------------------------------------------------------------ catalog
    def columns_sql(self) -> str:
        """Params ``(schema_or_null, table)``: rows ``(column_name, data_type, is_nullable)``."""
        return (
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
            f" WHERE table_schema = coalesce(%s, {self.current_schema}) AND table_name = %s ORDER BY ordinal_position"
        )

    def key_index_sql(self) -> str:
        """Params ``(schema_or_null, table, column)``: names of indexes whose first column is ``column``."""
        raise NotImplementedError

    def column_types_sql(self, table: str, schema: str | None = None) -> tuple[str, Params]:
        """Rows ``(column, ...)`` of a table's column types: what :meth:`column_type` takes
        after the name (:meth:`target_types` turns the rows into ``{column: ColumnType}``)."""
        raise NotImplementedError

    def replica_lag_sql(self) -> str:
        raise NotImplementedError

    def heartbeat_upsert_sql(self, schema: str | None = None) -> str:
        """Params ``(name, run_id)``: write the primary's ``now()`` into ``zdt_heartbeat``."""
        raise NotImplementedError

    def heartbeat_age_sql(self, schema: str | None = None) -> str:
        """Params ``(name,)``, run on a replica: seconds since the heartbeat it last applied
        (``now() - ts``), NULL when the row is absent."""
        raise NotImplementedError

    def probe_session_setup(self, timeout_s: float) -> list[tuple[str, Params]]:
        """Read timeout of a probe session: a hung replica must not stall the batch loop."""
        return []

    def load_sql(self, schema: str | None, tables: tuple[str, ...]) -> tuple[str, Params, str]:
        """The primary's load signals: ``(sql, params, shape)``; shape ``row`` is one row of named
        columns, ``pairs`` is ``(name, value)`` rows. Counters (``row_lock_waits``, ``deadlocks``,
        ``wal_bytes``) become rates in :class:`~zdt_backfill.signals.throttler.LoadCollector`."""
        raise NotImplementedError

    def symptom_queries(self) -> list[tuple[str, str, float | None, float | None, Any]]:
        """The seed's diagnostics: ``(check, sql, warn_at, critical_at, describe)`` where
        ``describe(rows) -> (value, detail)``; ``warn_at`` ``None`` is informational."""
        raise NotImplementedError

    def max_key_sql(self, table: str, key: str, schema: str | None = None) -> str:
        """``max(key)`` of a table (one index read)."""
        return f"SELECT max({self.quote(key)}) FROM {self.table(table, schema)}"


class PostgresDialect(Dialect):
    """PostgreSQL 12+ (tested on 15)."""

    name = "postgres"
    ROW_LOCK_SIGNAL = "ungranted_locks"  # sessions waiting on a lock now (pg_locks NOT granted)
    _preparer = sa_postgresql.dialect().identifier_preparer
    current_schema = "current_schema()"
    timestamp_type = "timestamptz"
    now = "now()"
    serial_pk = "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def now_plus(self):
        return "now() + make_interval(secs => %s)"

    def ddl_session_setup(self, lock_wait_s, tag):
        return [
            ("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(lock_wait_s * 1000))}ms",)),
            ("SELECT set_config('application_name', %s, false)", (tag[:63],)),
        ]

    def _overwrite(self, quoted_key, columns):
        updates = ", ".join(f"{self.quote(c)} = EXCLUDED.{self.quote(c)}" for c in columns)
        return f"ON CONFLICT ({quoted_key}) DO UPDATE SET {updates}"

    def delete_extra_sql(self, source, target, key, n_keys, schema=None):
        k = self.quote(key)
        return (
            f"DELETE FROM {self.table(target, schema)} AS t WHERE t.{k} IN ({self._in_list(n_keys)})"
            f" AND NOT EXISTS (SELECT 1 FROM {self.table(source, schema)} AS s WHERE s.{k} = t.{k})"
        )

    def owned_sequences_sql(self, table, schema=None):
        """Rows ``(sequence_regclass_text, last_value_or_null, start_value, column)`` of the sequences
        owned by a table's columns (``serial`` / identity)."""
        qualified = self.table(table, schema)
        return (
            "SELECT q.seq, pg_sequence_last_value(q.seq::regclass), s.seqstart, q.attname FROM"
            " (SELECT pg_get_serial_sequence(%s, a.attname) AS seq, a.attname FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped) AS q"
            " JOIN pg_sequence s ON s.seqrelid = q.seq::regclass WHERE q.seq IS NOT NULL",
            (qualified, qualified),
        )

    def set_sequence_sql(self):
        """Params ``(sequence, value, is_called)``: ``setval``, the bound form of ``ALTER SEQUENCE ... RESTART``."""
        return "SELECT setval(%s::regclass, %s, %s)"

    def rows_estimate_sql(self, table, schema=None):
        # the regclass parameter is the quoted, qualified name
        return "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c WHERE c.oid = %s::regclass", (
            self.table(table, schema),
        )

    def copy_batch_sql(self, source, target, key, columns, schema=None, key_index=None, types=None):
        k = self.quote(key)
        cols, exprs = self._copy_lists(k, columns, types)
        return (
            f"INSERT INTO {self.table(target, schema)} ({cols})"
            f" SELECT {exprs} FROM {self.table(source, schema)}"
            f" WHERE {k} > %s AND {k} <= %s {self.share_lock}"
            f" ON CONFLICT ({k}) DO NOTHING"
        )

    def fused_copy_batch_sql(self, source, target, key, columns, checkpoint, schema=None, key_index=None, types=None,
                             plain_when_empty=True, tag=""):
        k = self.quote(key)
        cols, exprs = self._copy_lists(k, columns, types)
        src, tgt = self.table(source, schema), self.table(target, schema)
        rows = f"INSERT INTO {tgt} ({cols}) SELECT {exprs} FROM {src} WHERE {k} > %(lo)s AND {k} <= (SELECT hi FROM e)"
        if plain_when_empty:
            inserts = (
                f" f AS (SELECT NOT EXISTS (SELECT 1 FROM {tgt} WHERE {k} > %(lo)s AND {k} <= (SELECT hi FROM e)) AS empty),"
                f" plain AS ({rows} AND (SELECT empty FROM f) {self.share_lock} RETURNING 1),"
                f" guarded AS ({rows} AND NOT (SELECT empty FROM f) {self.share_lock}"
                f" ON CONFLICT ({k}) DO NOTHING RETURNING 1),"
                " w AS (SELECT (SELECT count(*) FROM plain) + (SELECT count(*) FROM guarded) AS n),"
            )
        else:
            inserts = (
                f" guarded AS ({rows} {self.share_lock} ON CONFLICT ({k}) DO NOTHING RETURNING 1),"
                " w AS (SELECT count(*) AS n FROM guarded),"
            )
        cp = checkpoint("(SELECT hi FROM e)", "(SELECT n FROM w)", "(SELECT keys FROM e)",
                        "(SELECT hi FROM e) IS NOT NULL AND ")
        return (
            f"WITH e AS (SELECT max(b.{k}) AS hi, count(*) AS keys FROM (SELECT {k} FROM {src}"
            f" WHERE {k} > %(lo)s AND {k} <= %(hi)s ORDER BY {k} LIMIT %(n)s) AS b),"
            f"{inserts} cp AS ({cp} RETURNING 1)"
            " SELECT e.hi, e.keys, w.n, (SELECT count(*) FROM cp) FROM e, w"
        )

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

    def column_type(self, sql_type, base_type=None, category=None):
        """From ``(format_type, base type name, base type category)`` (a domain's base type)."""
        sql_type = str(sql_type)
        base = str(base_type or "").lower()
        if base == "bytea" or (not base and sql_type == "bytea"):
            kind = "binary"
        elif category == "S" or (category is None and _PG_TEXT_TYPE.match(sql_type)):
            kind = "text"
        else:
            kind = "value"
        # An explicit cast to varchar(n)/char(n) truncates silently where an INSERT would fail:
        # cast to the unbounded type (bpchar keeps char's blank-padding semantics).
        cast = _PG_VARCHAR_N.sub(r"character varying\1", sql_type)
        cast = _PG_CHAR_N.sub(r"bpchar\1", cast)
        return ColumnType(sql_type, cast, kind)

    def parse_type(self, sql_type):
        return self.column_type(sql_type)

    def cast_value(self, value, t):
        return f"CAST({value} AS {t.cast})" if t is not None and t.cast else value

    def encode_value(self, value, t):
        if t is not None and t.kind == "binary":
            return f"encode({value}, 'hex')"
        if t is not None and t.kind == "text":
            return f"encode(convert_to(({value})::text, 'UTF8'), 'hex')"
        # numbers, times, json, arrays...: their text form, in the one session of the statement
        return f"({value})::text"

    def hex_field(self, encoded, t):
        if t is not None and t.kind in ("binary", "text"):
            return encoded  # encode_value gave hex already
        return f"encode(convert_to({encoded}, 'UTF8'), 'hex')"

    def row_hash(self, values, types=None):
        # hashtextextended: PostgreSQL's 64-bit hash of the bytes (the one hash partitioning uses),
        # 2x faster than the first 64 bits of md5 (measured on 200k-row chunks); "C" makes it
        # hash bytes whatever the database's collation. Summed as bigint (int128 accumulator).
        parts = ", ':', ".join(f"coalesce({e}, 'N')" for e in self._hex_fields(values, types))
        return f'hashtextextended(concat({parts}) COLLATE "C", 0)'

    def null_safe_equal(self, a, b, t=None):
        t = self._column_type(t)
        return f'{self.encode_value(a, t)} COLLATE "C" IS NOT DISTINCT FROM {self.encode_value(b, t)} COLLATE "C"'

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

    def table_checksum_sql(self, table, key, schema=None):
        return (f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.{self.quote(key)}), ''))"
                f" FROM {self.table(table, schema)} AS t")

    def cache_hit_sql(self):
        return ("SELECT blks_read, blks_hit + blks_read FROM pg_stat_database"
                " WHERE datname = current_database()")

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

    def unique_key_sql(self):
        """Params ``(schema_or_null, table, column)``: 1 if a unique index is exactly ``(column)``."""
        return (
            "SELECT count(*) FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND t.relname = %s AND a.attname = %s"
            " AND x.indisunique AND x.indnatts = 1 AND x.indisvalid AND x.indpred IS NULL"
        )

    def replica_lag_sql(self):
        # The second signal: seconds since the last replayed transaction while replay is
        # behind what was received, 0 when caught up, NULL when unknown (nothing replayed
        # yet) or on a primary. It reads 0 when the WAL receiver is disconnected (nothing
        # received, nothing to replay): the heartbeat is the signal to trust.
        return (
            "SELECT pg_is_in_recovery(), CASE"
            " WHEN NOT pg_is_in_recovery() THEN NULL"
            " WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0"
            " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
        )

    def heartbeat_upsert_sql(self, schema=None):
        return (
            f"INSERT INTO {self.table('zdt_heartbeat', schema)} (name, ts, run_id) VALUES (%s, now(), %s)"
            " ON CONFLICT (name) DO UPDATE SET ts = EXCLUDED.ts, run_id = EXCLUDED.run_id"
        )

    def heartbeat_age_sql(self, schema=None):
        # clock_timestamp(), not now(): now() is the start of a transaction a pooled session
        # may have opened long ago
        return (
            f"SELECT extract(epoch FROM clock_timestamp() - ts) FROM {self.table('zdt_heartbeat', schema)}"
            " WHERE name = %s"
        )

    def probe_session_setup(self, timeout_s):
        return [("SELECT set_config('statement_timeout', %s, false)", (f"{max(1, int(timeout_s * 1000))}ms",))]

    def load_sql(self, schema, tables):
        marks = ", ".join(["%s"] * max(1, len(tables)))
        return (
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend') AS active_backends,"
            " (SELECT count(*) FROM pg_locks WHERE NOT granted) AS ungranted_locks,"
            " (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()) AS deadlocks,"
            " (SELECT count(*) FROM pg_stat_progress_vacuum v JOIN pg_class c ON c.oid = v.relid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = coalesce(%s, current_schema())"
            f" AND c.relname IN ({marks})) AS vacuum_on_tables,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal_bytes,"
            # the worst replica's replay distance in WAL bytes, measured on the primary (NULL
            # with no replica attached): a second lag signal beside the heartbeat's seconds
            " (SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) FROM pg_stat_replication)"
            " AS replica_lag_bytes",
            (schema, *(tables or ("",))),
            "row",
        )

    def symptom_queries(self):
        def count(label):
            return lambda rows: (len(rows), f"{len(rows)} {label}" + (f": {[tuple(r) for r in rows[:3]]}" if rows else ""))

        return [
            ("lock_waits", "SELECT pid, wait_event, left(query, 200), round(extract(epoch FROM now() - query_start))"
             " FROM pg_stat_activity WHERE wait_event_type = 'Lock'", 1, 20, count("session(s) waiting on a lock")),
            ("row_lock_contention", "SELECT count(*) FROM pg_locks WHERE NOT granted", 20, 200,
             lambda rows: (rows[0][0], f"{rows[0][0]} ungranted lock(s)")),
            ("connections", "SELECT count(*) FILTER (WHERE state = 'active'), count(*),"
             " current_setting('max_connections')::int FROM pg_stat_activity", 25, 100,
             lambda rows: (rows[0][0], f"{rows[0][0]} active of {rows[0][1]} connections (max {rows[0][2]})")),
            ("replication_bytes", "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)"
             " FROM pg_stat_replication", 64 * 1024 * 1024, 1024 * 1024 * 1024,
             lambda rows: (max((float(r[1] or 0) for r in rows), default=0.0),
                           f"{len(rows)} replica(s) streaming; replay behind by {[(r[0], r[1]) for r in rows]} bytes")),
            ("backfill_sessions", "SELECT pid, state, left(query, 120) FROM pg_stat_activity"
             " WHERE application_name LIKE 'zdt_backfill:%%'", None, None,
             lambda rows: (len(rows), "; ".join(f"pid {r[0]} {r[1]} (stop it: SELECT pg_cancel_backend({r[0]}))"
                                                for r in rows[:5]) or "none")),
        ]

    def replication_bytes_sql(self):
        """On the primary: rows ``(application_name, bytes the replica's replay is behind)``."""
        return (
            "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)"
            " FROM pg_stat_replication"
        )


class MySQLDialect(Dialect):
    """MySQL 8.0+ and MariaDB 10.6+ (tested on MariaDB 10.11)."""

    name = "mysql"
    ROW_LOCK_SIGNAL = "row_lock_waits_per_s"  # Innodb_row_lock_waits, per second between readings
    _preparer = sa_mysql.dialect().identifier_preparer
    current_schema = "database()"
    timestamp_type = "timestamp(6)"
    now = "current_timestamp(6)"
    serial_pk = "BIGINT AUTO_INCREMENT PRIMARY KEY"
    long_text_type = "mediumtext"  # text holds 64 KiB on MySQL; mediumtext 16 MiB

    def now_plus(self):
        return "current_timestamp(6) + INTERVAL round(%s * 1000000) MICROSECOND"

    def ddl_session_setup(self, lock_wait_s, tag):
        wait = max(1, round(lock_wait_s))
        return [
            ("SET SESSION lock_wait_timeout = %s", (wait,)),
            ("SET SESSION innodb_lock_wait_timeout = %s", (wait,)),
            ("SET @zdt_backfill_run = %s", (tag,)),
        ]

    share_lock = "LOCK IN SHARE MODE NOWAIT"

    def _overwrite(self, quoted_key, columns):
        updates = ", ".join(f"{self.quote(c)} = VALUES({self.quote(c)})" for c in columns)
        return f"ON DUPLICATE KEY UPDATE {updates}"

    def delete_extra_sql(self, source, target, key, n_keys, schema=None):
        k = self.quote(key)
        return (
            f"DELETE t FROM {self.table(target, schema)} AS t WHERE t.{k} IN ({self._in_list(n_keys)})"
            f" AND NOT EXISTS (SELECT 1 FROM {self.table(source, schema)} AS s WHERE s.{k} = t.{k})"
        )

    def auto_increment_sql(self):
        """Params ``(schema_or_null, table)``: the table's next AUTO_INCREMENT value (NULL without one)."""
        return (
            "SELECT auto_increment FROM information_schema.tables"
            " WHERE table_schema = coalesce(%s, database()) AND table_name = %s"
        )

    def set_auto_increment_sql(self, table, value, schema=None):
        """``ALTER TABLE ... AUTO_INCREMENT = n`` (DDL: run it under :meth:`ddl_session_setup`).
        ``value`` is rendered as an integer literal (DDL takes no placeholders)."""
        return f"ALTER TABLE {self.table(table, schema)} AUTO_INCREMENT = {int(value)}"

    def rows_estimate_sql(self, table, schema=None):
        return (
            "SELECT table_rows FROM information_schema.tables WHERE table_schema = coalesce(%s, database())"
            " AND table_name = %s",
            (schema, table),
        )

    def copy_batch_sql(self, source, target, key, columns, schema=None, key_index=None, types=None):
        k = self.quote(key)
        cols, exprs = self._copy_lists(k, columns, types)
        index = "PRIMARY" if key_index in (None, "PRIMARY") else self.quote(key_index)
        # ON DUPLICATE KEY UPDATE key = key skips duplicate keys only; INSERT IGNORE would
        # also turn foreign-key and conversion errors into warnings and lose rows silently.
        return (
            f"INSERT INTO {self.table(target, schema)} ({cols})"
            f" SELECT {exprs} FROM {self.table(source, schema)} FORCE INDEX ({index})"
            f" WHERE {k} > %s AND {k} <= %s {self.share_lock}"
            f" ON DUPLICATE KEY UPDATE {k} = {self.table(target, schema)}.{k}"
        )

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

    def column_type(self, data_type, column_type=None, numeric_precision=None, numeric_scale=None,
                    datetime_precision=None, character_set=None, max_length=None):
        """From ``information_schema.columns``: ``(data_type, column_type, numeric_precision,
        numeric_scale, datetime_precision, character_set_name, character_maximum_length)``."""
        dt = _text(data_type).lower()
        sql = _text(column_type).lower() or dt
        if dt in _MY_INTEGER_TYPES:
            # DECIMAL(20,0), not SIGNED/UNSIGNED: those wrap out-of-range values round silently
            # (-1 AS UNSIGNED is 18446744073709551615, a note, not an error in strict mode)
            return ColumnType(sql, "DECIMAL(20,0)", "value")
        if dt in ("decimal", "numeric"):
            return ColumnType(sql, f"DECIMAL({int(numeric_precision or 10)},{int(numeric_scale or 0)})", "value")
        if dt == "float":
            return ColumnType(sql, "FLOAT", "value")
        if dt in ("double", "real", "double precision"):
            return ColumnType(sql, "DOUBLE", "value")
        if dt == "date":
            return ColumnType(sql, "DATE", "value")
        if dt in ("datetime", "timestamp"):
            return ColumnType(sql, f"DATETIME({int(datetime_precision or 0)})", "value")
        if dt == "time":
            return ColumnType(sql, f"TIME({int(datetime_precision or 0)})", "value")
        if dt == "bit":
            return ColumnType(sql, None, "bit")
        if dt == "json":  # MySQL's JSON type (MariaDB's JSON is LONGTEXT: text, stored as written)
            return ColumnType(sql, "JSON", "json")
        if dt == "binary":
            return ColumnType(sql, f"BINARY({int(max_length)})" if max_length else "BINARY", "binary")
        if dt in _MY_BINARY_TYPES:
            return ColumnType(sql, "BINARY", "binary")
        if dt in _MY_SPATIAL_TYPES:
            return ColumnType(sql, None, "binary")
        if dt == "char":
            return ColumnType(sql, None, "char")
        if dt in _MY_TEXT_TYPES or character_set:
            return ColumnType(sql, None, "text")
        return ColumnType(sql, None, "value")

    def parse_type(self, sql_type):
        m = re.match(r"\s*([a-z ]+?)\s*(?:\((\d+)(?:\s*,\s*(\d+))?\))?\s*(unsigned)?\s*$", sql_type.lower())
        if not m:
            return ColumnType(sql_type, None, "value")
        dt, n, scale = m.group(1), m.group(2), m.group(3)
        if dt in ("decimal", "numeric"):
            return self.column_type(dt, sql_type, n, scale)
        if dt in ("datetime", "timestamp", "time"):
            return self.column_type(dt, sql_type, datetime_precision=n)
        return self.column_type(dt, sql_type, max_length=n)

    def cast_value(self, value, t):
        if t is None:
            return value
        if t.kind == "text":
            return f"CONVERT({value} USING utf8mb4)"
        if t.kind == "char":  # a CHAR column returns its value without trailing spaces
            return f"TRIM(TRAILING ' ' FROM CONVERT({value} USING utf8mb4))"
        return f"CAST({value} AS {t.cast})" if t.cast else value

    def encode_value(self, value, t):
        # Independent of the connection's character set: text is converted to utf8mb4 and
        # hexed, so what is hashed is ASCII (the same bytes in any client charset).
        kind = t.kind if t is not None else None
        if kind in ("text", "char"):
            return f"HEX(CONVERT({value} USING utf8mb4))"
        if kind == "binary":
            return f"HEX({value})"
        if kind == "json":
            return f"HEX(CAST({value} AS CHAR CHARACTER SET utf8mb4))"
        if kind == "bit":
            return f"CAST(CAST({value} AS UNSIGNED) AS CHAR CHARACTER SET utf8mb4)"
        if kind == "value":  # numbers, dates and times: canonical ASCII text at the column's precision
            return f"CAST({value} AS CHAR CHARACTER SET utf8mb4)"
        return f"HEX(CAST({value} AS CHAR CHARACTER SET utf8mb4))"  # type unknown: text, losslessly

    def hex_field(self, encoded, t):
        if t is not None and t.kind in ("value", "bit"):
            return f"HEX({encoded})"  # ASCII text; the other kinds are hex already
        return encoded

    def row_hash(self, values, types=None):
        parts = ", ':', ".join(f"coalesce({e}, 'N')" for e in self._hex_fields(values, types))
        return f"cast(conv(substring(md5(concat({parts})), 1, 16), 16, 10) AS unsigned)"

    def null_safe_equal(self, a, b, t=None):
        # The bytes of the encodings the checksum hashes: a latin1 column against a utf8mb4
        # expression is otherwise an "illegal mix of collations", and a case-insensitive,
        # PAD SPACE collation would call 'A' and 'a ' equal.
        t = self._column_type(t)
        return f"CAST({self.encode_value(a, t)} AS BINARY) <=> CAST({self.encode_value(b, t)} AS BINARY)"

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

    def table_checksum_sql(self, table, key, schema=None):
        return f"CHECKSUM TABLE {self.table(table, schema)} EXTENDED"

    def cache_hit_sql(self):
        return ("SELECT sum(CASE WHEN variable_name = 'INNODB_BUFFER_POOL_READS' THEN variable_value END),"
                " sum(CASE WHEN variable_name = 'INNODB_BUFFER_POOL_READ_REQUESTS' THEN variable_value END)"
                " FROM information_schema.global_status"
                " WHERE variable_name IN ('INNODB_BUFFER_POOL_READS', 'INNODB_BUFFER_POOL_READ_REQUESTS')")

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

    def replica_lag_sql(self):
        return "SHOW SLAVE STATUS"

    #: SHOW GLOBAL STATUS names -> load signal names (MySQL 8 has no Innodb_deadlocks /
    #: Innodb_history_list_length status: those read as unknown there).
    LOAD_STATUS = {
        "Threads_running": "threads_running", "Innodb_row_lock_waits": "row_lock_waits",
        "Innodb_row_lock_time": "row_lock_time_ms", "Innodb_deadlocks": "deadlocks",
        "Innodb_history_list_length": "history_list_length",
    }

    def symptom_queries(self):
        def status(rows):
            d = {r[0]: r[1] for r in rows}
            waits = float(d.get("Innodb_row_lock_current_waits", 0) or 0)
            return waits, ", ".join(f"{k}={v}" for k, v in d.items())

        return [
            ("lock_waits", "SELECT trx_id, trx_state, trx_query, trx_wait_started FROM information_schema.innodb_trx"
             " WHERE trx_state = 'LOCK WAIT'", 1, 20,
             lambda rows: (len(rows), f"{len(rows)} transaction(s) in LOCK WAIT" + (f": {[tuple(map(str, r)) for r in rows[:3]]}" if rows else ""))),
            ("row_lock_contention", "SHOW GLOBAL STATUS LIKE 'Innodb_row_lock%%'", 1, 20, status),
            ("connections", "SHOW GLOBAL STATUS LIKE 'Threads_running'", 25, 100,
             lambda rows: (float(rows[0][1]) - 1 if rows else None, f"Threads_running={rows[0][1] if rows else '?'}")),
            ("backfill_sessions", "SELECT id, time, left(info, 120) FROM information_schema.processlist"
             " WHERE info LIKE '/* zdt_backfill:%%'", None, None,
             lambda rows: (len(rows), "; ".join(f"thread {r[0]} for {r[1]}s (stop it: KILL QUERY {r[0]})"
                                                for r in rows[:5]) or "none")),
        ]

    def load_sql(self, schema, tables):
        names = list(self.LOAD_STATUS)
        return (f"SHOW GLOBAL STATUS WHERE Variable_name IN ({', '.join(['%s'] * len(names))})", tuple(names), "pairs")

    def heartbeat_upsert_sql(self, schema=None):
        return (
            f"INSERT INTO {self.table('zdt_heartbeat', schema)} (name, ts, run_id) VALUES (%s, current_timestamp(6), %s)"
            " ON DUPLICATE KEY UPDATE ts = VALUES(ts), run_id = VALUES(run_id)"
        )

    def heartbeat_age_sql(self, schema=None):
        return (
            "SELECT timestampdiff(MICROSECOND, ts, sysdate(6)) / 1000000"
            f" FROM {self.table('zdt_heartbeat', schema)} WHERE name = %s"
        )


def dialect_for(engine: str) -> Dialect:
    """The :class:`Dialect` of an engine name: ``postgres``/``postgresql`` or ``mysql``/``mariadb``.

    :raises ValueError: unknown engine.
    """
    if engine in ("postgres", "postgresql"):
        return PostgresDialect()
    if engine in ("mysql", "mariadb"):
        return MySQLDialect()
    raise ValueError(f"unsupported database engine {engine!r}: use PostgreSQL or MySQL/MariaDB")
