"""Hook: an Airflow connection id -> an engine :class:`~zdt_backfill.db.Database`.

Connections come from PostgresHook (psycopg 3) or MySqlHook (mysqlclient), chosen by
the connection's ``conn_type``; the engine only sees a connection factory and a dialect.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from zdt_backfill.db import Database
from zdt_backfill.dialects import dialect_for
from zdt_backfill.errors import ConfigError

#: Connection extras this project reads itself (never passed to the driver):
#: ``zdt_environment`` marks a connection as ``staging`` for the rehearsal.
PROJECT_EXTRAS = ("zdt_environment",)

#: Airflow connection type -> (provider hook module, class, its connection-id argument).
PROVIDER_HOOKS: dict[str, tuple[str, str, str]] = {
    "postgres": ("airflow.providers.postgres.hooks.postgres", "PostgresHook", "postgres_conn_id"),
    "postgresql": ("airflow.providers.postgres.hooks.postgres", "PostgresHook", "postgres_conn_id"),
    "mysql": ("airflow.providers.mysql.hooks.mysql", "MySqlHook", "mysql_conn_id"),
    "mariadb": ("airflow.providers.mysql.hooks.mysql", "MySqlHook", "mysql_conn_id"),
}


class BackfillHook(BaseHook):
    """Opens the source/target database (or a replica) of a backfill.

    :param conn_id: an Airflow connection of type ``postgres`` or ``mysql``.
    :param schema: schema (PostgreSQL) / database (MySQL) of the tables, ``None`` for the connection's default.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "backfill_pg"
    conn_type = "postgres"
    hook_name = "Zero-downtime backfill"

    def __init__(self, conn_id: str = default_conn_name, schema: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.schema = schema

    def get_conn(self) -> Any:
        """A new DB-API connection (autocommit off)."""
        return self._sql_hook().get_conn()

    def _conn_type(self) -> str:
        conn_type = self.get_connection(self.conn_id).conn_type
        if conn_type not in PROVIDER_HOOKS:
            raise ConfigError(f"connection {self.conn_id!r} has type {conn_type!r}: use a postgres or mysql connection")
        return conn_type

    def _sql_hook(self) -> Any:
        import importlib

        module, cls, arg = PROVIDER_HOOKS[self._conn_type()]
        hook = getattr(importlib.import_module(module), cls)(**{arg: self.conn_id})
        if hasattr(hook, "ignored_extra_options"):  # PostgresHook passes other extras to psycopg
            hook.ignored_extra_options = set(hook.ignored_extra_options) | set(PROJECT_EXTRAS)
        return hook

    def get_database(self) -> Database:
        """The engine's view of this connection (through PostgresHook / MySqlHook; MySQL
        sessions are switched to ``utf8mb4``).

        :raises ConfigError: the connection is neither PostgreSQL nor MySQL/MariaDB.
        """
        conn_type = self._conn_type()
        hook = self._sql_hook()

        def connect() -> Any:
            conn = hook.get_conn()
            if hasattr(conn, "set_character_set"):  # mysqlclient; mysql-connector is utf8mb4 already
                conn.set_character_set("utf8mb4")
            return conn

        return Database(connect=connect, dialect=dialect_for(conn_type), schema=self.schema, name=self.conn_id)

    def get_probe_database(self, timeout_s: float) -> Database:
        """The same database reached with connect and read timeouts of ``timeout_s`` seconds,
        for replica probes: a hung replica must read as "lag unknown", never hang the run."""
        c = self.get_connection(self.conn_id)
        return Database.direct(self._conn_type(), c.host or "127.0.0.1", c.port, c.login or "", c.password or "", c.schema or "",
                               schema=self.schema, name=self.conn_id, timeout_s=timeout_s)
