"""Pure helpers of `make bench`: percentiles, pgbench log parsing, open-loop schedules, ratios.

No database, no third-party import: tests/unit/test_bench_parse.py exercises them in `make test`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks.

    This is numpy's default ("linear", Hyndman & Fan type 7). ``None`` for no values.
    """
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def parse_pgbench_log(lines: Iterable[str]) -> tuple[list[float], int]:
    """Per-transaction latencies (ms) from pgbench ``-l`` logs, and the count of skipped/failed ones.

    Line format (PostgreSQL 15, ``pgbench -l`` without ``--aggregate-interval``)::

        client_id transaction_no time script_no time_epoch time_us [schedule_lag retries]

    ``time`` is the latency in microseconds; with ``--rate`` pgbench measures it from the
    transaction's *scheduled* start, so coordinated omission is already accounted for.
    ``time`` is ``skipped`` (over ``--latency-limit``) or ``failed`` for transactions that did not
    complete: they are counted, not timed. Blank or malformed lines raise ``ValueError``.
    """
    latencies: list[float] = []
    not_done = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 6:
            raise ValueError(f"not a pgbench -l line: {line!r}")
        if fields[2] in ("skipped", "failed"):
            not_done += 1
            continue
        latencies.append(int(fields[2]) / 1000.0)
    return latencies, not_done


def open_loop_schedule(rate_per_s: float, seconds: float) -> list[float]:
    """Scheduled start offsets (s) of a fixed-rate, open-loop load: ``i / rate`` for i < rate*seconds.

    Latency is then measured from the scheduled start, not from when a worker got to it, so a
    stall shows as latency for every request it delayed (Gil Tene's "coordinated omission").
    """
    if rate_per_s <= 0 or seconds <= 0:
        raise ValueError("rate and seconds must be positive")
    n = int(round(rate_per_s * seconds))
    return [i / rate_per_s for i in range(n)]


def rows_per_s(rows: int, seconds: float) -> float | None:
    """``rows / seconds`` rounded to whole rows/s; ``None`` when nothing was timed."""
    return round(rows / seconds) if seconds and seconds > 0 else None


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded; ``None`` when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def throttle_error_pct(target: float, achieved: float) -> float:
    """How far ``achieved`` rows/s is from ``target``, in percent of the target (signed)."""
    return round((achieved - target) / target * 100.0, 2)
