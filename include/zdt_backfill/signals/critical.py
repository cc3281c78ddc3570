"""Critical load (gh-ost's ``--critical-load``): cancel the batch in flight, then one partition.

:class:`CriticalLoadWatchdog` watches the critical signals *while a batch statement runs* and
cancels that statement on its own connection when one passes its limit (the batch and its
checkpoint roll back together); :class:`CriticalLoadMode` is the run-wide single-partition mode
that follows, as one partition sees it. The throttler asks the mode; it does not hold it.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections import deque
from typing import Any, Callable

from ..db import Database
from ..errors import PermanentError
from .load import LoadCollector

log = logging.getLogger(__name__)

#: Single-partition mode ends after this many consecutive readings of the row-lock wait signal
#: at or under ``baseline * BASELINE_FACTOR + BASELINE_SLACK``.
BASELINE_READINGS = 3
BASELINE_FACTOR, BASELINE_SLACK = 1.1, 1.0
#: Readings of the row-lock wait signal kept for the baseline (their median); 120 x 0.5 s = 1 min.
BASELINE_WINDOW = 120
#: How often the lowest-numbered running partition is re-read in single-partition mode (s).
ACTIVE_CHECK_SECONDS = 2.0


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
            self.db.cancel_statement(session_id, "zdt_backfill:critical-load")
        except Exception as exc:  # the batch's statement timeout still bounds it
            log.warning("could not cancel session %s: %s", session_id, exc)

    def close(self) -> None:
        self._stop.set()
        self._armed.set()
        self._thread.join(timeout=5)
        self.load.close()


class CriticalLoadMode:
    """The run-wide single-partition mode after critical load, as one partition sees it: the
    other half of gh-ost's ``--critical-load`` (the watchdog cancels the batch in flight; this
    decides what the run does next), in one place.

    The mode's value is the run's own ``critical`` field of ``zdt_backfill_runs`` (``{"reason",
    "baseline", "since", "by_partition"}``, ``None`` outside the mode), read and written through
    ``read`` / ``write``, beside the operator's live control but never inside it. While it is set,
    every partition holds but the lowest-numbered one not yet done; that one copies until the
    engine's row-lock wait signal (:attr:`signal`) is at or under ``baseline * 1.1 + 1`` for
    :data:`BASELINE_READINGS` readings, where the baseline is the signal's median over the last
    minute of readings before the mode (:data:`BASELINE_WINDOW`). Critical load *again* after it
    had cleared in the mode is a new episode: the run halts (nothing destroyed).

    :param index: this partition's number.
    :param signal: the row-lock wait signal (``Dialect.ROW_LOCK_SIGNAL``: PostgreSQL
        ``ungranted_locks``, MySQL ``row_lock_waits_per_s``).
    :param read: the mode's value now (a dict or ``None``).
    :param write: sets the mode (``None`` clears it).
    :param lowest_running: the lowest-numbered partition of the run not yet done (checkpoints).
    :param record: ``record(kind, reason, detail)`` appends a run event (``critical_load``,
        ``critical_load_over``); none: not recorded.
    :param watermark: this partition's checkpoint now (recorded with each event).
    :param label: the partition as the log and the events name it (``p0 [1..500000]``).
    """

    def __init__(self, index: int, signal: str, read: Callable[[], Any], write: Callable[[Any], None],
                 lowest_running: Callable[[], int], record: Callable[..., None] | None = None,
                 watermark: Callable[[], Any] = lambda: None, clock: Callable[[], float] = time.monotonic,
                 label: str | None = None) -> None:
        self.index, self.signal, self.label = index, signal, label or f"p{index}"
        self._read, self._write, self.lowest_running = read, write, lowest_running
        self._record, self._watermark, self.clock = record, watermark, clock
        self._row_locks: deque[float] = deque(maxlen=BASELINE_WINDOW)
        self._at_baseline = 0
        self._seen = self._recovered = False
        self._active: tuple[float, bool] = (float("-inf"), True)

    # ------------------------------------------------------------------ reading the mode
    def current(self) -> dict[str, Any] | None:
        """The run's mode now (``None`` outside it)."""
        try:
            value = self._read()
        except Exception as exc:  # as live control does: unreadable reads as not set (the batches meet it too)
            log.warning("critical-load mode unreadable: %s", exc)
            return None
        return value if isinstance(value, dict) else None

    def observe(self, single: dict[str, Any] | None) -> tuple[bool, bool]:
        """``(active, recovered)`` for the throttle's readings: whether this partition is the one
        that copies in the mode, and whether the load fell below its critical limits since the
        mode began (then critical load is a new episode, which halts)."""
        if single is None:
            self._seen = self._recovered = False
            return True, False
        if not self._seen:  # the mode began (here or in another partition)
            self._seen, self._recovered = True, False
        return self._is_active(), self._recovered

    def _is_active(self) -> bool:
        """Whether this partition is the lowest-numbered one not yet done (re-read every 2 s)."""
        at, active = self._active
        if self.clock() - at >= ACTIVE_CHECK_SECONDS:
            try:
                active = self.lowest_running() == self.index
            except Exception as exc:  # keep the last answer; holding is the safe side
                log.warning("could not read the partitions still running: %s", exc)
            self._active = (self.clock(), active)
        return active

    @property
    def recovered(self) -> bool:
        """In the mode, whether this partition read the load below its critical limits since it began."""
        return self._seen and self._recovered

    def baseline(self) -> float:
        """The row-lock wait signal's median over the last minute of readings outside the mode."""
        return statistics.median(self._row_locks) if self._row_locks else 0.0

    # ------------------------------------------------------------------ changing it
    def enter(self, reason: str) -> None:
        """Critical load: set the run's single-partition mode with this partition's baseline."""
        base = self.baseline()
        self._write({"reason": reason, "baseline": base, "since": time.time(), "by_partition": self.index})
        self._event("critical_load", f"{reason}; one partition active",
                    {"reason": reason, "baseline": base, "signal": self.signal})
        self._seen, self._recovered, self._at_baseline = True, False, 0
        self._active = (float("-inf"), True)
        log.error("critical load %s: one partition active until row-lock waits (%s) return to baseline %.1f "
                  "(<= %.1f for %d readings); critical load again halts the run", reason, self.signal, base,
                  base * BASELINE_FACTOR + BASELINE_SLACK, BASELINE_READINGS)

    def join(self) -> None:
        """Another partition set the mode in this same episode (this one's batch was cancelled
        too): the mode is not set again."""
        if not self._seen:
            self._seen, self._recovered, self._at_baseline = True, False, 0

    def trip(self, tripped: str) -> bool:
        """The watchdog cancelled this partition's batch on ``tripped``: enter the mode, join it
        (a sibling's trip of the same episode), or halt (critical load again after it cleared).

        :returns: whether the run halts.
        """
        in_mode = self.current() is not None
        if in_mode and self.recovered:
            self.record_halt(f"critical load {tripped} with one partition active")
            return True
        if in_mode:
            self.join()
        else:
            self.enter(f"critical {tripped}")
        return False

    def record_halt(self, reason: str) -> None:
        """The run's ``critical_load`` event of a halt, with the checkpoint the partition keeps."""
        self._event("critical_load", f"{reason}; halting", {"reason": reason, "halt": True})

    def follow(self, load: dict[str, Any], single: dict[str, Any] | None, active: bool, held: bool,
               entering: bool, critical_limits: dict[str, float]) -> None:
        """After each throttle decision: feed the baseline outside the mode; inside it, note that
        critical load cleared, and end the mode from the active partition once row-lock waits are
        back to baseline (counted only while that partition copies, not while something else holds it).

        :param load: the load readings. :param single: the mode read with them.
        :param active: this partition copies in the mode. :param held: the decision holds it.
        :param entering: the decision enters the mode now. :param critical_limits: signal -> limit.
        """
        value = load.get(self.signal)
        if single is None:
            if value is not None and not entering:
                self._row_locks.append(value)
            return
        if any((v := load.get(k)) is not None and v >= lim for k, lim in critical_limits.items()):
            self._at_baseline = 0
            return
        self._recovered = True
        if not active or held:
            return
        limit = float(single.get("baseline") or 0.0) * BASELINE_FACTOR + BASELINE_SLACK
        self._at_baseline = self._at_baseline + 1 if value is not None and value <= limit else 0
        if self._at_baseline >= BASELINE_READINGS:
            detail = f"{self.signal}={value:g}<={limit:g} for {BASELINE_READINGS} readings"
            self._write(None)
            self._event("critical_load_over", f"{detail}; every partition resumes", {"detail": detail})
            self._at_baseline = 0
            log.info("critical load over: row-lock waits back to baseline (%s); every partition resumes", detail)

    def _event(self, kind: str, reason: str, detail: dict[str, Any]) -> None:
        if self._record is None:
            return
        with contextlib.suppress(Exception):  # an event never stops the batch loop
            self._record(kind, f"partition {self.label}: {reason}",
                         {"partition": self.index, "watermark": self._watermark(), **detail})
