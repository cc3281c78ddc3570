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
        """The engine's view of this connection.

        :raises ConfigError: the connection is neither PostgreSQL nor MySQL/MariaDB.
        """
        hook = self._sql_hook()
        engine = "postgres" if hook.conn_name_attr == "postgres_conn_id" else "mysql"
        return Database(connect=hook.get_conn, dialect=dialect_for(engine), schema=self.schema, name=self.conn_id)
