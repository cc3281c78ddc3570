"""Dual-write triggers (``dual_write: trigger``): row-level ``AFTER INSERT / UPDATE / DELETE``
triggers on the legacy table that keep the copy target in step, pt-online-schema-change's and
pgroll's "up" direction.

Each trigger re-reads the row it fired for from the source, by key, through the copy's own typed
projection (:meth:`~zdt_backfill.dialects.rows.Rows._copy_lists`), and upserts it into the
target; a delete, or an update that moves the key, deletes the old key from the target. One
projection therefore serves the copy, the checksum and the trigger: there is no second
spelling of the column expressions to drift.

- PostgreSQL: one PL/pgSQL function (``SECURITY DEFINER``, so the application's role needs no
  privilege on the target; ``search_path`` pinned to ``pg_catalog, pg_temp``: every table is
  qualified, a type outside ``pg_catalog`` is too, and no function the application's role could
  create in the tables' schema can shadow a built-in inside it) and one trigger, created in one
  transaction (a re-install's ``DROP TRIGGER`` + ``CREATE TRIGGER`` commit together: no write
  slips between them; the drop only when the trigger is there, since it takes ACCESS EXCLUSIVE).
- MySQL / MariaDB: three triggers (a trigger has one event), each after the application's own
  trigger for the same event and timing (``FOLLOWS``); a trigger that already exists with the
  same body is kept (MySQL's DDL commits by itself: dropping and re-creating it would open a gap).

Fill mode (the new columns live in the legacy table itself) gets pgroll's "up" SQL instead: a
``BEFORE INSERT OR UPDATE`` trigger that sets each new column from its typed expression over the
row being written (PostgreSQL ``SELECT ... INTO NEW.c FROM (SELECT NEW.*) AS s``; MySQL
``SET NEW.c = (SELECT ... FROM (SELECT NEW.a AS a, ...) AS s)``), the fill batch's own projection.

The builders are pure; :mod:`zdt_backfill.lifecycle.triggers` runs them with a bounded lock wait.
"""

from __future__ import annotations

from typing import Any

from .base import DialectBase

#: MySQL's triggers by event: (suffix of the name, event).
MYSQL_EVENTS = (("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE"))


class Triggers(DialectBase):
    """The shared part of the triggers role."""

    def trigger_names(self, base: str, fill: bool = False) -> list[str]:
        """The names of the triggers :meth:`install_up_sql` (``fill``: :meth:`install_fill_sql`)
        creates from ``base``."""
        raise NotImplementedError

    def triggers_on_sql(self) -> str:
        """Params ``(schema_or_null, table)``: rows ``(name, event, timing, body)`` of the table's
        triggers (internal ones excluded), in firing order where the engine has one."""
        raise NotImplementedError

    def install_up_sql(self, source: str, target: str, key: str, columns: dict[str, str], schema: str,
                       types: dict[str, Any] | None, base: str, existing: list[tuple] | None = None) -> list[str]:
        """The DDL that installs the up triggers, idempotent: run it twice and one set exists.

        :param schema: the tables' resolved schema (PostgreSQL) / database (MySQL): the bodies
            name every table qualified.
        :param base: the name the triggers derive theirs from (:meth:`trigger_names`).
        :param existing: the source's triggers now (:meth:`triggers_on_sql` rows): MySQL keeps
            one of ours with the same body and orders ours after the application's.
        :returns: statements for :meth:`~zdt_backfill.db.Database.run_ddl` (no parameters).
        """
        raise NotImplementedError

    def install_fill_sql(self, table: str, columns: dict[str, str], schema: str, types: dict[str, Any] | None,
                         base: str, table_columns: list[str], existing: list[tuple] | None = None) -> list[str]:
        """Fill mode's up trigger (pgroll's "up" SQL): ``BEFORE INSERT OR UPDATE`` on ``table``, setting
        each new column to its typed expression over the row being written, idempotent.

        :param table_columns: every column of ``table`` (MySQL names the row's values one by one).
        """
        raise NotImplementedError

    def drop_up_sql(self, source: str, schema: str, base: str, fill: bool = False) -> list[str]:
        """The DDL that removes the up triggers (and PostgreSQL's function); idempotent."""
        raise NotImplementedError

    def definer_session(self) -> list[str]:
        """Session settings under which the trigger's names resolve as in its body (PostgreSQL: the
        function's pinned ``search_path``, so ``format_type`` qualifies a type outside ``pg_catalog``)."""
        return []

    def check_trigger_sql(self, source: str, target: str, key: str, columns: dict[str, str], schema: str,
                          types: dict[str, Any] | None, fill: bool) -> str | None:
        """A statement that resolves every name the trigger body uses without writing (``EXPLAIN``),
        run under :meth:`definer_session` before the install; ``None`` where the body resolves as
        the batch does (MySQL: the trigger's schema is the default database)."""
        return None

    #: Whether a missing privilege read by :meth:`trigger_privilege_sql` refuses the run (MySQL's
    #: roles are not in ``information_schema``'s privilege tables: there it is a warning).
    TRIGGER_PRIVILEGE_FATAL = True

    def trigger_privilege_sql(self) -> str:
        """Params ``(schema_or_null, table)`` (MySQL: ``(schema_or_null, schema_or_null, table)``):
        one row ``(ok, detail)``: whether this user may create the up triggers, and what was read."""
        raise NotImplementedError

    def trigger_privilege_params(self, schema: str | None, table: str) -> tuple:
        """The params of :meth:`trigger_privilege_sql`."""
        return (schema, table)

    def _upsert_one(self, source: str, target: str, key: str, columns: dict[str, str], schema: str,
                    types: dict[str, Any] | None, new_key: str) -> str:
        """The target row of the source row whose key is ``new_key`` (``NEW.k``), upserted."""
        k = self.quote(key)
        return self.upsert_select_sql(self.table(target, schema), k, columns, types,  # type: ignore[attr-defined]
                                      f"FROM {self.table(source, schema)} WHERE {k} = {new_key}")


class PostgresTriggers(Triggers):
    """The Postgres part of the triggers role."""

    def trigger_names(self, base, fill=False):
        return [base]

    #: The body's dollar quote: a tag no body can hold (checked).
    DOLLAR_TAG = "$zdt_trigger_body$"

    def _dollar(self, body: str) -> str:
        if self.DOLLAR_TAG in body:
            raise ValueError(f"a column expression holds {self.DOLLAR_TAG}: it cannot go into a trigger body")
        return f"{self.DOLLAR_TAG}\n{body}\n{self.DOLLAR_TAG}"

    def definer_session(self):
        return ["SET search_path = pg_catalog, pg_temp"]

    def check_trigger_sql(self, source, target, key, columns, schema, types, fill):
        if fill:
            exprs = ", ".join(self.typed_projection(columns, types))  # type: ignore[attr-defined]
            return f"EXPLAIN SELECT {exprs} FROM {self.table(source, schema)} AS s WHERE false"
        return "EXPLAIN " + self._upsert_one(source, target, key, columns, schema, types, "NULL")

    def _drop_if_present(self, base: str, source: str, schema: str, existing: list[tuple] | None) -> list[str]:
        # DROP TRIGGER takes ACCESS EXCLUSIVE (readers queue too) even when the trigger is absent
        present = any(str(r[0]) == base for r in (existing or []))
        return [f"DROP TRIGGER IF EXISTS {self.quote(base)} ON {self.table(source, schema)}"] if present else []

    def function_name(self, base: str) -> str:
        return f"{base}_fn"

    def triggers_on_sql(self):
        return (
            "SELECT t.tgname, '', '', pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s AND NOT t.tgisinternal"
            " ORDER BY t.tgname"
        )

    def install_up_sql(self, source, target, key, columns, schema, types, base, existing=None):
        k = self.quote(key)
        fn = f"{self.quote(schema)}.{self.quote(self.function_name(base))}"
        upsert = self._upsert_one(source, target, key, columns, schema, types, f"NEW.{k}")
        body = (
            "BEGIN\n"
            f"  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.{k} IS DISTINCT FROM NEW.{k}) THEN\n"
            f"    DELETE FROM {self.table(target, schema)} WHERE {k} = OLD.{k};\n"
            "  END IF;\n"
            "  IF TG_OP <> 'DELETE' THEN\n"
            f"    {upsert};\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END"
        )
        return [
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            f" SET search_path = pg_catalog, pg_temp AS {self._dollar(body)}",
            *self._drop_if_present(base, source, schema, existing),
            f"CREATE TRIGGER {self.quote(base)} AFTER INSERT OR UPDATE OR DELETE ON {self.table(source, schema)}"
            f" FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]

    def install_fill_sql(self, table, columns, schema, types, base, table_columns, existing=None):
        fn = f"{self.quote(schema)}.{self.quote(self.function_name(base))}"
        exprs = ", ".join(self.typed_projection(columns, types))  # type: ignore[attr-defined]
        into = ", ".join(f"NEW.{self.quote(c)}" for c in columns)
        body = f"BEGIN\n  SELECT {exprs} INTO {into} FROM (SELECT NEW.*) AS s;\n  RETURN NEW;\nEND"
        return [
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
            f" SET search_path = pg_catalog, pg_temp AS {self._dollar(body)}",
            *self._drop_if_present(base, table, schema, existing),
            f"CREATE TRIGGER {self.quote(base)} BEFORE INSERT OR UPDATE ON {self.table(table, schema)}"
            f" FOR EACH ROW EXECUTE FUNCTION {fn}()",
        ]

    def trigger_privilege_sql(self):
        return (
            "SELECT has_table_privilege(c.oid, 'TRIGGER') AND has_schema_privilege(n.oid, 'CREATE'),"
            " concat('TRIGGER on the table: ', has_table_privilege(c.oid, 'TRIGGER'), ', CREATE on schema ',"
            " n.nspname, ' (the trigger function): ', has_schema_privilege(n.oid, 'CREATE'))"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = coalesce(%s, current_schema()) AND c.relname = %s"
        )

    def drop_up_sql(self, source, schema, base, fill=False):
        return [f"DROP TRIGGER IF EXISTS {self.quote(base)} ON {self.table(source, schema)}",
                f"DROP FUNCTION IF EXISTS {self.quote(schema)}.{self.quote(self.function_name(base))}()"]


class MySQLTriggers(Triggers):
    """The MySQL part of the triggers role."""

    def trigger_names(self, base, fill=False):
        return [f"{base}_{suffix}" for suffix, _ in (MYSQL_EVENTS[:2] if fill else MYSQL_EVENTS)]

    def triggers_on_sql(self):
        return (
            "SELECT trigger_name, event_manipulation, action_timing, action_statement FROM information_schema.triggers"
            " WHERE event_object_schema = coalesce(%s, database()) AND event_object_table = %s"
            " ORDER BY event_manipulation, action_timing, action_order"
        )

    def up_bodies(self, source: str, target: str, key: str, columns: dict[str, str], schema: str,
                  types: dict[str, Any] | None) -> dict[str, str]:
        """Each event's trigger body, as the server stores it (``action_statement``)."""
        k = self.quote(key)
        upsert = self._upsert_one(source, target, key, columns, schema, types, f"NEW.{k}")
        delete = f"DELETE FROM {self.table(target, schema)} WHERE {k} = OLD.{k}"
        return {
            "INSERT": upsert,
            "UPDATE": f"BEGIN IF NOT (OLD.{k} <=> NEW.{k}) THEN {delete}; END IF; {upsert}; END",
            "DELETE": delete,
        }

    def install_up_sql(self, source, target, key, columns, schema, types, base, existing=None):
        bodies = self.up_bodies(source, target, key, columns, schema, types)
        return self._install(source, schema, base, "AFTER", bodies, existing, fill=False)

    def fill_bodies(self, columns: dict[str, str], types: dict[str, Any] | None,
                    table_columns: list[str]) -> dict[str, str]:
        """Fill mode's body for INSERT and UPDATE: each new column from its typed expression over
        the row being written, named column by column (``(SELECT NEW.a AS a, ...) AS s``)."""
        row = ", ".join(f"NEW.{self.quote(c)} AS {self.quote(c)}" for c in table_columns)
        sets = ", ".join(f"NEW.{self.quote(c)} = (SELECT {e} FROM (SELECT {row}) AS s)"
                         for c, e in zip(columns, self.typed_projection(columns, types), strict=True))  # type: ignore[attr-defined]
        return {"INSERT": f"BEGIN SET {sets}; END", "UPDATE": f"BEGIN SET {sets}; END"}

    def install_fill_sql(self, table, columns, schema, types, base, table_columns, existing=None):
        return self._install(table, schema, base, "BEFORE", self.fill_bodies(columns, types, table_columns),
                             existing, fill=True)

    def _install(self, source: str, schema: str, base: str, timing: str, bodies: dict[str, str],
                 existing: list[tuple] | None, fill: bool) -> list[str]:
        """One trigger per event of ``bodies``, each after the application's own trigger of the same
        event and timing; one of ours already there with the same body is kept."""
        rows = [(str(r[0]), str(r[1]).upper(), str(r[2]).upper(), str(r[3])) for r in (existing or [])]
        events = MYSQL_EVENTS[:2] if fill else MYSQL_EVENTS
        out = []
        # DELETE, then UPDATE, then INSERT (each DDL commits by itself): once an insert is mirrored,
        # the update and delete that may follow it are mirrored too
        for (_suffix, event), name in reversed(list(zip(events, self.trigger_names(base, fill), strict=True))):
            # the server stores the body with its '%' as written; ours are doubled for the driver
            body = bodies[event]
            if any(n == name and b.strip() == body.replace("%%", "%").strip() for n, _, _, b in rows):
                continue  # already there, the same: kept (a drop and re-create would open a gap)
            apps = [n for n, e, t, _ in rows if e == event and t == timing and not n.startswith(base)]
            follows = f" FOLLOWS {self.quote(apps[-1])}" if apps else ""
            if any(n == name for n, _, _, _ in rows):
                out.append(f"DROP TRIGGER IF EXISTS {self.quote(schema)}.{self.quote(name)}")
            out += [f"CREATE TRIGGER {self.quote(schema)}.{self.quote(name)} {timing} {event} ON"
                    f" {self.table(source, schema)} FOR EACH ROW{follows} {body}"]
        return out

    def drop_up_sql(self, source, schema, base, fill=False):
        return [f"DROP TRIGGER IF EXISTS {self.quote(schema)}.{self.quote(n)}" for n in self.trigger_names(base, fill)]

    TRIGGER_PRIVILEGE_FATAL = False

    #: ``'user'@'host'``, as information_schema's privilege tables spell a grantee
    GRANTEE = ("concat(char(39), substring_index(current_user(), '@', 1), char(39), '@', char(39),"
               " substring_index(current_user(), '@', -1), char(39))")

    def trigger_privilege_sql(self):
        g = self.GRANTEE
        return (
            f"SELECT EXISTS (SELECT 1 FROM information_schema.user_privileges WHERE grantee = {g}"
            " AND privilege_type IN ('TRIGGER', 'SUPER'))"
            f" OR EXISTS (SELECT 1 FROM information_schema.schema_privileges WHERE grantee = {g}"
            " AND table_schema = coalesce(%s, database()) AND privilege_type = 'TRIGGER')"
            f" OR EXISTS (SELECT 1 FROM information_schema.table_privileges WHERE grantee = {g}"
            " AND table_schema = coalesce(%s, database()) AND table_name = %s AND privilege_type = 'TRIGGER'),"
            " concat('TRIGGER privilege of ', current_user(), ' (roles are not read);"
            " log_bin_trust_function_creators=', @@GLOBAL.log_bin_trust_function_creators)"
        )

    def trigger_privilege_params(self, schema, table):
        return (schema, schema, table)
