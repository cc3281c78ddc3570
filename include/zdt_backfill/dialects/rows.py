"""Row-copy SQL: keyset chunk ends, the copy and fill batches (insert-if-absent under a shared
lock), the fused PostgreSQL batch, repair upserts and deletes, fill-mode rollback.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import DialectBase, Params, expr


class Rows(DialectBase):
    """The shared part of the rows role."""

    def key_bounds_sql(self, table: str, key: str, schema: str | None = None) -> tuple[str, Params]:
        """``(min(key), max(key), estimated rows)`` of a table; both ends use the key index,
        the estimate comes from catalog statistics (no count)."""
        k, t = self.quote(key), self.table(table, schema)
        sql, params = self.rows_estimate_sql(table, schema)
        return f"SELECT (SELECT min({k}) FROM {t}), (SELECT max({k}) FROM {t}), ({sql})", params

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
        plain_when_empty: bool = True, tag: str = "", fence: str = "",
    ) -> str | None:
        """One copy batch in one round trip: the chunk end, the insert-if-absent and the guarded
        checkpoint UPDATE (the guarantees of :meth:`copy_batch_sql`, :meth:`chunk_end_sql` and
        :meth:`~zdt_backfill.state.checkpoint.CheckpointStore.advance`, unchanged); ``None`` when the engine has none.

        Named params: ``lo`` (the watermark), ``hi`` (the partition's last key), ``n`` (the batch
        size), ``run``, ``part`` and the guard's (``checkpoint(new, rows, keys, extra_where)``
        renders the UPDATE with them). Returns one row ``(chunk_end, keys, rows_written,
        checkpoints_updated, fenced)``; ``chunk_end`` NULL when the partition is done (or the
        fence did not hold), ``checkpoints_updated`` 0 when the guard or the old watermark no
        longer holds (the caller rolls back).

        ``fence`` (the run's locking read, :meth:`~zdt_backfill.state.runstate.RunHandle.fence_sql`,
        named params): read first, the chunk's keys read only when it returned the run's row, so
        the lock is taken before any row is written; ``fenced`` is 0 when it did not hold
        (nothing was written; the caller rolls back and stops).

        ``plain_when_empty`` (PostgreSQL): when the target holds no key of the chunk (read in the
        statement's snapshot) the rows go in by a plain ``INSERT`` (no ``ON CONFLICT``
        speculative insertion, a third of the statement's time); a row the application
        dual-writes after that snapshot then fails the batch with a unique violation (never
        overwritten), and the caller redoes the batch with ``plain_when_empty=False``.
        """
        return None

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
        return self.upsert_select_sql(
            self.table(target, schema), k, columns, types,
            f"FROM {self.table(source, schema)} WHERE {k} IN ({self._in_list(n_keys)}) {self.share_lock}")

    def upsert_select_sql(self, target_sql: str, quoted_key: str, columns: dict[str, str],
                          types: dict[str, Any] | None, select_from: str) -> str:
        """``INSERT INTO target (key, columns) SELECT <typed projection> <select_from>``, overwriting
        the target row when its key exists (the repair, the dual-write triggers).

        :param select_from: the rest of the ``SELECT`` after its list (``FROM ... WHERE ...`` and a
            locking clause), its values bound where it has placeholders.
        """
        cols, exprs = self._copy_lists(quoted_key, columns, types)
        return f"INSERT INTO {target_sql} ({cols}) SELECT {exprs} {select_from} {self._overwrite(quoted_key, columns)}"

    #: The shared-lock clause of a batch's read of the source (see :meth:`copy_batch_sql`).
    share_lock = "FOR SHARE"

    def _overwrite(self, quoted_key: str, columns: dict[str, str]) -> str:
        """The upsert clause that overwrites a target row with the inserted values."""
        return self._upsert_update([quoted_key], [self.quote(c) for c in columns])

    def delete_extra_sql(self, source: str, target: str, key: str, n_keys: int, schema: str | None = None) -> str:
        """Delete the named target keys that have no source row *now* (checked in the same
        statement, so a row the application inserted since validation is kept). Params: the keys."""
        k = self.quote(key)
        return (
            f"{self._delete_aliased(self.table(target, schema))} WHERE t.{k} IN ({self._in_list(n_keys)})"
            f" AND NOT EXISTS (SELECT 1 FROM {self.table(source, schema)} AS s WHERE s.{k} = t.{k})"
        )

    def _delete_aliased(self, table_sql: str) -> str:
        """``DELETE`` of ``table_sql`` aliased ``t`` (the engines spell it differently)."""
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

    def max_key_sql(self, table: str, key: str, schema: str | None = None) -> str:
        """``max(key)`` of a table (one index read)."""
        return f"SELECT max({self.quote(key)}) FROM {self.table(table, schema)}"


    def upsert_values_sql(self, table: str, columns: Sequence[str], key: Sequence[str], values: Sequence[str],
                          schema: str | None = None) -> str:
        """``INSERT INTO table (columns) VALUES (values)``, updating every column not in ``key``
        when a row with that key exists (a control row: a flag, a heartbeat).

        :param values: SQL of each value, in ``columns`` order (``%s`` placeholders or :attr:`now`).
        """
        cols = ", ".join(self.quote(c) for c in columns)
        updates = [c for c in columns if c not in key]
        return (f"INSERT INTO {self.table(table, schema)} ({cols}) VALUES ({', '.join(values)})"
                f" {self._upsert_update([self.quote(k) for k in key], [self.quote(c) for c in updates])}")

    def _upsert_update(self, quoted_key: list[str], quoted_columns: list[str]) -> str:
        """The clause that overwrites the existing row's ``quoted_columns`` with the inserted values."""
        raise NotImplementedError


class PostgresRows(Rows):
    """The Postgres part of the rows role."""

    def _upsert_update(self, quoted_key, quoted_columns):
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in quoted_columns)
        return f"ON CONFLICT ({', '.join(quoted_key)}) DO UPDATE SET {sets}"

    def _delete_aliased(self, table_sql):
        return f"DELETE FROM {table_sql} AS t"

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
                             plain_when_empty=True, tag="", fence=""):
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
        # The fence CTE (a locking read, never inlined) is read by the chunk's key scan before
        # anything else, so its row lock is held before the first row is written.
        fenced, held = (f"z AS ({fence}), ", " AND EXISTS (SELECT 1 FROM z)") if fence else ("", "")
        return (
            f"WITH {fenced}e AS (SELECT max(b.{k}) AS hi, count(*) AS keys FROM (SELECT {k} FROM {src}"
            f" WHERE {k} > %(lo)s AND {k} <= %(hi)s{held} ORDER BY {k} LIMIT %(n)s) AS b),"
            f"{inserts} cp AS ({cp} RETURNING 1)"
            f" SELECT e.hi, e.keys, w.n, (SELECT count(*) FROM cp), {'(SELECT count(*) FROM z)' if fence else '1'}"
            " FROM e, w"
        )


class MySQLRows(Rows):
    """The MySQL part of the rows role."""

    #: Oracle MySQL 8.0.19+ names the row being inserted with a row alias (``INSERT ... AS zdt_row
    #: ON DUPLICATE KEY UPDATE c = zdt_row.c``); ``VALUES(c)`` there is deprecated since 8.0.20.
    #: MariaDB has no row alias and keeps ``VALUES(c)``. Not ``new``: inside a trigger body that
    #: is the trigger's row.
    ROW_ALIAS: str | None = "zdt_row"

    def _upsert_update(self, quoted_key, quoted_columns):
        if self.ROW_ALIAS:
            a = self.ROW_ALIAS
            return "ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = {a}.{c}" for c in quoted_columns)
        return "ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in quoted_columns)

    def upsert_values_sql(self, table, columns, key, values, schema=None):
        sql = super().upsert_values_sql(table, columns, key, values, schema)
        if not self.ROW_ALIAS:
            return sql
        head, odku = sql.split(" ON DUPLICATE KEY UPDATE ", 1)
        return f"{head} AS {self.ROW_ALIAS} ON DUPLICATE KEY UPDATE {odku}"

    def upsert_select_sql(self, target_sql, quoted_key, columns, types, select_from):
        if not self.ROW_ALIAS:
            return super().upsert_select_sql(target_sql, quoted_key, columns, types, select_from)
        # INSERT ... SELECT takes no row alias: the SELECT becomes a derived table of that name,
        # which the optimizer merges (the same index range scan on the source, measured on 9.7)
        names = [quoted_key, *(self.quote(c) for c in columns)]
        values = [quoted_key, *self.typed_projection(columns, types)]  # type: ignore[attr-defined]
        aliased = ", ".join(f"{v} AS {n}" for v, n in zip(values, names, strict=True))
        return (f"INSERT INTO {target_sql} ({', '.join(names)}) SELECT * FROM (SELECT {aliased} {select_from})"
                f" AS {self.ROW_ALIAS} {self._upsert_update([quoted_key], names[1:])}")

    # Oracle MySQL 8.0+ spelling; its parser refuses NOWAIT after LOCK IN SHARE MODE in an
    # INSERT ... SELECT (MariaDB's spelling, :class:`~zdt_backfill.dialects.MariaDBDialect`).
    share_lock = "FOR SHARE NOWAIT"

    def _delete_aliased(self, table_sql):
        return f"DELETE t FROM {table_sql} AS t"

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

