"""Hook: an Airflow connection id -> an engine :class:`~zdt_backfill.db.Database`.

Connections come from PostgresHook (psycopg 3) or MySqlHook (mysqlclient), chosen by
the connection's ``conn_type``; the engine only sees a connection factory and a dialect.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote as url_quote

from airflow.sdk import BaseHook

from zdt_backfill.config import RunConfig
from zdt_backfill.db import Database
from zdt_backfill.dialects import dialect_for
from zdt_backfill.errors import ConfigError
from zdt_backfill.redact import secrets_in

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


def with_connections(config: RunConfig) -> RunConfig:
    """The run's config with the URLs of its Airflow connections filled in: ``flag_store_conn_id``
    and ``error_signal_conn_id`` (HTTP connections: scheme from the connection's schema field,
    ``http`` by default; host, port, login / password as basic auth; extra ``endpoint`` as the
    path) and ``cache_conn_id`` (a Redis connection: host, port, password, extra ``db`` and
    ``ssl``). Every secret of every URL the run uses is registered with Airflow's secrets
    masker, so a task log never shows it; the stored config and the report mask them too
    (:func:`zdt_backfill.redact.mask_url`).

    :raises ConfigError: a named connection does not exist.
    """
    import dataclasses

    from airflow.sdk.log import mask_secret

    changes: dict[str, str] = {}
    for field, url_field, build in (("flag_store_conn_id", "flag_store_url", _http_url),
                                    ("error_signal_conn_id", "error_signal_url", _http_url),
                                    ("cache_conn_id", "cache_redis_url", _redis_url)):
        conn_id = getattr(config, field)
        if conn_id:
            try:
                conn = BaseHook.get_connection(conn_id)
            except Exception as exc:
                raise ConfigError(f"{field} {conn_id!r}: no such Airflow connection ({type(exc).__name__})") from None
            changes[url_field] = build(conn)
            if conn.password:
                mask_secret(conn.password)
    resolved = dataclasses.replace(config, **changes) if changes else config
    for url in (resolved.flag_store_url, resolved.error_signal_url, resolved.cache_redis_url):
        for secret in secrets_in(url):
            mask_secret(secret)
    return resolved


def _userinfo(conn: Any) -> str:
    if not (conn.login or conn.password):
        return ""
    return f"{url_quote(conn.login or '', safe='')}:{url_quote(conn.password or '', safe='')}@"


def _http_url(conn: Any) -> str:
    host = (conn.host or "").rstrip("/")
    if "://" in host:
        scheme, host = host.split("://", 1)
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
    port = f":{conn.port}" if conn.port else ""
    endpoint = str((conn.extra_dejson or {}).get("endpoint") or "").strip("/")
    return f"{scheme}://{_userinfo(conn)}{host}{port}" + (f"/{endpoint}" if endpoint else "")


def _redis_url(conn: Any) -> str:
    extra = conn.extra_dejson or {}
    scheme = "rediss" if extra.get("ssl") else "redis"
    return f"{scheme}://{_userinfo(conn)}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{int(extra.get('db') or 0)}"
