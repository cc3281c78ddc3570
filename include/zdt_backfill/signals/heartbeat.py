"""Heartbeat: replica lag you can trust (gh-ost's heartbeat, pt-heartbeat).

The backfill writes the primary's clock into ``zdt_heartbeat`` at least every
:data:`HEARTBEAT_INTERVAL_SECONDS` while it runs, from a background thread
(:class:`HeartbeatWriter`); every replica reads ``now() - ts`` from its copy of that row
(:meth:`~zdt_backfill.dialects.Dialect.heartbeat_age_sql`). A replica whose WAL receiver is
disconnected, whose SQL thread is stopped, or which is simply slow, shows a lag that grows
with the time since the last heartbeat it applied. Replay status (PostgreSQL) and
``Seconds_Behind_Master`` stay as a second signal: they can read 0 or NULL on a stalled
replica (PEERS: a paused replica showed 15 ms of ``replay_lag``).

The two clocks are different hosts' clocks: like gh-ost, this assumes they are in sync
(NTP); a skew adds to (or hides) that much lag.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from ..db import Database
from ..dialects.schema import HEARTBEAT

log = logging.getLogger(__name__)

#: How often the primary's heartbeat is written while a run works (s). gh-ost writes every
#: 100 ms; the issue asks for 500 ms at most.
HEARTBEAT_INTERVAL_SECONDS = 0.25


def create_table(db: Database, conn: Any) -> None:
    """Create ``zdt_heartbeat(name PK, ts, run_id)`` if absent (replicated to every replica)."""
    db.execute(conn, db.dialect.control_table_sql(HEARTBEAT, db.schema))
    conn.commit()


def beat(db: Database, conn: Any, name: str, run_id: str) -> None:
    """Write one heartbeat (the primary's ``now()``) and commit."""
    db.execute(conn, db.dialect.heartbeat_upsert_sql(db.schema), (name, run_id))
    conn.commit()


class HeartbeatWriter:
    """Writes the heartbeat from a background thread, every ``interval`` seconds, while a
    ``with`` block runs. Errors are logged and retried (an unreachable primary stops the
    heartbeat, which the replicas then read as growing lag: the safe direction).

    :param db: the primary.
    :param name: the heartbeat row (the run's lock key).
    :param run_id: written beside it, for operators.
    """

    def __init__(self, db: Database, name: str, run_id: str, interval: float = HEARTBEAT_INTERVAL_SECONDS) -> None:
        self.db = db
        self.name = name
        self.run_id = run_id
        self.interval = interval
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="zdt-heartbeat", daemon=True)

    def _loop(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.db.connect()
                beat(self.db, conn, self.name, self.run_id)
                self.beats += 1
            except Exception as exc:
                log.warning("heartbeat write failed (retrying): %s", exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def __enter__(self) -> "HeartbeatWriter":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
