"""The pure helpers of `make bench` (bench/stats.py): percentiles, pgbench logs, open-loop schedules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import stats  # noqa: E402


def test_percentile_interpolates_like_numpy_linear():
    xs = [float(x) for x in range(1, 101)]  # 1..100
    assert stats.percentile(xs, 50) == pytest.approx(50.5)
    assert stats.percentile(xs, 99) == pytest.approx(99.01)
    assert stats.percentile(xs, 0) == 1.0 and stats.percentile(xs, 100) == 100.0
    assert stats.percentile([3.0], 99) == 3.0
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile(xs, 101)


def test_parse_pgbench_log_reads_latency_us_and_counts_skipped_and_failed():
    lines = [
        "0 0 1532 0 1763800000 123456 210",
        "1 0 2500000 0 1763800000 223456 2400000",  # a 2.5 s stall, measured from the scheduled start
        "2 0 skipped 0 1763800001 0 5000",
        "3 0 failed 0 1763800001 10 0",
        "",
    ]
    latencies, not_done = stats.parse_pgbench_log(lines)
    assert latencies == [1.532, 2500.0]
    assert not_done == 2
    with pytest.raises(ValueError):
        stats.parse_pgbench_log(["garbage"])


def test_open_loop_schedule_is_fixed_rate_and_independent_of_service_time():
    s = stats.open_loop_schedule(200, 2.5)
    assert len(s) == 500
    assert s[0] == 0.0 and s[1] == pytest.approx(0.005) and s[-1] == pytest.approx(499 / 200)
    with pytest.raises(ValueError):
        stats.open_loop_schedule(0, 1)


def test_ratios_and_throttle_error():
    assert stats.rows_per_s(1_000_000, 4.0) == 250_000
    assert stats.rows_per_s(10, 0) is None
    assert stats.ratio(108_000, 217_000) == 0.498
    assert stats.ratio(None, 1) is None and stats.ratio(1, 0) is None
    assert stats.throttle_error_pct(20_000, 19_100) == -4.5
