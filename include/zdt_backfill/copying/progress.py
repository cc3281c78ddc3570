"""What the task log says while a partition copies: one line per batch, a progress line for the
whole run every :data:`RUN_PROGRESS_SECONDS`, and a summary in words at the end.

Rates and ETAs are measured over *this attempt* (keys advanced since it started, over its wall
time, throttled waits included), so right after a resume the ETA is already right: the keys a
previous attempt copied count as done, not as copied in no time.

Progress counts *rows* (source keys scanned) against the plan's estimate of each partition's
rows where the plan has one (gh-ost's "copied / estimated rows"): with sparse keys the share of
the key span says nothing (keys 1..1,400,000 and then 10^12..2*10^12 read "0.0 % done, ETA
3713 h" one batch before the end). Once a partition has scanned past its estimate (low table
statistics), :func:`expected_rows` extrapolates the rest of its key range at the density seen so
far. Without an estimate (no plan event left for the partition's bounds) progress falls back to
the key span.

Pure functions and small trackers with an injectable clock; no database access here (the
copier reads the checkpoints and passes them in).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: How often a partition logs the whole run's progress (s).
RUN_PROGRESS_SECONDS = 30.0

#: Throttle kinds (:func:`~zdt_backfill.signals.throttler.decide`, ``rate``) in words.
THROTTLE_WORDS = {
    "rate": "rate ceiling",
    "lag": "replica lag",
    "lag-unknown": "lag unknown",
    "replica-unreachable": "replica unreachable",
    "load": "load",
    "throttle-query": "throttle query",
    "paused": "paused by an operator",
    "critical-load": "critical load",
}


def duration(seconds: float | None) -> str:
    """``42.1 s``, ``12 min 5 s``, ``3 h 20 min``; ``unknown`` for ``None``."""
    if seconds is None:
        return "unknown"
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def throttled_words(seconds_by_kind: Mapping[str, float]) -> str:
    """``throttled 6.1 s (replica lag 4.0 s, rate ceiling 2.1 s)`` or ``never throttled``."""
    parts = [(k, v) for k, v in sorted(seconds_by_kind.items(), key=lambda kv: -kv[1]) if v >= 0.05]
    if not parts:
        return "never throttled"
    total = sum(v for _, v in parts)
    return f"throttled {duration(total)} (" + ", ".join(f"{THROTTLE_WORDS.get(k, k)} {duration(v)}" for k, v in parts) + ")"


def expected_rows(estimate: int, scanned: int, lo: int, hi: int, watermark: int) -> float:
    """A partition's expected source rows: the plan's ``estimate`` while it holds; what it
    ``scanned`` once the watermark reached ``hi``; past the estimate (the statistics were low),
    the rows scanned plus the rest of the key range at the density seen so far (rows per key
    over ``[lo, watermark]``)."""
    if watermark >= hi:
        return float(scanned)
    if scanned < estimate:
        return float(estimate)
    return scanned + (hi - watermark) * scanned / max(watermark - lo + 1, 1)


@dataclass
class PartitionProgressLog:
    """Per-batch lines of one partition attempt.

    :param label: ``p0 [1..500000]``. :param lo, hi: the partition's inclusive key bounds.
    :param start_watermark: the checkpoint the attempt starts from (``lo - 1`` when fresh).
    :param rows_estimate: the plan's estimate of the partition's source rows (``None``: unknown,
        progress by key span). :param start_scanned: keys the partition had scanned before this
        attempt (its checkpoint's ``keys_scanned``).
    """

    label: str
    lo: int
    hi: int
    start_watermark: int
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    rows: int = 0
    rows_estimate: int | None = None
    start_scanned: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def _by_rows(self, scanned: int | None) -> bool:
        return self.rows_estimate is not None and scanned is not None

    def rate_and_eta(self, watermark: int, scanned: int | None = None) -> tuple[float, float | None]:
        """``(keys/s over this attempt, ETA in seconds)``; the ETA is ``None`` before any progress."""
        elapsed = max(self.clock() - self.started, 1e-9)
        if self._by_rows(scanned):
            left = expected_rows(self.rows_estimate, scanned, self.lo, self.hi, watermark) - scanned
            rate = (scanned - self.start_scanned) / elapsed
        else:
            left = max(self.hi - watermark, 0)
            rate = (watermark - self.start_watermark) / elapsed
        return rate, (0.0 if left <= 0 else left / rate if rate > 0 else None)

    def percent(self, watermark: int, scanned: int | None = None) -> float:
        """Share of the partition done (%): rows scanned over :func:`expected_rows` (at most 99.9
        until the watermark reaches ``hi``), else the key span."""
        if watermark >= self.hi:
            return 100.0
        if self._by_rows(scanned):
            expected = expected_rows(self.rows_estimate, scanned, self.lo, self.hi, watermark)
            return min(99.9, 100.0 * scanned / expected) if expected > 0 else 0.0
        return 100.0 * (watermark - self.lo + 1) / max(self.hi - self.lo + 1, 1)

    def batch_line(self, batch_no: int, watermark: int, chunk_lo: int, chunk_hi: int, rows: int, seconds: float,
                   lag: float | None, throttle: str, scanned: int | None = None) -> str:
        """One line per batch: key range, rows, statement seconds, *effective* rows/s (rows this
        attempt over its wall time, throttled waits included), partition %, ETA, lag, throttle.
        ``scanned``: the partition's keys scanned so far (all attempts), for progress by rows."""
        self.rows += rows
        elapsed = max(self.clock() - self.started, 1e-9)
        _, eta = self.rate_and_eta(watermark, scanned)
        lag_s = f"{lag:.2f} s" if lag is not None else "n/a"
        return (f"{self.label} batch {batch_no}: keys ({chunk_lo}, {chunk_hi}] {rows} rows in {seconds:.3f} s; "
                f"effective {self.rows / elapsed:,.0f} rows/s; {self.percent(watermark, scanned):.1f}% done, "
                f"ETA {duration(eta)}; lag {lag_s}; throttle {THROTTLE_WORDS.get(throttle, throttle) if throttle else 'none'}")


@dataclass
class RunProgressLog:
    """The whole run's progress from the checkpoints, as seen by one partition: rows scanned over
    the plan's estimated rows (keys done over the planned key span without estimates), and an
    ETA from the progress since this tracker's first reading (so a resumed run does not count
    earlier attempts' keys as instant)."""

    clock: Callable[[], float] = time.monotonic
    every: float = RUN_PROGRESS_SECONDS
    _first: tuple[float, int] | None = None
    _last_line: float = float("-inf")

    def due(self) -> bool:
        return self.clock() - self._last_line >= self.every

    def line(self, partitions: Iterable[Any], rows_estimates: Mapping[int, int] | None = None) -> str:
        """``partitions``: checkpoint rows with ``partition_no``, ``lo``, ``hi``, ``watermark``,
        ``rows_written``, ``keys_scanned``, ``status``. ``rows_estimates``: partition number ->
        the plan's estimated rows; progress counts rows when every partition has one. Returns
        the line and restarts the interval."""
        parts = list(partitions)
        est = rows_estimates or {}
        if est and parts and all(est.get(p.partition_no) is not None for p in parts):
            # a finished partition counts what it scanned; the others their expected rows
            total = sum(p.keys_scanned if p.status == "done" else
                        expected_rows(est[p.partition_no], p.keys_scanned, p.lo, p.hi, p.watermark) for p in parts) or 1
            done = sum(p.keys_scanned for p in parts)
            what = "of the expected rows"
        else:
            total = sum(p.hi - p.lo + 1 for p in parts) or 1
            done = sum(min(max(p.watermark - p.lo + 1, 0), p.hi - p.lo + 1) for p in parts)
            what = "of the key span"
        rows = sum(p.rows_written for p in parts)
        finished = sum(p.status == "done" for p in parts)
        pct = 100.0 * done / total if finished == len(parts) else min(99.9, 100.0 * done / total)
        now = self.clock()
        if self._first is None:
            self._first = (now, done)
        t0, d0 = self._first
        rate = (done - d0) / (now - t0) if now > t0 else 0.0
        eta = (total - done) / rate if rate > 0 and done < total else None
        self._last_line = now
        return (f"run: {pct:.1f}% {what} done ({finished}/{len(parts)} partitions "
                f"finished, {rows:,} rows written); {rate:,.0f} keys/s; ETA {duration(eta)}")


def partition_summary(label: str, result: Mapping[str, Any]) -> str:
    """A partition attempt in words, from :class:`~zdt_backfill.copying.copier.PartitionResult` as a dict.

    ``p1 [500001..1000000]: copied 499,998 rows (scanned 500,000 keys in all) in 41.2 s this
    attempt, 12,130 rows/s; throttled 6.1 s (replica lag 4.0 s, rate ceiling 2.1 s);
    2 transient yields; resumed from key 730000.``
    """
    rows, secs = int(result.get("attempt_rows") or 0), float(result.get("attempt_seconds") or 0.0)
    progress = result.get("progress") or {}
    out = (f"{label}: copied {rows:,} rows in {result.get('attempt_batches', 0):,} batches in {duration(secs)} this "
           f"attempt, {rows / secs if secs > 0 else 0:,.0f} rows/s; partition total {int(progress.get('rows_written', 0)):,} "
           f"rows written of {int(progress.get('keys_scanned', 0)):,} keys scanned; "
           f"{throttled_words(result.get('throttled_seconds') or {})}")
    yields = int(result.get("retries") or 0)
    out += f"; {yields} transient yield{'s' if yields != 1 else ''}"
    if result.get("resumed_from") is not None:
        out += f"; resumed from key {result['resumed_from']}"
    lag = result.get("max_replica_lag_seconds")
    if lag:
        out += f"; replica lag at most {lag:.2f} s"
    return out + "."
