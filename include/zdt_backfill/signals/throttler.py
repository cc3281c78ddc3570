"""Throttling: collect signals, then decide with a pure function (gh-ost's throttler).

**Collectors** read the world: replica lag (:mod:`zdt_backfill.signals.lag`, heartbeat first), load on the
primary (:class:`LoadCollector`: ``Threads_running``, row-lock waits, deadlocks, history
list length on MySQL; active backends, ungranted locks, deadlocks, autovacuum on the
tables, WAL rate on PostgreSQL), a user throttle query (gh-ost's ``--throttle-query``:
CPU or any external metric as a number), and live control (pause, stop, new limits).

**Deciding** is pure: :func:`decide` takes the :class:`Readings` and the :class:`Limits`
and returns a :class:`Decision` with a *kind* (``lag``, ``lag-unknown``,
``replica-unreachable``, ``load``, ``throttle-query``, ``paused``, ``critical-load``,
``critical``) and a reason with the figure (``lag=3.2s>2s``, ``threads_running=31>=25``).

**Critical load** (gh-ost's ``--critical-load``) first drops the run to one active partition
(:class:`~.critical.CriticalLoadMode`): the batch in flight is cancelled (:class:`CriticalLoadWatchdog`), every
partition holds while the load stays critical, then only the lowest-numbered partition not yet
done copies until the row-lock waits are back to their baseline (``baseline * 1.1 + 1`` for 3
readings); critical load *again* in that mode halts the run.

The :class:`Throttler` runs the loop between batches: it logs a change of the reason's
kind once, a held throttle's figure at most every :data:`HELD_LOG_SECONDS`, counts the time
held by kind, gives up after ``max_wait_seconds`` (the run then halts; nothing is
destroyed). The rows/s ceiling is a token bucket
(``pyrate-limiter``, GCRA) charged on keys *scanned*, so a re-run over a full target that
inserts nothing is throttled too.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from pyrate_limiter import Duration, Limiter, Rate, StateBucket, TokenBucket

from ..db import Database
from ..errors import PermanentError, ThrottleTimeoutError
from ..fields import default_of
from .critical import CriticalLoadError, CriticalLoadMode
from .lag import UNREACHABLE, LagReading, read_all
from .load import LoadCollector, ThrottleQuery

log = logging.getLogger(__name__)

#: How often the signals are read between batches, at most (s). The heartbeat is written
#: every 250 ms; reading every 0.5 s closes the gate within one batch of a paused replica.
CHECK_INTERVAL_SECONDS = 0.5
#: Sleep while throttled before reading the signals again (s).
THROTTLE_SLEEP_SECONDS = 0.5
#: A held throttle logs its figure at most this often (s).
HELD_LOG_SECONDS = 10.0


class SustainedLagError(PermanentError):
    """Replica lag stayed above ``halt_lag_seconds`` for ``halt_lag_after_seconds``: the copy halts."""


class StopRequestedError(PermanentError):
    """An operator asked the run to stop (live control): the run halts, nothing destroyed."""


@dataclass(frozen=True)
class Limits:
    """Thresholds of :func:`decide`.

    :param max_lag_seconds: replica lag gate (s); ``None`` disables it.
    :param max_load: load signal -> value at or above which batches wait.
    :param critical_load: load signal -> value at or above which the run halts.
    :param throttle_query_max: the throttle query's value at or above which batches wait.
    """

    max_lag_seconds: float | None = None
    max_load: dict[str, float] = field(default_factory=dict)
    critical_load: dict[str, float] = field(default_factory=dict)
    throttle_query_max: float | None = None


@dataclass(frozen=True)
class Readings:
    """One collection of every signal (values ``None`` when unknown).

    ``single`` is the run's single-partition mode after critical load (the control row's
    ``single_partition``: ``{"reason", "baseline", "since"}``), ``None`` outside it; ``active``
    says this partition is the one that copies in that mode; ``critical_recovered`` that the
    load fell below its critical limits since the mode began (critical load then is a new
    episode, which halts).
    """

    lag: tuple[LagReading, ...] = ()
    load: dict[str, float | None] = field(default_factory=dict)
    throttle_query: float | None = None
    paused: bool = False
    single: dict[str, Any] | None = None
    active: bool = True
    critical_recovered: bool = False


@dataclass(frozen=True)
class Decision:
    """Whether to hold the next batch (``throttle``) or halt the run (``halt``), of what ``kind``
    and why (``reason`` carries the figure). Empty kind when going."""

    throttle: bool
    kind: str = ""
    reason: str = ""
    halt: bool = False
    enter_single: bool = False


def decide(readings: Readings, limits: Limits) -> Decision:
    """Pure throttle decision; the first matching rule wins.

    1. critical load holds and enters single-partition mode (``enter_single``), or halts when it
    comes back in that mode after having cleared; 2. an operator's pause holds; 3. in
    single-partition mode, every partition but the active one holds; 4. an unreachable replica,
    or one whose lag is unknown, holds (never read as zero); 5. lag over the gate holds; 6. load
    at or over a threshold holds; 7. the throttle query at or over its threshold holds.
    """
    for name, limit in limits.critical_load.items():
        v = readings.load.get(name)
        if v is not None and v >= limit:
            reason = f"critical {name}={v:g}>={limit:g}"
            if readings.single is not None and readings.critical_recovered:
                return Decision(True, "critical", f"{reason} again with one partition active", halt=True)
            return Decision(True, "critical-load", reason, enter_single=readings.single is None)
    if readings.paused:
        return Decision(True, "paused", "paused by an operator")
    if readings.single is not None and not readings.active:
        return Decision(True, "critical-load", "one partition active after critical load "
                        f"({readings.single.get('reason')}) until row-lock waits return to baseline")
    if limits.max_lag_seconds is not None and readings.lag:
        down = [r for r in readings.lag if r.seconds is None]
        if down:
            kind = "replica-unreachable" if any(r.status == UNREACHABLE for r in down) else "lag-unknown"
            return Decision(True, kind, f"{kind}: " + ", ".join(f"{r.name} ({r.detail or r.status})" for r in down))
        worst = max(readings.lag, key=lambda r: r.seconds or 0.0)
        if worst.seconds is not None and worst.seconds > limits.max_lag_seconds:
            return Decision(True, "lag", f"lag={worst.seconds:.1f}s>{limits.max_lag_seconds:g}s ({worst.name}, {worst.source})")
    for name, limit in limits.max_load.items():
        v = readings.load.get(name)
        if v is not None and v >= limit:
            return Decision(True, "load", f"{name}={v:g}>={limit:g}")
    if limits.throttle_query_max is not None and readings.throttle_query is not None:
        if math.isnan(readings.throttle_query) or readings.throttle_query >= limits.throttle_query_max:
            return Decision(True, "throttle-query", f"throttle_query={readings.throttle_query:g}>={limits.throttle_query_max:g}")
    return Decision(False)


class Throttler:
    """Between-batch gate: signals first (lag, load, throttle query, live control), then the
    rows/s ceiling.

    :param rows_per_second: ceiling for this partition (rows/s, charged on keys scanned), ``None`` for none.
    :param burst_rows: most rows admitted at once (the largest batch).
    :param probes: replica lag probes.
    :param max_lag_seconds: lag gate (s), ``None`` for none.
    :param max_wait_seconds: longest continuous throttle before the run halts (s); an
        operator's pause has no deadline.
    :param limits: load limits; ``max_lag_seconds`` above is folded into them.
    :param load: the load collector (``None``: no load signals).
    :param throttle_query: the user's throttle query (``None``: none).
    :param control: returns live control (``{"pause": bool, "stop": bool, "max_rows_per_second": n}``).
    :param halt_lag_seconds: replica lag (s) above which, sustained for ``halt_lag_after_seconds``,
        the partition halts (:class:`SustainedLagError`); ``None`` for no such rule. Unknown lag
        does not count here (it holds until ``max_wait_seconds``).
    """

    def __init__(
        self,
        rows_per_second: float | None,
        burst_rows: int,
        probes: list[Any] | None = None,
        max_lag_seconds: float | None = None,
        max_wait_seconds: float = default_of("replica_wait_timeout_seconds"),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        limits: Limits | None = None,
        load: LoadCollector | None = None,
        throttle_query: ThrottleQuery | None = None,
        control: Callable[[], dict[str, Any]] | None = None,
        halt_lag_seconds: float | None = None,
        halt_lag_after_seconds: float = 300.0,
        share: int = 1,
        active_partitions: Callable[[], int] | None = None,
        critical: CriticalLoadMode | None = None,
    ) -> None:
        self.probes = probes or []
        self.critical = critical
        self._run_rate = rows_per_second
        self._share = max(1, share)
        self.active_partitions = active_partitions
        self._share_checked = float("-inf")
        self.halt_lag_seconds = halt_lag_seconds
        self.halt_lag_after_seconds = halt_lag_after_seconds
        self._high_lag_since: float | None = None
        base = limits or Limits()
        self.limits = Limits(max_lag_seconds, base.max_load, base.critical_load, base.throttle_query_max)
        self.max_wait_seconds = max_wait_seconds
        self.clock = clock
        self.sleep = sleep
        self.load = load
        self.throttle_query = throttle_query
        self.control = control
        self.throttled_seconds: Counter[str] = Counter()
        self.max_lag_seen: float = 0.0
        self.last_lag: float | None = None
        self._rate_waited = False
        self.events: list[dict[str, Any]] = []
        self.last_control: dict[str, Any] = {}
        self._last_check = float("-inf")
        self._kind = ""
        self._burst = max(1, burst_rows)
        self._rate: float | None = None
        self._limiter: Limiter | None = None
        self.set_rate(rows_per_second / self._share if rows_per_second else None)

    # ------------------------------------------------------------------ rate
    def set_rate(self, rows_per_second: float | None) -> None:
        """(Re)set this partition's rows/s ceiling (its share of the run's; live control and a
        finished partition change it between batches). The new bucket starts empty, so a change
        never admits a free burst."""
        if rows_per_second == self._rate and (self._limiter is not None) == bool(rows_per_second):
            return
        self._rate = rows_per_second
        self._limiter = None
        if rows_per_second:
            # Per-minute rate so fractional rows/s keep their precision in integer units.
            rate = Rate(max(1, round(rows_per_second * 60)), Duration.MINUTE, burst=self._burst)
            self._limiter = Limiter(StateBucket([rate], TokenBucket()), buffer_ms=0)
            # A token bucket starts full: one batch-sized burst would be free, an overshoot of one
            # batch per partition (11 % over a 60 s run of 50,000-row batches, measured in `make
            # bench`). Drain it now, so the first batch waits for its share like every other.
            self._limiter.try_acquire("rows", weight=self._burst, blocking=False)

    @property
    def rate(self) -> float | None:
        return self._rate

    # ------------------------------------------------------------------ signals
    def _apply_control(self, ctl: dict[str, Any]) -> None:
        self.last_control = ctl
        if ctl.get("stop"):
            raise StopRequestedError(f"stop requested by an operator ({ctl.get('source', 'control')})")
        if "max_rows_per_second" in ctl:
            new = ctl["max_rows_per_second"] or None  # the whole run's ceiling, as the conf field
            if new != self._run_rate:
                log.info("live control: rows/s ceiling %s -> %s (this partition's share: 1/%d)",
                         self._run_rate, new, self._share)
                self._run_rate = new
                self.set_rate(new / self._share if new else None)

    #: How often a partition re-reads how many partitions still share the ceiling (s).
    SHARE_CHECK_SECONDS = 5.0

    def _reshare(self) -> None:
        """The ceiling follows the work: when partitions finish, the ones still running take
        over their share (the run's ceiling / partitions not yet done, from the checkpoints)."""
        if self.active_partitions is None or not self._run_rate:
            return
        if self.clock() - self._share_checked < self.SHARE_CHECK_SECONDS:
            return
        self._share_checked = self.clock()
        try:
            n = max(1, int(self.active_partitions()))
        except Exception as exc:  # keep the current share; the ceiling is never exceeded by it
            log.warning("could not read the partitions still running: %s", exc)
            return
        if n < self._share:
            log.info("rows/s ceiling: %d partition(s) still running; this partition's share %.0f -> %.0f rows/s",
                     n, self._run_rate / self._share, self._run_rate / n)
            self._share = n
            self.set_rate(self._run_rate / n)

    def collect(self) -> Readings:
        ctl = self.control() if self.control else {}
        self._apply_control(ctl)
        lag = tuple(read_all(self.probes)) if self.probes and self.limits.max_lag_seconds is not None else ()
        for r in lag:
            if r.seconds is not None:
                self.max_lag_seen = max(self.max_lag_seen, r.seconds)
        if lag:
            self.last_lag = max((r.seconds for r in lag if r.seconds is not None), default=None)
        load = self.load.read() if self.load else {}
        tq = self.throttle_query.read() if self.throttle_query else None
        single = self.critical.current() if self.critical is not None else None
        active, recovered = self.critical.observe(single) if self.critical is not None else (True, False)
        return Readings(lag, load, tq, bool(ctl.get("pause")), single, active, recovered)

    def critical_tripped(self, tripped: str) -> bool:
        """The watchdog cancelled this partition's batch on ``tripped`` (see
        :meth:`~.critical.CriticalLoadMode.trip`); the signals are read before the next batch.

        :returns: whether the run halts.
        """
        self._last_check = float("-inf")
        return self.critical is None or self.critical.trip(tripped)

    def before_batch(self) -> None:
        """Block while a signal says hold; raise past the deadline or on critical load.

        :raises ThrottleTimeoutError: throttled continuously for longer than ``max_wait_seconds``.
        :raises CriticalLoadError: critical load again in single-partition mode (halt now).
        :raises StopRequestedError: an operator asked the run to stop.
        """
        if self.control is not None:  # live control takes effect at the next batch
            ctl = self.control()
            holding = ctl.get("pause") or ctl.get("stop") or (self.critical is not None and self.critical.current())
            if not holding and self.clock() - self._last_check < CHECK_INTERVAL_SECONDS:
                self._apply_control(ctl)
                return
        elif self.clock() - self._last_check < CHECK_INTERVAL_SECONDS:
            return
        started = self.clock()
        last_log = float("-inf")
        while True:
            self._last_check = self.clock()
            readings = self.collect()
            d = decide(readings, self.limits)
            self._check_sustained_lag(readings)
            if d.halt:
                self._note(d)
                raise CriticalLoadError(d.reason)
            if self.critical is not None:
                if d.enter_single:
                    self.critical.enter(d.reason)
                self.critical.follow(readings.load, readings.single, readings.active, d.throttle, d.enter_single,
                                     self.limits.critical_load)
            if d.kind != self._kind:  # a change of kind is logged once, with its figure
                if d.kind:
                    log.warning("throttle: %s", d.reason)
                else:
                    log.info("throttle released (was %s) after %.1fs", self._kind, self.clock() - started)
                self._note(d)
                self._kind = d.kind
                last_log = self.clock()
            elif d.throttle and self.clock() - last_log >= HELD_LOG_SECONDS:
                log.info("throttle held %.0fs: %s", self.clock() - started, d.reason)
                last_log = self.clock()
            if not d.throttle:
                return
            waited = self.clock() - started
            if d.kind != "paused" and waited > self.max_wait_seconds:
                raise ThrottleTimeoutError(f"throttled for {waited:.0f}s: {d.reason}")
            t0 = self.clock()
            self.sleep(THROTTLE_SLEEP_SECONDS)
            self.throttled_seconds[d.kind] += self.clock() - t0

    def _check_sustained_lag(self, readings: Readings) -> None:
        """Raise :class:`SustainedLagError` once the worst known lag has stayed above
        ``halt_lag_seconds`` for ``halt_lag_after_seconds`` (the seed's rule: lag over 5 s
        halts; here after a grace period, so a short spike only throttles)."""
        known = [r.seconds for r in readings.lag if r.seconds is not None]
        if self.halt_lag_seconds is None or not known or max(known) <= self.halt_lag_seconds:
            self._high_lag_since = None
            return
        now = self.clock()
        if self._high_lag_since is None:
            self._high_lag_since = now
        elif now - self._high_lag_since >= self.halt_lag_after_seconds:
            raise SustainedLagError(
                f"replica lag {max(known):.1f}s > {self.halt_lag_seconds:g}s for "
                f"{now - self._high_lag_since:.0f}s: halting the copy (held; nothing destroyed)"
            )

    @property
    def state(self) -> str:
        """The throttle kind of the last check (``""`` when free), or ``rate`` when the last batch
        waited for the rows/s ceiling."""
        return self._kind or ("rate" if self._rate_waited else "")

    def _note(self, d: Decision) -> None:
        self.events.append({"kind": d.kind or "released", "reason": d.reason or "released"})

    def after_batch(self, keys: int) -> None:
        """Wait until ``keys`` (keys *scanned*, whether or not they were written) fit under the
        rows/s ceiling; count the wait under ``rate``, and log it when it starts."""
        self._reshare()
        self._rate_waited = False
        if self._limiter is None or keys <= 0:
            return
        t0 = self.clock()
        while keys > 0:  # a batch larger than the bucket is charged in bucket-sized pieces
            piece = min(keys, self._burst)
            self._limiter.try_acquire("rows", weight=piece)
            keys -= piece
        waited = self.clock() - t0
        self._rate_waited = waited > 0.001
        if waited > 0.001:
            if self._kind != "rate" and self.throttled_seconds["rate"] == 0:
                log.info("throttle: rate ceiling %.0f rows/s", self._rate or 0)
            self.throttled_seconds["rate"] += waited


def build_throttler(
    config: Any, db: Database, probes: list[Any] | None, planned: int | None,
    control: Callable[[], dict[str, Any]] | None, burst_rows: int, sleep: Callable[[float], None] = time.sleep,
) -> Throttler:
    """The throttle of one partition of a run: its share of the rows/s ceiling (among the
    *planned* partitions), the replica-lag gate, the load limits of the config (a limit of
    0 is off), the throttle query, and live control.

    :param config: the :class:`~.config.RunConfig`.
    :param burst_rows: the largest batch (rows), the token bucket's capacity.
    :param sleep: the holds' sleep (s): a :meth:`~zdt_backfill.cancel.Cancel.sleep` returns when
        the task is told to stop.
    """
    limits = Limits(
        config.max_replica_lag_seconds,
        {k: v for k, v in config.max_load.items() if v > 0},
        {k: v for k, v in config.critical_load.items() if v > 0},
        config.throttle_query_max,
    )
    tables = tuple(t for t in (config.source_table, config.target_table) if t)
    return Throttler(
        config.max_rows_per_second, burst_rows, probes, config.max_replica_lag_seconds,
        config.replica_wait_timeout_seconds, limits=limits, load=LoadCollector(db, tables),
        throttle_query=ThrottleQuery(db, config.throttle_query) if config.throttle_query else None,
        control=control, sleep=sleep,
        halt_lag_seconds=config.halt_lag_seconds if config.max_replica_lag_seconds is not None else None,
        halt_lag_after_seconds=config.halt_lag_after_seconds,
        share=planned or config.partitions,
    )
