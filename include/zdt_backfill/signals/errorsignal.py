"""Error-rate signals: the 5xx rate the read ramp watches (:func:`zdt_backfill.routing.ramp.ramp`).

An :class:`ErrorSignal` gives the percent (0-100) of the application's requests failing with
5xx, read from a SQL query (:class:`SqlErrorSignal`) or an HTTP JSON endpoint
(:class:`HttpErrorSignal`). A reading that fails for any reason is ``nan``, and the ramp treats
``nan`` as failing: an unreadable signal never passes for a healthy one.

Units: percentages are percent (``0.1`` means 0.1 %, not 10 %), durations are seconds.
"""

from __future__ import annotations

import json
import logging
import math
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from ..db import Database
from ..errors import ConfigError
from ..expressions import check_query
from ..fields import default_of
from ..redact import mask_url, scrub

log = logging.getLogger(__name__)


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
    :raises ConfigError: (constructor) an empty query, or one that is not one read-only
        ``SELECT`` (:func:`~zdt_backfill.expressions.query_problems`).
    """

    def __init__(self, db: Database, query: str, timeout_seconds: float = 5.0, name: str | None = None) -> None:
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("the error-rate query must be a non-empty SQL string")
        check_query(query, "error_signal_sql", db.dialect.name)
        self.db = db
        self.query = query.strip()
        self.timeout_seconds = timeout_seconds
        self.name = name or f"sql on {db.name}"

    def read(self) -> float:
        begin = self.db.dialect.read_only_begin_sql()
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

    def __init__(self, url: str, json_key: str = default_of("error_signal_json_key"), timeout_seconds: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"error signal URL must be http:// or https://, got {url!r}")
        self.url = url
        self.json_key = json_key
        self.timeout_seconds = timeout_seconds
        self.headers = dict(headers or {})
        self.name = f"http {mask_url(url)}#{json_key}"  # logged and recorded: never the URL's secrets

    def read(self) -> float:
        try:
            import httpx

            r = httpx.get(self.url, headers=self.headers, timeout=self.timeout_seconds)
            r.raise_for_status()
            body = r.json()
        except Exception as exc:
            log.warning("error signal %s unreadable: %s", self.name, scrub(str(exc), [self.url]))
            return math.nan
        raw = body.get(self.json_key) if isinstance(body, dict) else None
        value = _number(raw)
        if math.isnan(value):
            log.warning("error signal %s: %r is not a number in %s", self.name, self.json_key, json.dumps(body)[:200])
        return value


