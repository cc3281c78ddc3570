"""Critical load (gh-ost's ``--critical-load``): cancel the batch in flight, then one partition.

:class:`CriticalLoadWatchdog` watches the critical signals *while a batch statement runs* and
cancels that statement on its own connection when one passes its limit; :class:`CriticalMode`
is the run-wide single-partition mode as one partition sees it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from ..db import Database
from ..errors import PermanentError
from .load import LoadCollector

log = logging.getLogger(__name__)


class CriticalLoadError(PermanentError):
    """Load passed a critical threshold (gh-ost's ``--critical-load``): the run halts at once."""



class CriticalLoadWatchdog:
    """Watches the critical signals *while a batch statement runs* (gh-ost's ``--critical-load``,
    which between-batch checks cannot honour when one statement runs long), and cancels that
    statement on its own connection when one passes its limit: the batch and its checkpoint
    roll back together, so nothing is lost, and the partition halts.

    :param db: the primary. :param tables: for the load collector.
    :param critical: signal -> limit (only limits > 0).
    :param interval: seconds between readings while armed (0.25).
    """

    def __init__(self, db: Database, tables: tuple[str, ...], critical: dict[str, float], interval: float = 0.25) -> None:
        import threading

        self.db, self.critical, self.interval = db, critical, interval
        self.load = LoadCollector(db, tables)
        self.tripped: str | None = None
        self._target: Callable[[], Any] | None = None
        self._armed = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="zdt-critical-load-watchdog", daemon=True)
        self._thread.start()

    def arm(self, session_id: Callable[[], Any]) -> None:
        """Watch from now on; ``session_id()`` gives the batch session's id when it is time to cancel."""
        with self._lock:
            self._target = session_id
        self._armed.set()

    def disarm(self) -> None:
        with self._lock:
            self._target = None
        self._armed.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._armed.wait(0.2):
                continue
            reading = self.load.read()
            hit = [(k, v, lim) for k, lim in self.critical.items() if (v := reading.get(k)) is not None and v >= lim]
            with self._lock:
                target = self._target() if (hit and self._target) else None
                if hit and target is not None and self.tripped is None:
                    self.tripped = ", ".join(f"{k}={v:g}>={lim:g}" for k, v, lim in hit)
                    self._cancel(target)
                    self._armed.clear()
            self._stop.wait(self.interval)

    def _cancel(self, session_id: Any) -> None:
        log.error("critical load %s: cancelling the in-flight batch (session %s)", self.tripped, session_id)
        try:
            with self.db.session() as conn:
                self.db.execute(conn, self.db.dialect.cancel_statement_sql(), (int(session_id),))
                conn.commit()
        except Exception as exc:  # the batch's statement timeout still bounds it
            log.warning("could not cancel session %s: %s", session_id, exc)

    def close(self) -> None:
        self._stop.set()
        self._armed.set()
        self._thread.join(timeout=5)
        self.load.close()


@dataclass
class CriticalMode:
    """The run-wide single-partition mode after critical load, as one partition sees it.

    :param index: this partition's number.
    :param signal: the row-lock wait signal of the engine (``Dialect.ROW_LOCK_SIGNAL``:
        PostgreSQL ``ungranted_locks``, MySQL ``row_lock_waits_per_s``).
    :param enter: ``enter(reason, baseline)`` sets the mode in the run's control row.
    :param leave: ``leave(detail)`` clears it.
    :param lowest_running: the lowest-numbered partition of the run not yet done (checkpoints).
    """

    index: int
    signal: str
    enter: Callable[[str, float], None]
    leave: Callable[[str], None]
    lowest_running: Callable[[], int]
