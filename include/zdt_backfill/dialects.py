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

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.dialects import postgresql as sa_postgresql

from .identifiers import validate_identifier

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


class Dialect:
    """SQL of one database engine. Subclasses: :class:`PostgresDialect`, :class:`MySQLDialect`."""

    name = "base"
    _preparer = None
    #: SQL naming the connection's current schema (PostgreSQL) / database (MySQL).
    current_schema = ""
    #: Column type and expression of a microsecond timestamp, for the control tables.
    timestamp_type = ""
    now = ""

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
    ) -> str:
        """Insert-if-absent of one chunk: ``INSERT INTO target SELECT ... FROM source``.

        Params: ``(chunk_lo_exclusive, chunk_hi_inclusive)``. Rows already in the target
        (dual-written by the application) are kept as they are. Source rows are read
        with a shared lock, so a concurrent application update or delete of a row in the
        chunk waits for the batch to commit instead of racing it (gh-ost and
        pt-online-schema-change read their chunks ``LOCK IN SHARE MODE`` for the same reason).
        ``key_index`` names the index on the key (MySQL forces it; PRIMARY when ``None``).
        """
        raise NotImplementedError

    def _copy_lists(self, quoted_key: str, columns: dict[str, str]) -> tuple[str, str]:
        """The INSERT's column list and the SELECT's value list of a copy batch (key first)."""
        cols = ", ".join([quoted_key, *(self.quote(c) for c in columns)])
        exprs = ", ".join([quoted_key, *(expr(e) for e in columns.values())])
        return cols, exprs

    def fill_batch_sql(self, table: str, key: str, columns: dict[str, str], schema: str | None = None) -> str:
        """``UPDATE table SET col = expr`` for one chunk, only rows whose target columns are all NULL.

        Params: ``(chunk_lo_exclusive, chunk_hi_inclusive)``. A row the application already
        wrote (any target column set) is left alone.
        """
        k = self.quote(key)
        sets = ", ".join(f"{self.quote(c)} = {expr(e)}" for c, e in columns.items())
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

    # ------------------------------------------------------------------ session
    def session_setup(self, lock_timeout_s: float, statement_timeout_s: float, tag: str) -> list[tuple[str, Params]]:
        """Statements that make a backfill session safe: short lock waits, a statement
        timeout, and a tag naming the run so DBAs can find it."""
        raise NotImplementedError

    def plan_pinning(self) -> list[str]:
        """Session statements that pin the batch plan to the key index; run once on each
        batch session, and inside pre-flight's ``EXPLAIN`` transaction, which rolls back."""
        return []

    # ------------------------------------------------------------------ validation
    def row_hash(self, values: Sequence[str]) -> str:
        """SQL of a 64-bit hash of a row's values (NULL-safe), summed per range."""
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

        The source side hashes the *expected projection* (key and each column
        expression); the target side hashes the key and the target columns. Both sides
        are read by one statement, so they see one snapshot even while the application
        writes. The per-row hash is the first 64 bits of MD5 over the values, each
        length-prefixed (``5:alice``) and NULL spelled ``N``, so no two rows encode alike;
        summed (pt-table-checksum XORs CRC32s; a sum does not cancel duplicate rows).
        ``casts`` maps target columns to their SQL type: the expected value is the
        expression cast to it, which is what the batch's INSERT stores.
        """
        k = self.quote(key)
        src_pred, src_params = self.range_predicate(key, rng)
        tgt_pred, tgt_params = self.range_predicate(key, rng)
        src_hash = self.row_hash([k, *self.expected(columns, casts)])
        tgt_hash = self.row_hash([k, *(self.quote(c) for c in columns)])
        sql = (
            "SELECT s.n, s.h, t.n, t.h FROM "
            f"(SELECT count(*) AS n, coalesce(sum(x.h), 0) AS h FROM (SELECT {src_hash} AS h "
            f"FROM {self.table(source, schema)} WHERE {src_pred}) AS x) AS s CROSS JOIN "
            f"(SELECT count(*) AS n, coalesce(sum(y.h), 0) AS h FROM (SELECT {tgt_hash} AS h "
            f"FROM {self.table(target, schema)} WHERE {tgt_pred}) AS y) AS t"
        )
        return sql, src_params + tgt_params

    def expected(self, columns: dict[str, str], casts: dict[str, str] | None) -> list[str]:
        """The expected value of each target column: its expression, cast to the column's type if known."""
        casts = casts or {}
        return [f"CAST({expr(e)} AS {casts[c]})" if c in casts else expr(e) for c, e in columns.items()]

    def null_safe_equal(self, a: str, b: str) -> str:
        """NULL-safe equality of two values as the checksum sees them (their text, byte for byte)."""
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

        Run only on ranges whose checksums differ. The source projection is computed in
        a derived table, so column expressions resolve against the source alone. Values
        compare NULL-safely and byte for byte on the text form the checksum hashes, so
        every range whose checksum differs has its differing keys named (collations are
        often case-insensitive, and charsets mixed).
        """
        k = self.quote(key)
        exprs = ", ".join(
            f"{e} AS {self.quote('zdt_c' + str(i))}" for i, e in enumerate(self.expected(columns, casts))
        )
        src_pred, src_params = self.range_predicate(key, rng)
        equal = " AND ".join(
            self.null_safe_equal(f"t.{self.quote(c)}", f"s.{self.quote('zdt_c' + str(i))}")
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

    def column_types_sql(self, table: str, schema: str | None = None) -> tuple[str, Params] | None:
        """Rows ``(column, SQL type)`` of a table, for :meth:`expected` casts; ``None`` where
        the engine cannot cast to an arbitrary column type (MySQL)."""
        return None

    def replica_lag_sql(self) -> str:
        raise NotImplementedError


class PostgresDialect(Dialect):
    """PostgreSQL 12+ (tested on 15)."""

    name = "postgres"
    _preparer = sa_postgresql.dialect().identifier_preparer
    current_schema = "current_schema()"
    timestamp_type = "timestamptz"
    now = "now()"

    def rows_estimate_sql(self, table, schema=None):
        # the regclass parameter is the quoted, qualified name
        return "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c WHERE c.oid = %s::regclass", (
            self.table(table, schema),
        )

    def copy_batch_sql(self, source, target, key, columns, schema=None, key_index=None):
        k = self.quote(key)
        cols, exprs = self._copy_lists(k, columns)
        return (
            f"INSERT INTO {self.table(target, schema)} ({cols})"
            f" SELECT {exprs} FROM {self.table(source, schema)}"
            f" WHERE {k} > %s AND {k} <= %s FOR SHARE"
            f" ON CONFLICT ({k}) DO NOTHING"
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

    def row_hash(self, values):
        parts = ", ".join(f"coalesce(length(({v})::text) || ':' || ({v})::text, 'N')" for v in values)
        return f"('x' || substr(md5(concat({parts})), 1, 16))::bit(64)::bigint::numeric"

    def null_safe_equal(self, a, b):
        return f'({a})::text COLLATE "C" IS NOT DISTINCT FROM ({b})::text COLLATE "C"'

    def column_types_sql(self, table, schema=None):
        return (
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
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
        # Seconds since the last replayed transaction when replay is behind what was
        # received, 0 when caught up, NULL on a primary. A heartbeat replaces this as the
        # primary signal in the health-gating issue (replay_lag can be stale).
        return (
            "SELECT pg_is_in_recovery(), CASE"
            " WHEN NOT pg_is_in_recovery() THEN NULL"
            " WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0"
            " ELSE greatest(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END"
        )


class MySQLDialect(Dialect):
    """MySQL 8.0+ and MariaDB 10.6+ (tested on MariaDB 10.11)."""

    name = "mysql"
    _preparer = sa_mysql.dialect().identifier_preparer
    current_schema = "database()"
    timestamp_type = "timestamp(6)"
    now = "current_timestamp(6)"

    def rows_estimate_sql(self, table, schema=None):
        return (
            "SELECT table_rows FROM information_schema.tables WHERE table_schema = coalesce(%s, database())"
            " AND table_name = %s",
            (schema, table),
        )

    def copy_batch_sql(self, source, target, key, columns, schema=None, key_index=None):
        k = self.quote(key)
        cols, exprs = self._copy_lists(k, columns)
        index = "PRIMARY" if key_index in (None, "PRIMARY") else self.quote(key_index)
        # ON DUPLICATE KEY UPDATE key = key skips duplicate keys only; INSERT IGNORE would
        # also turn foreign-key and conversion errors into warnings and lose rows silently.
        return (
            f"INSERT INTO {self.table(target, schema)} ({cols})"
            f" SELECT {exprs} FROM {self.table(source, schema)} FORCE INDEX ({index})"
            f" WHERE {k} > %s AND {k} <= %s LOCK IN SHARE MODE"
            f" ON DUPLICATE KEY UPDATE {k} = {self.table(target, schema)}.{k}"
        )

    def session_setup(self, lock_timeout_s, statement_timeout_s, tag):
        # innodb_lock_wait_timeout is whole seconds, 1 at least.
        lock_wait = max(1, round(lock_timeout_s))
        return [
            ("SET SESSION innodb_lock_wait_timeout = %s", (lock_wait,)),
            # READ COMMITTED: the INSERT ... SELECT reads the source without gap locks.
            ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", ()),
            ("SET @zdt_backfill_run = %s", (tag,)),
        ]

    def row_hash(self, values):
        parts = ", ".join(
            f"coalesce(concat(char_length(cast(({v}) AS char)), ':', cast(({v}) AS char)), 'N')" for v in values
        )
        return f"cast(conv(substring(md5(concat({parts})), 1, 16), 16, 10) AS unsigned)"

    def null_safe_equal(self, a, b):
        # Compare the bytes of the text form the checksum hashes (connection charset): a
        # latin1 column against a utf8mb4 expression is otherwise an "illegal mix of
        # collations", and a case-insensitive collation would call 'A' and 'a' equal.
        return f"cast(cast({a} AS char) AS binary) <=> cast(cast({b} AS char) AS binary)"

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


def dialect_for(engine: str) -> Dialect:
    """The :class:`Dialect` of an engine name: ``postgres``/``postgresql`` or ``mysql``/``mariadb``.

    :raises ValueError: unknown engine.
    """
    if engine in ("postgres", "postgresql"):
        return PostgresDialect()
    if engine in ("mysql", "mariadb"):
        return MySQLDialect()
    raise ValueError(f"unsupported database engine {engine!r}: use PostgreSQL or MySQL/MariaDB")
