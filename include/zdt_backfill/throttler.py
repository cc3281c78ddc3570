"""Throttling: collect signals, then decide with a pure function.

Following gh-ost, collecting (replica lag readings) is separate from deciding:
:func:`decide` takes the readings and the limits and returns a :class:`Decision`
with a short reason such as ``replica-lag=3.2s>2.0s``. The :class:`Throttler` runs
the loop between batches and counts time spent throttled, by reason.

The rows/s ceiling is a token bucket from ``pyrate-limiter`` (GCRA): after a batch
of ``n`` rows the next one waits until ``n`` tokens have refilled at the partition's
rate, so the long-run rate stays at or under the ceiling.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from pyrate_limiter import Duration, Limiter, Rate, StateBucket, TokenBucket

from .errors import ThrottleTimeoutError
from .lag import LagProbe, max_lag

log = logging.getLogger(__name__)

#: How often replica lag is read between batches, at most (s). gh-ost reads its
#: heartbeat every 100 ms in the background; between batches, once a second is enough.
LAG_CHECK_INTERVAL_SECONDS = 1.0
#: Sleep while throttled before reading the signals again (s).
THROTTLE_SLEEP_SECONDS = 0.5


@dataclass(frozen=True)
class Decision:
    """Whether to hold the next batch, and why (empty reason when not throttled)."""

    throttle: bool
    reason: str = ""


def decide(lag_seconds: float | None, readings: dict[str, float | None], max_lag_seconds: float | None) -> Decision:
    """Pure throttle decision on replica lag.

    :param lag_seconds: worst lag over the replicas (s), ``None`` if any is unknown.
    :param readings: per-replica lag (s) for the reason text.
    :param max_lag_seconds: the gate (s); ``None`` disables it.
    :returns: throttle with reason ``replica-lag=<s>s><max>s`` or ``replica-unreachable=<name>``.
    """
    if max_lag_seconds is None or not readings:
        return Decision(False)
    if lag_seconds is None:
        unknown = ",".join(n for n, v in readings.items() if v is None)
        return Decision(True, f"replica-unreachable={unknown}")
    if lag_seconds > max_lag_seconds:
        return Decision(True, f"replica-lag={lag_seconds:.1f}s>{max_lag_seconds:g}s")
    return Decision(False)


class Throttler:
    """Between-batch gate: replica lag first, then the rows/s ceiling.

    :param rows_per_second: ceiling for this partition (rows/s), ``None`` for none.
    :param burst_rows: most rows admitted at once (the batch size).
    :param probes: replica lag probes.
    :param max_lag_seconds: lag gate (s), ``None`` for none.
    :param max_wait_seconds: longest continuous lag throttle before giving up (s).
    """

    def __init__(
        self,
        rows_per_second: float | None,
        burst_rows: int,
        probes: list[LagProbe] | None = None,
        max_lag_seconds: float | None = None,
        max_wait_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.probes = probes or []
        self.max_lag_seconds = max_lag_seconds
        self.max_wait_seconds = max_wait_seconds
        self.clock = clock
        self.sleep = sleep
        self.throttled_seconds: Counter[str] = Counter()
        self.max_lag_seen: float = 0.0
        self._last_check = float("-inf")
        self._last_reason = ""
        self._limiter: Limiter | None = None
        if rows_per_second:
            # Per-minute rate so fractional rows/s keep their precision in integer units.
            rate = Rate(max(1, round(rows_per_second * 60)), Duration.MINUTE, burst=max(1, burst_rows))
            self._limiter = Limiter(StateBucket([rate], TokenBucket()), buffer_ms=0)

    def before_batch(self) -> None:
        """Block while a replica lags past the gate; raise after ``max_wait_seconds``.

        :raises ThrottleTimeoutError: throttled continuously for longer than allowed.
        """
        if not self.probes or self.max_lag_seconds is None:
            return
        if self.clock() - self._last_check < LAG_CHECK_INTERVAL_SECONDS:
            return
        started = self.clock()
        while True:
            self._last_check = self.clock()
            worst, readings = max_lag(self.probes)
            if worst is not None:
                self.max_lag_seen = max(self.max_lag_seen, worst)
            d = decide(worst, readings, self.max_lag_seconds)
            if d.reason != self._last_reason:  # log when the reason changes, as gh-ost does
                log.info("throttle: %s", d.reason or "released")
                self._last_reason = d.reason
            if not d.throttle:
                return
            waited = self.clock() - started
            if waited > self.max_wait_seconds:
                raise ThrottleTimeoutError(f"throttled for {waited:.0f}s: {d.reason}")
            t0 = self.clock()
            self.sleep(THROTTLE_SLEEP_SECONDS)
            self.throttled_seconds[d.reason.split("=")[0]] += self.clock() - t0

    def after_batch(self, rows: int) -> None:
        """Wait until ``rows`` fit under the rows/s ceiling; count the wait under ``rate``."""
        if self._limiter is None or rows <= 0:
            return
        t0 = self.clock()
        self._limiter.try_acquire("rows", weight=rows)
        waited = self.clock() - t0
        if waited > 0.001:
            self.throttled_seconds["rate"] += waited
