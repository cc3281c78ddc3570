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

POSTGRES_TYPES = ("postgres", "postgresql")
MYSQL_TYPES = ("mysql", "mariadb")


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

    def _sql_hook(self) -> Any:
        conn_type = self.get_connection(self.conn_id).conn_type
        if conn_type in POSTGRES_TYPES:
            from airflow.providers.postgres.hooks.postgres import PostgresHook

            return PostgresHook(postgres_conn_id=self.conn_id)
        if conn_type in MYSQL_TYPES:
            from airflow.providers.mysql.hooks.mysql import MySqlHook

            return MySqlHook(mysql_conn_id=self.conn_id)
        raise ConfigError(f"connection {self.conn_id!r} has type {conn_type!r}: use a postgres or mysql connection")

    def get_database(self) -> Database:
        """The engine's view of this connection (through PostgresHook / MySqlHook; MySQL
        sessions are switched to ``utf8mb4``).

        :raises ConfigError: the connection is neither PostgreSQL nor MySQL/MariaDB.
        """
        hook = self._sql_hook()
        engine = "postgres" if hook.conn_name_attr == "postgres_conn_id" else "mysql"
        connect = hook.get_conn
        if engine == "mysql":

            def connect() -> Any:
                conn = hook.get_conn()
                if hasattr(conn, "set_character_set"):  # mysqlclient; mysql-connector is utf8mb4 already
                    conn.set_character_set("utf8mb4")
                return conn

        return Database(connect=connect, dialect=dialect_for(engine), schema=self.schema, name=self.conn_id)

    def get_probe_database(self, timeout_s: float) -> Database:
        """The same database reached with connect and read timeouts of ``timeout_s`` seconds,
        for replica probes: a hung replica must read as "lag unknown", never hang the run."""
        c = self.get_connection(self.conn_id)
        engine = "postgres" if c.conn_type in POSTGRES_TYPES else "mysql" if c.conn_type in MYSQL_TYPES else None
        if engine is None:
            raise ConfigError(f"connection {self.conn_id!r} has type {c.conn_type!r}: use a postgres or mysql connection")
        return Database.direct(engine, c.host or "127.0.0.1", c.port, c.login or "", c.password or "", c.schema or "",
                               schema=self.schema, name=self.conn_id, timeout_s=timeout_s)
