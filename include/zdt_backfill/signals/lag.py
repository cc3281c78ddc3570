"""Replica lag probes.

A probe measures one replica's lag in seconds. The signal to trust is the heartbeat
(:mod:`zdt_backfill.signals.heartbeat`): ``now() - ts`` of the row the primary rewrites every 250 ms, read on
the replica, so a disconnected WAL receiver, a stopped SQL thread or a slow network all
show as growing lag (gh-ost, pt-heartbeat). The engines' own replay status is a second
signal (PostgreSQL: time since the last replayed transaction while replay is behind;
MySQL/MariaDB: ``Seconds_Behind_Master``); the larger of the two counts.

Nothing reads as zero by accident: an unreachable replica, a query that fails or times out,
a stopped replication thread, or a replica that has replayed nothing yet reads as ``None``
(lag unknown), which the throttler treats as lagging, never as caught up. Probes connect
and read with a timeout, so a hung replica cannot stall the batch loop.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from ..db import Database

log = logging.getLogger(__name__)

#: Connect and read timeout of a probe (s).
PROBE_TIMEOUT_SECONDS = 5.0

OK, UNKNOWN, UNREACHABLE = "ok", "unknown", "unreachable"


@dataclass(frozen=True)
class LagReading:
    """One replica's lag: ``seconds`` (``None`` when unknown), ``status`` (``ok``, ``unknown``:
    reachable but lag not measurable, e.g. replication stopped; ``unreachable``), the
    ``source`` that gave the figure (``heartbeat`` or ``replay``) and a short ``detail``."""

    name: str
    seconds: float | None
    status: str = OK
    source: str = "heartbeat"
    detail: str = ""


class LagProbe(Protocol):
    name: str

    def measure(self) -> float | None:
        """Lag in seconds; ``None`` when unreachable or unknown."""


class ReplicaLagProbe:
    """Heartbeat lag plus replay status of one replica, over a kept-open connection (reopened
    after an error).

    :param db: a :class:`~.db.Database` connected to the replica (with timeouts: see
        :meth:`~.db.Database.direct`).
    :param heartbeat: the heartbeat row to read (the run's lock key); ``None`` (or a row not
        there yet, before pre-flight created it) uses replay status alone.
    :raises ValueError: from :meth:`read` when a reachable server says it is not a replica
        (a misconfigured replica connection must fail loudly, not read as "no lag").
    """

    def __init__(self, db: Database, heartbeat: str | None = None, timeout_s: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.db = db
        self.name = db.name
        self.heartbeat = heartbeat
        self.timeout_s = timeout_s
        self._conn: Any = None

    def measure(self) -> float | None:
        return self.read().seconds

    def read(self) -> LagReading:
        try:
            if self._conn is None:
                self._conn = self.db.connect()
                for sql, params in self.db.dialect.probe_session_setup(self.timeout_s):
                    self.db.execute(self._conn, sql, params)
                self._conn.commit()
        except Exception as exc:
            log.warning("replica %s unreachable: %s", self.name, exc)
            self.close()
            return LagReading(self.name, None, UNREACHABLE, "connect", str(exc)[:200])
        try:
            return self._read(self._conn)
        except ValueError:
            raise
        except Exception as exc:  # a lost connection, a timeout, a refused query: lag unknown
            log.warning("replica %s: lag unknown (%s)", self.name, exc)
            self.close()
            return LagReading(self.name, None, UNKNOWN, "error", str(exc)[:200])

    def _heartbeat_age(self, conn: Any) -> float | None:
        if not self.heartbeat:
            return None
        try:
            rows = self.db.query(conn, self.db.dialect.heartbeat_age_sql(self.db.schema), (self.heartbeat,))
        except Exception as exc:
            if self.db.dialect.is_missing_table(exc):  # not created yet (before pre-flight): replay status only
                conn.rollback()
                return None
            raise
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()  # do not hold a snapshot open on the replica
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def _read(self, conn: Any) -> LagReading:
        beat = self._heartbeat_age(conn)
        replay, detail = self._replay(conn)
        if beat is not None:
            seconds = max(beat, replay) if replay is not None else beat
            source = "replay" if replay is not None and replay > beat else "heartbeat"
            return LagReading(self.name, max(seconds, 0.0), OK, source, detail)
        if replay is None:
            return LagReading(self.name, None, UNKNOWN, "replay", detail or "replication lag unknown")
        return LagReading(self.name, max(replay, 0.0), OK, "replay", detail)

    def _replay(self, conn: Any) -> tuple[float | None, str]:
        """The replica's own replay lag (:meth:`~zdt_backfill.dialects.monitor.Monitor.parse_replica_status`)."""
        d = self.db.dialect
        last_error: Exception | None = None
        for sql in d.replica_status_sql():
            try:
                rows = self.db.query_dicts(conn, sql)
                conn.rollback()
            except Exception as exc:
                if d.is_syntax_error(exc):  # an older server: try the other spelling
                    last_error = exc
                    continue
                raise  # a lost connection (2013), a timeout: lag unknown, not "not a replica"
            try:
                return d.parse_replica_status(rows)
            except ValueError as exc:
                raise ValueError(f"{self.name} is {exc}") from None
        raise ValueError(f"{self.name}: cannot read the replica status: {last_error}")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


#: The probe without a heartbeat row (replay status only), as before the heartbeat.
def ReplicaStatusProbe(db: Database) -> ReplicaLagProbe:  # noqa: N802 - kept as the older name
    return ReplicaLagProbe(db, None)


def read_all(probes: list[Any]) -> list[LagReading]:
    """Every probe's :class:`LagReading` (plain :class:`LagProbe` objects are wrapped)."""
    out = []
    for p in probes:
        if hasattr(p, "read"):
            out.append(p.read())
        else:
            v = p.measure()
            out.append(LagReading(p.name, v, OK if v is not None else UNKNOWN))
    return out


def max_lag(probes: list[Any]) -> tuple[float | None, dict[str, float | None]]:
    """Measure every probe; return ``(worst lag or None if any unknown, {name: lag})``."""
    readings = {r.name: r.seconds for r in read_all(probes)}
    if any(v is None for v in readings.values()):
        return None, readings
    return (max(readings.values()) if readings else 0.0), readings
