"""Replica lag probes.

A probe measures one replica's lag in seconds. An unreachable replica, or one whose
lag is unknown (``Seconds_Behind_Master`` NULL because replication stopped), reads as
``None``, which the throttler treats as lagging, never as caught up.

The base reads the engines' own replay status (PostgreSQL: time since the last
replayed transaction while replay is behind receive; MySQL/MariaDB:
``Seconds_Behind_Master``). Both can be stale; the health-gating issue adds a
heartbeat probe (gh-ost, pt-heartbeat) behind the same interface.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

from .db import Database

log = logging.getLogger(__name__)


class LagProbe(Protocol):
    name: str

    def measure(self) -> float | None:
        """Lag in seconds; ``None`` when unreachable or unknown."""


class ReplicaStatusProbe:
    """Reads a replica's replay status over a kept-open connection (reopened on error).

    :param db: a :class:`~.db.Database` connected to the replica.
    :raises ValueError: from :meth:`measure` when the server is not a replica (a
        misconfigured replica connection must fail loudly, not read as "no lag").
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.name = db.name
        self._conn: Any = None

    def measure(self) -> float | None:
        try:
            if self._conn is None:
                self._conn = self.db.connect()
            return self._read(self._conn)
        except ValueError:
            raise
        except Exception as exc:  # unreachable counts as lagging
            log.warning("replica %s unreachable: %s", self.name, exc)
            self.close()
            return None

    def _read(self, conn: Any) -> float | None:
        if self.db.dialect.name == "postgres":
            rows = self.db.query(conn, self.db.dialect.replica_lag_sql())
            conn.rollback()  # do not hold a snapshot open on the replica
            in_recovery, lag = rows[0]
            if not in_recovery:
                raise ValueError(f"{self.name} is not a replica (pg_is_in_recovery() is false)")
            return float(lag)
        status = None
        for sql in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            try:
                rows = self.db.query_dicts(conn, sql)
            except Exception:
                continue
            status = rows[0] if rows else {}
            break
        if not status:
            raise ValueError(f"{self.name} is not a replica (SHOW SLAVE STATUS is empty)")
        lag = status.get("Seconds_Behind_Source", status.get("Seconds_Behind_Master"))
        return None if lag is None else float(lag)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


def max_lag(probes: list[LagProbe]) -> tuple[float | None, dict[str, float | None]]:
    """Measure every probe; return ``(worst lag or None if any unknown, {name: lag})``."""
    readings = {p.name: p.measure() for p in probes}
    if any(v is None for v in readings.values()):
        return None, readings
    return (max(readings.values()) if readings else 0.0), readings
