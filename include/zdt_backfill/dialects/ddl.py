"""DDL and the target's sequences: ``TRUNCATE``, the legacy table's or columns' drop and rename,
the online storage reclaim (never ``VACUUM FULL`` or ``OPTIMIZE TABLE``), and the sequences /
AUTO_INCREMENT that pre-flight records, contract advances and rollback restores.

A DDL statement queued for its exclusive lock queues every later statement on the table behind
it, so every one of these runs through :meth:`~zdt_backfill.db.Database.run_ddl` (a short lock
wait under :meth:`~zdt_backfill.dialects.session.Session.ddl_session_setup`, retried).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

from .base import DialectBase


class Statement(NamedTuple):
    """One statement to run: its SQL and parameters, and whether it is DDL (run through
    :meth:`~zdt_backfill.db.Database.run_ddl`, with a bounded lock wait) or a plain statement."""

    sql: str
    params: tuple = ()
    ddl: bool = False
    #: what it does, in a few words, for the log and the run's events (``seq=42``)
    label: str = ""


Query = Callable[[str, tuple], Sequence[Sequence[Any]]]


class DDL(DialectBase):
    """The shared part of the ddl role."""

    def truncate_sql(self, table: str, schema: str | None = None) -> str:
        """``TRUNCATE TABLE`` of a copy target (rollback, the staging rehearsal's restore)."""
        return f"TRUNCATE TABLE {self.table(table, schema)}"

    def drop_table_sql(self, table: str, schema: str | None = None) -> str:
        return f"DROP TABLE {self.table(table, schema)}"

    def rename_table_sql(self, table: str, new_name: str, schema: str | None = None) -> str:
        return f"ALTER TABLE {self.table(table, schema)} RENAME TO {self.quote(new_name)}"

    def drop_column_sql(self, table: str, column: str, schema: str | None = None) -> str:
        return f"ALTER TABLE {self.table(table, schema)} DROP COLUMN {self.quote(column)}"

    def rename_column_sql(self, table: str, column: str, new_name: str, schema: str | None = None) -> str:
        return f"ALTER TABLE {self.table(table, schema)} RENAME COLUMN {self.quote(column)} TO {self.quote(new_name)}"

    def reclaim_storage_sql(self, table: str, schema: str | None = None) -> tuple[str, bool]:
        """The online storage reclaim and fresh statistics of a table: ``(sql, autocommit)``
        (``VACUUM`` cannot run inside a transaction)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sequences
    def read_sequences(self, query: Query, table: str, schema: str | None = None) -> dict[str, Any]:
        """The table's sequences now, as recorded at pre-flight (JSON-ready).

        :param query: runs ``(sql, params)`` and returns the rows (a read in the caller's session).
        """
        raise NotImplementedError

    def advance_sequences(self, query: Query, table: str, key: str, max_key: Any,
                          schema: str | None = None) -> list[Statement]:
        """Statements that move the sequence or AUTO_INCREMENT of ``key`` past ``max_key`` (none
        when it is already past), so the application's next insert without a key does not collide
        with a copied one."""
        raise NotImplementedError

    def restore_sequences(self, recorded: dict[str, Any], table: str, schema: str | None = None) -> list[Statement]:
        """Statements that put the sequences back to the values :meth:`read_sequences` recorded."""
        raise NotImplementedError


class PostgresDDL(DDL):
    """The Postgres part of the ddl role."""

    def reclaim_storage_sql(self, table, schema=None):
        return f"VACUUM (ANALYZE) {self.table(table, schema)}", True

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

    def read_sequences(self, query, table, schema=None):
        sql, params = self.owned_sequences_sql(table, schema)
        return {"sequences": {r[0]: {"last_value": r[1], "start": r[2], "column": r[3]} for r in query(sql, params)}}

    def advance_sequences(self, query, table, key, max_key, schema=None):
        sql, params = self.owned_sequences_sql(table, schema)
        return [Statement(self.set_sequence_sql(), (seq, max_key, True), False, f"{seq}={max_key}")
                for seq, last, _start, column in query(sql, params)
                if column == key and (last is None or last < max_key)]

    def restore_sequences(self, recorded, table, schema=None):
        out = []
        for seq, v in (recorded.get("sequences") or {}).items():
            value, called = (v["last_value"], True) if v.get("last_value") is not None else (v["start"], False)
            out.append(Statement(self.set_sequence_sql(), (seq, value, called), False,
                                 f"{seq}={value}{'' if called else ' (not called)'}"))
        return out


class MySQLDDL(DDL):
    """The MySQL part of the ddl role."""

    def reclaim_storage_sql(self, table, schema=None):
        return f"ANALYZE TABLE {self.table(table, schema)}", False

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

    def read_sequences(self, query, table, schema=None):
        rows = query(self.auto_increment_sql(), (schema, table))
        return {"auto_increment": rows[0][0] if rows else None}

    def advance_sequences(self, query, table, key, max_key, schema=None):
        rows = query(self.auto_increment_sql(), (schema, table))
        current = rows[0][0] if rows else None
        if current is None or current > max_key:
            return []
        return [Statement(self.set_auto_increment_sql(table, max_key + 1, schema), (), True,
                          f"AUTO_INCREMENT={max_key + 1}")]

    def restore_sequences(self, recorded, table, schema=None):
        value = recorded.get("auto_increment")
        return [] if value is None else [Statement(self.set_auto_increment_sql(table, value, schema), (), True,
                                                   f"AUTO_INCREMENT={value}")]
