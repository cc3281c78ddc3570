"""Routing flags: which schema the application reads and writes, and where the flag lives.

A :class:`FlagValue` is ``(path, percent)``: ``path`` is ``"legacy"`` or ``"new"``; ``percent``
(an integer, 0-100) is the share of reads the application routes to the new schema.
``LEGACY = ("legacy", 0)``, ``NEW = ("new", 100)``; a ramp step is ``("new", 1)``.

**What the application must read** (whatever the store): the flag's ``path`` *and*
``percent``. With ``path == "legacy"`` it reads the legacy schema only. With ``path == "new"``
it reads the new schema for ``percent`` % of reads and the legacy schema for the rest,
choosing per request with a *stable* bucket (for example ``hash(user_id) % 100 < percent``,
so one user does not flip between schemas from one request to the next). It should re-read
the flag at least every few seconds (a cache of at most ~5 s), because a rollback is only as
fast as the application's next read. An application that reads only ``path`` (the layout of
this package's earlier ``zdt_routing_flags`` table, which had no ``percent``) would send
*every* read to the new schema at the 1 % step: update it before using the ramp.

**Stores** (:class:`FlagStore`): :class:`TableFlagStore` (the ``zdt_routing_flags`` table in
the application database), :class:`HttpFlagStore` (an HTTP endpoint the application team
serves, contract in its docstring) and, in the Airflow layer,
``zdt_airflow.flagstores.VariableFlagStore`` (an Airflow Variable).

The ramp that moves the read flag is :mod:`zdt_backfill.routing.ramp`; the 5xx-rate signals it
watches are :mod:`zdt_backfill.signals.errorsignal`. Never imports Airflow; ``httpx`` is imported
only by the HTTP store.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable
from urllib.parse import quote as url_quote

from ..db import Database
from ..dialects.schema import FLAGS
from ..errors import ConfigError
from ..redact import mask_url, scrub

log = logging.getLogger(__name__)

#: The flag table, in the application database (schema of the :class:`~zdt_backfill.db.Database`).
PATHS = ("legacy", "new")
MAX_FLAG_LENGTH = 128
#: Lock wait and statement timeout of the fence check before a flag store outside the database (s).
FENCE_CHECK_TIMEOUT_SECONDS = 10.0


# ---------------------------------------------------------------------- flag values
class FlagStoreError(RuntimeError):
    """A flag store's client failed; the message is scrubbed of the store URL's secrets."""


@dataclass(frozen=True)
class FlagValue:
    """The value of a routing flag.

    :param path: ``"legacy"`` or ``"new"``.
    :param percent: share of reads routed to the new schema, an integer 0-100 (percent).
        ``"legacy"`` always has 0.
    :raises ValueError: an unknown path, a percent outside 0-100 or not an integer, or a
        ``"legacy"`` value with a percent other than 0.
    """

    path: str
    percent: int

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"routing path must be one of {PATHS}, got {self.path!r}")
        if isinstance(self.percent, bool) or not isinstance(self.percent, int) or not 0 <= self.percent <= 100:
            raise ValueError(f"routing percent must be an integer 0-100, got {self.percent!r}")
        if self.path == "legacy" and self.percent != 0:
            raise ValueError(f"a 'legacy' routing flag routes 0 % of reads to the new schema, not {self.percent}")

    def to_dict(self) -> dict[str, Any]:
        """``{"path": "new", "percent": 1}``."""
        return {"path": self.path, "percent": self.percent}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FlagValue":
        """Parse ``{"path": ..., "percent": ...}``; other keys (``run_id``...) are ignored.

        A missing ``percent`` means 100 for ``"new"`` and 0 for ``"legacy"`` (a store that
        only knows the path). Integral floats (``1.0``) are accepted.

        :raises ValueError: not a dict, no valid ``path``, or a bad ``percent``.
        """
        if not isinstance(d, dict) or "path" not in d:
            raise ValueError(f"a routing flag is a JSON object with a 'path', got {d!r}")
        path = d["path"]
        percent = d.get("percent")
        if percent is None:
            percent = 100 if path == "new" else 0
        if isinstance(percent, float) and percent.is_integer():
            percent = int(percent)
        return cls(path, percent)

    def __str__(self) -> str:
        return f"{self.path}@{self.percent}%"


LEGACY = FlagValue("legacy", 0)
NEW = FlagValue("new", 100)


def _check_flag(flag: object) -> str:
    if not isinstance(flag, str) or not flag or len(flag) > MAX_FLAG_LENGTH:
        raise ConfigError(
            f"a routing flag name is a non-empty string of at most {MAX_FLAG_LENGTH} characters, got {flag!r}"
        )
    return flag


# ---------------------------------------------------------------------- stores
@runtime_checkable
class FlagStore(Protocol):
    """Where a routing flag lives. Implementations: :class:`TableFlagStore`,
    :class:`HttpFlagStore`, ``zdt_airflow.flagstores.VariableFlagStore``.

    ``get`` returns ``None`` when the flag was never set; ``set`` overwrites it (and records
    the run that set it). Both raise on a store that cannot be reached: a flag store that
    silently fails is worse than a failed task.
    """

    name: str

    def get(self, flag: str) -> FlagValue | None: ...

    def set(self, flag: str, value: FlagValue, run_id: str) -> None: ...


class TableFlagStore:
    """Flags in ``zdt_routing_flags``, a table of the application database.

    Layout (created by the first :meth:`set`, ``CREATE TABLE IF NOT EXISTS``)::

        flag       varchar(128) PRIMARY KEY
        value      varchar(64)  NOT NULL        -- "legacy" | "new"  (FlagValue.path)
        percent    int          NOT NULL DEFAULT 0  -- share of reads on the new schema, 0-100
        run_id     varchar(250)                 -- the run that set it
        updated_at timestamptz / timestamp(6) NULL

    The application reads it with ``SELECT value, percent FROM zdt_routing_flags WHERE flag = ?``.
    A table of the earlier layout (no ``percent``) gets the column on the first :meth:`set`
    (``ALTER TABLE ... ADD COLUMN``, an instant change on PostgreSQL 11+ and MariaDB 10.3+,
    run with a bounded lock wait and retried), and rows already ``new`` get 100.

    :param db: the application database (its ``schema`` holds the table).
    :param timeout_seconds: lock and statement timeout of the upsert session (s).
    """

    def __init__(self, db: Database, timeout_seconds: float = 10.0) -> None:
        self.db = db
        self.timeout_seconds = timeout_seconds
        d = db.dialect
        self.table = d.table(FLAGS, db.schema)
        self.name = f"table {db.name}/{FLAGS}"
        self._cols = {c: d.quote(c) for c in ("flag", "value", "percent", "run_id", "updated_at")}

    def _columns(self, conn: Any) -> set[str]:
        rows = self.db.query(conn, self.db.dialect.columns_sql(), (self.db.schema, FLAGS))
        return {str(r[0]).lower() for r in rows}

    def get(self, flag: str) -> FlagValue | None:
        """The flag's value; ``None`` when the table or the row is absent.

        :raises ValueError: the stored value is not a valid :class:`FlagValue`.
        :raises Exception: the database driver's errors (unreachable, permission denied).
        """
        _check_flag(flag)
        c = self._cols
        with self.db.session() as conn:
            cols = self._columns(conn)
            if not cols:
                return None
            pct = c["percent"] if "percent" in cols else "NULL"
            rows = self.db.query(conn, f"SELECT {c['value']}, {pct} FROM {self.table} WHERE {c['flag']} = %s", (flag,))
        if not rows:
            return None
        value, percent = rows[0]
        return FlagValue.from_dict({"path": value, "percent": None if percent is None else int(percent)})

    def set(self, flag: str, value: FlagValue, run_id: str, fence: Callable[[Any], None] | None = None) -> None:
        """Upsert the flag in one transaction (creating the table first if absent).

        Transient errors (lock wait, deadlock, lost connection) are retried a few times.

        :param fence: a run's fence (:meth:`~zdt_backfill.state.runstate.RunHandle.fencer`), taken
            in the upsert's transaction: the flag changes only while the run holds its lock.
        :raises RunStoppedError: the fence did not hold (the flag is unchanged).
        :raises Exception: the database driver's last error.
        """
        _check_flag(flag)
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        self._ensure_table(run_id)
        d = self.db.dialect
        sql = d.upsert_values_sql(FLAGS, list(self._cols), ["flag"], ["%s", "%s", "%s", "%s", d.now], self.db.schema)

        def attempt() -> None:
            with self.db.session(tag=f"zdt_routing {run_id}"[:200], lock_timeout_s=self.timeout_seconds,
                                 statement_timeout_s=self.timeout_seconds) as conn:
                if fence:
                    fence(conn)
                self.db.execute(conn, sql, (flag, value.path, value.percent, run_id))
                conn.commit()

        Retrying(retry=retry_if_exception(self.db.is_transient), wait=wait_exponential_jitter(initial=0.2, max=2),
                 stop=stop_after_attempt(5), reraise=True)(attempt)

    def _ensure_table(self, run_id: str) -> None:
        with self.db.session() as conn:
            cols = self._columns(conn)
        c, d = self._cols, self.db.dialect
        if not cols:
            self.db.run_ddl([(d.control_table_sql(FLAGS, self.db.schema), ())], tag=f"zdt_routing {run_id}"[:200])
        elif "percent" not in cols:
            log.warning("%s has no percent column (an earlier layout): adding it", self.table)
            self.db.run_ddl(
                [(d.add_column_sql(FLAGS, "percent", d.added_columns(FLAGS)["percent"], self.db.schema), ())],
                tag=f"zdt_routing {run_id}"[:200],
            )
            with self.db.session() as conn:
                self.db.execute(conn, f"UPDATE {self.table} SET {c['percent']} = 100 WHERE {c['value']} = 'new'")
                conn.commit()


class FencedFlagStore:
    """A flag store whose moves toward the new schema happen only while a run holds its lock.

    A set whose value is ``new`` (a ramp step, 100 %, the write flip) is fenced: in the upsert's
    own transaction when the store is the ``zdt_routing_flags`` table of the run's database (the
    flag commits under the run's row lock), and otherwise (HTTP, an Airflow Variable, another
    database) by a check right before the call, which is the most a store outside the database
    allows. A set back to ``legacy`` is never fenced: it is the safe direction before the write
    flip (the ramp's restore must not fail because the run lost its lock), and after the flip the
    steps that would do it refuse on their own (:data:`~zdt_backfill.state.runstate.POST_FLIP`).

    :param store: the run's flag store.
    :param fence: the run's fence bound to the states of the step that flips.
    :param db: the run's database (where the fence's row lives).
    """

    def __init__(self, store: FlagStore, fence: Callable[[Any], None], db: Database) -> None:
        self.store = store
        self.fence = fence
        self.db = db
        self.name = store.name

    def get(self, flag: str) -> FlagValue | None:
        return self.store.get(flag)

    def set(self, flag: str, value: FlagValue, run_id: str) -> None:
        """:raises RunStoppedError: a move toward ``new`` while the run no longer holds its lock."""
        if value.path != "new":
            self.store.set(flag, value, run_id)
        elif isinstance(self.store, TableFlagStore) and self.store.db is self.db:
            self.store.set(flag, value, run_id, fence=self.fence)
        else:
            with self.db.session(f"zdt_routing {run_id}"[:200], FENCE_CHECK_TIMEOUT_SECONDS,
                                 FENCE_CHECK_TIMEOUT_SECONDS) as conn:
                self.fence(conn)
                conn.rollback()
            self.store.set(flag, value, run_id)


class HttpFlagStore:
    """Flags behind an HTTP endpoint served by the application team (a feature-flag service).

    The contract, for a base ``url`` and a flag name ``F`` (URL-encoded into the path):

    - ``GET {url}/F`` answers ``200`` with ``{"path": "legacy" | "new", "percent": 0-100}``
      (other keys are ignored), or ``404`` when the flag was never set (:meth:`get` returns
      ``None``). Any other status is an error.
    - ``PUT {url}/F`` with the JSON body ``{"path": "new", "percent": 1, "run_id": "..."}`` and
      ``Content-Type: application/json`` stores the flag and answers any ``2xx``; the service
      must apply it to the application's reads from then on (every instance, within seconds).
      Any other status is an error.

    ``headers`` are sent with every request (an ``Authorization`` header, for example).

    :param url: base URL, ``http://`` or ``https://``.
    :param timeout_seconds: connect/read timeout of each request (s).
    :raises ConfigError: (constructor) a URL that is not http(s).
    :raises httpx.HTTPError: (``get``/``set``) a transport error or an unexpected status.
    :raises ValueError: (``get``) a body that is not a valid flag.
    """

    def __init__(self, url: str, timeout_seconds: float = 5.0, headers: dict[str, str] | None = None) -> None:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"flag store URL must be http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.headers = dict(headers or {})
        self.name = f"http {mask_url(self.url)}"  # logged and recorded: never the URL's secrets

    def _flag_url(self, flag: str) -> str:
        return f"{self.url}/{url_quote(_check_flag(flag), safe='')}"

    def get(self, flag: str) -> FlagValue | None:
        import httpx

        with self._scrubbed():
            r = httpx.get(self._flag_url(flag), headers=self.headers, timeout=self.timeout_seconds)
            if r.status_code == 404:
                return None
            r.raise_for_status()
            return FlagValue.from_dict(r.json())

    def set(self, flag: str, value: FlagValue, run_id: str) -> None:
        import httpx

        with self._scrubbed():
            r = httpx.put(self._flag_url(flag), json={**value.to_dict(), "run_id": run_id}, headers=self.headers,
                          timeout=self.timeout_seconds)
            r.raise_for_status()

    @contextlib.contextmanager
    def _scrubbed(self) -> Iterator[None]:
        """Re-raise a client error without the URL's secrets (httpx quotes the URL)."""
        try:
            yield
        except Exception as exc:
            text = scrub(str(exc), [self.url])
            if text == str(exc):
                raise
            raise FlagStoreError(f"{type(exc).__name__}: {text}") from None


def flag_store_from_config(kind: str, db: Database | None = None, url: str | None = None) -> FlagStore:
    """Build the engine's flag stores: ``"table"`` (needs ``db``) or ``"http"`` (needs ``url``).

    The ``"variable"`` kind lives in the Airflow layer (``zdt_airflow.flagstores.flag_store_for``).

    :raises ConfigError: an unknown kind, or the kind's argument missing.
    """
    if kind == "table":
        if db is None:
            raise ConfigError("flag store 'table' needs the application database")
        return TableFlagStore(db)
    if kind == "http":
        if not url:
            raise ConfigError("flag store 'http' needs a URL")
        return HttpFlagStore(url)
    raise ConfigError(f"unknown flag store {kind!r}: expected 'table' or 'http' ('variable' in the Airflow layer)")


