"""Routing flags and the seed's 1 % ramp: which schema the application reads, and how it gets there.

The seed's last validation step (``optimizing-backfill-scripts``) is the rule this module
implements: *"Feature flag routing: Enable new schema version at 1% traffic. Monitor error
rates ... Roll back flag immediately if 5xx rate exceeds 0.1%."* That is progressive
delivery with a feature flag (a canary): expose a small share of reads to the new schema,
watch a health signal for a window, then either go to 100 % or flip back.

**The flag.** A :class:`FlagValue` is ``(path, percent)``:

- ``path`` is ``"legacy"`` or ``"new"``;
- ``percent`` (an integer, 0-100) is the share of reads the application routes to the new
  schema. ``LEGACY = ("legacy", 0)``, ``NEW = ("new", 100)``; a ramp step is ``("new", 1)``.

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

**Signals** (:class:`ErrorSignal`): the 5xx rate in percent (0-100) of the application's
requests, read from a SQL query (:class:`SqlErrorSignal`) or an HTTP JSON endpoint
(:class:`HttpErrorSignal`). A reading that fails for any reason is ``nan``, and :func:`ramp`
treats ``nan`` as failing: an unreadable signal never passes for a healthy one.

**The ramp** (:func:`ramp`): flag to ``("new", ramp_percent)``; read the signal every
``poll_seconds`` for ``watch_seconds``; any reading above ``max_error_rate_pct`` (default
0.1, the seed's) or unreadable flips the flag back to ``LEGACY`` at once and the result is
``ok=False`` (the caller holds the run); otherwise the flag goes to ``NEW`` (100 %).

Units: percentages are percent (``0.1`` means 0.1 %, not 10 %), durations are seconds.
This module never imports Airflow; ``httpx`` is imported only by the HTTP classes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Protocol, runtime_checkable
from urllib.parse import quote as url_quote

from .db import Database
from .errors import ConfigError

log = logging.getLogger(__name__)

#: The flag table, in the application database (schema of the :class:`~.db.Database`).
FLAGS = "zdt_routing_flags"
PATHS = ("legacy", "new")
MAX_FLAG_LENGTH = 128

#: The seed's thresholds: enable at 1 % of traffic, roll back above 0.1 % 5xx.
DEFAULT_RAMP_PERCENT = 1
DEFAULT_MAX_ERROR_RATE_PCT = 0.1


# ---------------------------------------------------------------------- flag values
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

    def set(self, flag: str, value: FlagValue, run_id: str) -> None:
        """Upsert the flag in one transaction (creating the table first if absent).

        Transient errors (lock wait, deadlock, lost connection) are retried a few times.

        :raises Exception: the database driver's last error.
        """
        _check_flag(flag)
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        self._ensure_table(run_id)
        d, c = self.db.dialect, self._cols
        names = ", ".join(c.values())
        if d.name == "postgres":
            updates = ", ".join(f"{c[k]} = EXCLUDED.{c[k]}" for k in ("value", "percent", "run_id", "updated_at"))
            upsert = f" ON CONFLICT ({c['flag']}) DO UPDATE SET {updates}"
        else:
            updates = ", ".join(f"{c[k]} = VALUES({c[k]})" for k in ("value", "percent", "run_id", "updated_at"))
            upsert = f" ON DUPLICATE KEY UPDATE {updates}"
        sql = f"INSERT INTO {self.table} ({names}) VALUES (%s, %s, %s, %s, {d.now}){upsert}"

        def attempt() -> None:
            with self.db.session(tag=f"zdt_routing {run_id}"[:200], lock_timeout_s=self.timeout_seconds,
                                 statement_timeout_s=self.timeout_seconds) as conn:
                self.db.execute(conn, sql, (flag, value.path, value.percent, run_id))
                conn.commit()

        Retrying(retry=retry_if_exception(self.db.is_transient), wait=wait_exponential_jitter(initial=0.2, max=2),
                 stop=stop_after_attempt(5), reraise=True)(attempt)

    def _ensure_table(self, run_id: str) -> None:
        with self.db.session() as conn:
            cols = self._columns(conn)
        c = self._cols
        if not cols:
            self.db.run_ddl(
                [(f"CREATE TABLE IF NOT EXISTS {self.table} ({c['flag']} varchar(128) PRIMARY KEY,"
                  f" {c['value']} varchar(64) NOT NULL, {c['percent']} int NOT NULL DEFAULT 0,"
                  f" {c['run_id']} varchar(250), {c['updated_at']} {self.db.dialect.timestamp_type} NULL)", ())],
                tag=f"zdt_routing {run_id}"[:200],
            )
        elif "percent" not in cols:
            log.warning("%s has no percent column (an earlier layout): adding it", self.table)
            self.db.run_ddl(
                [(f"ALTER TABLE {self.table} ADD COLUMN {c['percent']} int NOT NULL DEFAULT 0", ())],
                tag=f"zdt_routing {run_id}"[:200],
            )
            with self.db.session() as conn:
                self.db.execute(conn, f"UPDATE {self.table} SET {c['percent']} = 100 WHERE {c['value']} = 'new'")
                conn.commit()


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
        self.name = f"http {self.url}"

    def _flag_url(self, flag: str) -> str:
        return f"{self.url}/{url_quote(_check_flag(flag), safe='')}"

    def get(self, flag: str) -> FlagValue | None:
        import httpx

        r = httpx.get(self._flag_url(flag), headers=self.headers, timeout=self.timeout_seconds)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return FlagValue.from_dict(r.json())

    def set(self, flag: str, value: FlagValue, run_id: str) -> None:
        import httpx

        r = httpx.put(self._flag_url(flag), json={**value.to_dict(), "run_id": run_id}, headers=self.headers,
                      timeout=self.timeout_seconds)
        r.raise_for_status()


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


# ---------------------------------------------------------------------- error signals
@runtime_checkable
class ErrorSignal(Protocol):
    """A health signal: the percent (0-100) of the application's requests failing with 5xx.

    ``read`` must not raise: a reading it cannot take is ``float("nan")``, which
    :func:`ramp` treats as failing. (:func:`ramp` also turns an exception into ``nan``.)
    """

    name: str

    def read(self) -> float: ...


def _number(value: Any) -> float:
    """``value`` as a float if it is a number (not a bool, not a string), else nan."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return math.nan
    return float(value)


class SqlErrorSignal:
    """The 5xx rate from a SQL query the user writes, returning one row with one number:
    the rate in percent (``0.1`` = 0.1 %), for example over a stats table
    ``SELECT 100.0 * sum(errors_5xx) / nullif(sum(total), 0) FROM app_http_stats WHERE ...``.

    The query runs read-only (``SET TRANSACTION READ ONLY`` / ``START TRANSACTION READ ONLY``)
    in a session that is rolled back, with a statement timeout. It takes no parameters; a
    literal ``%`` is fine (it is escaped for the driver). NULL (no traffic, with ``nullif``),
    no row, several rows or columns, a non-number, or an error reads as ``nan`` (failing):
    write ``coalesce(..., 0)`` if no traffic should count as healthy.

    :param db: the database the query runs on (often the application's, or a metrics DB).
    :param query: one statement, no ``;``.
    :param timeout_seconds: statement timeout (s).
    :raises ConfigError: (constructor) an empty query or one containing ``;``.
    """

    def __init__(self, db: Database, query: str, timeout_seconds: float = 5.0, name: str | None = None) -> None:
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("the error-rate query must be a non-empty SQL string")
        if ";" in query:
            raise ConfigError("the error-rate query must be a single statement without ';'")
        self.db = db
        self.query = query.strip()
        self.timeout_seconds = timeout_seconds
        self.name = name or f"sql on {db.name}"

    def read(self) -> float:
        begin = "SET TRANSACTION READ ONLY" if self.db.dialect.name == "postgres" else "START TRANSACTION READ ONLY"
        try:
            with self.db.session(tag="zdt_routing error signal", lock_timeout_s=self.timeout_seconds,
                                 statement_timeout_s=self.timeout_seconds) as conn:
                self.db.execute(conn, begin)
                rows = self.db.query(conn, self.query.replace("%", "%%"))
                conn.rollback()
        except Exception as exc:
            log.warning("error signal %s unreadable: %s", self.name, exc)
            return math.nan
        if len(rows) != 1 or len(rows[0]) != 1:
            log.warning("error signal %s: the query must return one row with one number, got %r", self.name, rows[:3])
            return math.nan
        value = _number(rows[0][0])
        if math.isnan(value):
            log.warning("error signal %s: not a number: %r", self.name, rows[0][0])
        return value


class HttpErrorSignal:
    """The 5xx rate from an HTTP JSON endpoint: ``GET url`` answers ``200`` with a JSON object
    whose ``json_key`` holds the rate in percent, e.g. ``{"error_rate_pct": 0.02}``.

    Any other status, a transport error, a body that is not a JSON object, a missing key,
    ``null`` or a non-number reads as ``nan`` (failing).

    :param url: the endpoint (``http://`` or ``https://``).
    :param json_key: the top-level key holding the rate.
    :param timeout_seconds: request timeout (s).
    :raises ConfigError: (constructor) a URL that is not http(s).
    """

    def __init__(self, url: str, json_key: str = "error_rate_pct", timeout_seconds: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"error signal URL must be http:// or https://, got {url!r}")
        self.url = url
        self.json_key = json_key
        self.timeout_seconds = timeout_seconds
        self.headers = dict(headers or {})
        self.name = f"http {url}#{json_key}"

    def read(self) -> float:
        try:
            import httpx

            r = httpx.get(self.url, headers=self.headers, timeout=self.timeout_seconds)
            r.raise_for_status()
            body = r.json()
        except Exception as exc:
            log.warning("error signal %s unreadable: %s", self.name, exc)
            return math.nan
        raw = body.get(self.json_key) if isinstance(body, dict) else None
        value = _number(raw)
        if math.isnan(value):
            log.warning("error signal %s: %r is not a number in %s", self.name, self.json_key, json.dumps(body)[:200])
        return value


# ---------------------------------------------------------------------- the ramp
@dataclass
class RampResult:
    """What :func:`ramp` did.

    :ivar ok: the flag ended at ``NEW`` (100 %).
    :ivar reason: why, in words (``"5xx rate 0.5% > 0.1% at 1% of reads"``).
    :ivar readings: ``(seconds since the ramp step, 5xx rate in percent)``; ``nan`` = unreadable.
    :ivar final: the flag's value at the end (``NEW`` or ``LEGACY``).
    :ivar changes: every flag change made, ``{"from": ..., "to": ..., "at": seconds}``.
    """

    ok: bool
    reason: str
    readings: list[tuple[float, float]] = field(default_factory=list)
    final: FlagValue = LEGACY
    flag: str = ""
    store: str = ""
    signal: str | None = None
    ramp_percent: int = DEFAULT_RAMP_PERCENT
    max_error_rate_pct: float = DEFAULT_MAX_ERROR_RATE_PCT
    watch_seconds: float = 0.0
    changes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: readings as ``[[seconds_since_start, pct], ...]`` (``pct`` is ``None``
        for an unreadable reading, JSON has no NaN), ``final`` as ``{"path", "percent"}``."""
        return {
            "ok": self.ok, "reason": self.reason,
            "readings": [[round(t, 3), None if math.isnan(p) else p] for t, p in self.readings],
            "final": self.final.to_dict(), "flag": self.flag, "store": self.store, "signal": self.signal,
            "ramp_percent": self.ramp_percent, "max_error_rate_pct": self.max_error_rate_pct,
            "watch_seconds": self.watch_seconds, "changes": list(self.changes),
        }


def _fmt(x: float) -> str:
    return f"{x:g}"


def ramp(
    store: FlagStore,
    flag: str,
    run_id: str,
    signal: ErrorSignal | None,
    *,
    ramp_percent: int = DEFAULT_RAMP_PERCENT,
    watch_seconds: float = 600.0,
    max_error_rate_pct: float = DEFAULT_MAX_ERROR_RATE_PCT,
    poll_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: logging.Logger = log,
) -> RampResult:
    """The seed's ramp: ``ramp_percent`` % of reads on the new schema, watched, then 100 % or back.

    1. Set the flag to ``FlagValue("new", ramp_percent)``.
    2. Read ``signal`` at once and then every ``poll_seconds`` until ``watch_seconds`` have
       passed (the last reading is taken at the end of the window; with ``watch_seconds == 0``
       exactly one reading is taken).
    3. The first reading above ``max_error_rate_pct`` (percent, ``0.1`` = 0.1 %) or unreadable
       (``nan``, an exception from ``read``, a negative number) sets the flag back to
       ``LEGACY`` immediately and returns ``ok=False``: the caller holds the run.
    4. Otherwise the flag goes to ``NEW`` (100 %) and the result is ``ok=True``.

    **Unwatched ramp.** With ``signal=None`` nothing is measured: a warning is logged, the
    ramp step is held for ``watch_seconds`` (which still gives a human watching dashboards a
    window to act) and the flag then goes to 100 % with ``ok=True`` and a reason saying it
    was unwatched.

    **Interrupted watch.** If anything else raises during the watch (the task is killed or
    times out, ``sleep`` raises), the flag is set back to ``LEGACY`` before the exception
    propagates: a watch that did not finish proved nothing.

    Every flag change is logged before it is made, with the old and the new value.
    ``clock``/``sleep`` are injectable for tests (``clock`` returns seconds).

    :raises ConfigError: ``ramp_percent`` not an integer 1-100, ``watch_seconds`` < 0,
        ``poll_seconds`` <= 0 or ``max_error_rate_pct`` outside 0-100.
    :raises Exception: the store's error when a flag cannot be set (the first step, the
        rollback or the final 100 %); a failed rollback is logged as an error first. When the
        ramp step itself fails, the previous value (``LEGACY`` if none) is set again, best
        effort, before the error propagates (the store may have applied the step anyway).
    """
    _check_flag(flag)
    if isinstance(ramp_percent, bool) or not isinstance(ramp_percent, int) or not 1 <= ramp_percent <= 100:
        raise ConfigError(f"ramp_percent must be an integer 1-100, got {ramp_percent!r}")
    if not watch_seconds >= 0:
        raise ConfigError(f"watch_seconds must be >= 0, got {watch_seconds!r}")
    if not poll_seconds > 0:
        raise ConfigError(f"poll_seconds must be > 0, got {poll_seconds!r}")
    if not 0 <= max_error_rate_pct <= 100:
        raise ConfigError(f"max_error_rate_pct must be a percent 0-100, got {max_error_rate_pct!r}")

    step = FlagValue("new", ramp_percent)
    result = RampResult(
        ok=False, reason="", final=LEGACY, flag=flag, store=getattr(store, "name", type(store).__name__),
        signal=getattr(signal, "name", type(signal).__name__) if signal is not None else None,
        ramp_percent=ramp_percent, max_error_rate_pct=max_error_rate_pct, watch_seconds=watch_seconds,
    )
    start = clock()
    current: FlagValue | None = None

    def change(to: FlagValue, why: str) -> None:
        nonlocal current
        log.info("routing flag %s (%s): %s -> %s (%s)", flag, result.store, current, to, why)
        store.set(flag, to, run_id)
        result.changes.append({"from": None if current is None else current.to_dict(), "to": to.to_dict(),
                               "at": round(clock() - start, 3), "why": why})
        current = to

    current = before = store.get(flag)
    try:
        change(step, f"ramp step: {ramp_percent}% of reads on the new schema")
    except BaseException as exc:
        # The store may have applied it anyway (an HTTP timeout after the write): restore, best effort.
        restore = before or LEGACY
        log.error("routing flag %s: setting the ramp step failed (%r): restoring %s", flag, exc, restore)
        try:
            store.set(flag, restore, run_id)
        except Exception:
            log.exception("routing flag %s: restoring %s FAILED; the flag may be %s", flag, restore, step)
        raise
    at = f"at {ramp_percent}% of reads"
    worst = math.nan
    try:
        if signal is None:
            log.warning(
                "routing flag %s: ramp is UNWATCHED (no error signal): holding %s for %ss, then 100%% regardless",
                flag, step, _fmt(watch_seconds),
            )
            while (left := watch_seconds - (clock() - start)) > 0:
                sleep(min(poll_seconds, left))
        else:
            while True:
                t = clock() - start
                pct = _read(signal, log)
                result.readings.append((t, pct))
                if math.isnan(pct):
                    result.reason = f"5xx rate unreadable from {result.signal} {at}: treated as failing"
                    break
                if pct > max_error_rate_pct:
                    result.reason = f"5xx rate {_fmt(pct)}% > {_fmt(max_error_rate_pct)}% {at}"
                    break
                worst = pct if math.isnan(worst) else max(worst, pct)
                left = watch_seconds - (clock() - start)
                if left <= 0:
                    break
                sleep(min(poll_seconds, left))
    except BaseException as exc:
        log.error("routing flag %s: ramp watch interrupted (%r): rolling back to legacy", flag, exc)
        try:
            change(LEGACY, f"ramp watch interrupted: {exc!r}")
        except Exception:
            log.exception("routing flag %s: rollback to legacy FAILED; the flag may still be %s", flag, current)
        raise

    if result.reason:  # a failing or unreadable reading: back to legacy at once (the seed's rule)
        log.error("routing flag %s: %s: rolling back to legacy", flag, result.reason)
        try:
            change(LEGACY, result.reason)
        except Exception:
            log.exception("routing flag %s: rollback to legacy FAILED; the flag may still be %s", flag, current)
            raise
        result.final = LEGACY
        return result

    if signal is None:
        reason = f"unwatched ramp (no error signal): {at} for {_fmt(watch_seconds)}s, then 100%"
    else:
        reason = (f"5xx rate at most {_fmt(worst)}% <= {_fmt(max_error_rate_pct)}% over {_fmt(watch_seconds)}s"
                  f" {at} ({len(result.readings)} readings)")
    if current != NEW:
        change(NEW, reason)
    result.ok, result.reason, result.final = True, reason, NEW
    return result


def _read(signal: ErrorSignal, logger: logging.Logger) -> float:
    """One reading; any failure (exception, non-number, negative) is nan."""
    try:
        value = _number(signal.read())
    except Exception as exc:
        logger.warning("error signal %s raised: %r", getattr(signal, "name", signal), exc)
        return math.nan
    if value < 0:
        logger.warning("error signal %s returned a negative rate %s", getattr(signal, "name", signal), value)
        return math.nan
    return value


__all__ = [
    "FLAGS", "LEGACY", "NEW", "ErrorSignal", "FlagStore", "FlagValue", "HttpErrorSignal", "HttpFlagStore",
    "RampResult", "SqlErrorSignal", "TableFlagStore", "flag_store_from_config", "ramp",
]
