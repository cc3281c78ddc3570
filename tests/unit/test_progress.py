"""Task-log lines: per-batch effective rate, an ETA right after a resume, the run's progress
line and the summary in words (fake clock)."""

from types import SimpleNamespace

from zdt_backfill.copying.progress import (
    PartitionProgressLog,
    RunProgressLog,
    duration,
    partition_summary,
    throttled_words,
)


def clock_at(t):
    now = [t]
    return now, (lambda: now[0])


def test_eta_right_after_a_resume_counts_only_this_attempts_keys():
    now, clock = clock_at(100.0)
    # partition 1..10,000 resumed at 6,000: 4,000 keys left
    lines = PartitionProgressLog("p0 [1..10000]", 1, 10_000, 6_000, clock=clock)
    now[0] += 2.0  # 1,000 keys in 2 s (throttled waits included): 500 keys/s
    line = lines.batch_line(7, 7_000, 6_000, 7_000, 1_000, 0.05, 0.05, "rate")
    assert "p0 [1..10000] batch 7: keys (6000, 7000] 1000 rows in 0.050 s" in line
    assert "effective 500 rows/s" in line and "70.0% done" in line
    assert "ETA 6.0 s" in line  # 3,000 keys left at 500 keys/s: not 0 s and climbing
    assert "lag 0.05 s" in line and "throttle rate ceiling" in line
    rate, eta = lines.rate_and_eta(7_000)
    assert rate == 500 and eta == 6.0


def test_a_fresh_partition_with_no_progress_has_no_eta_yet():
    now, clock = clock_at(0.0)
    lines = PartitionProgressLog("p1 [1..100]", 1, 100, 0, clock=clock)
    assert lines.rate_and_eta(0) == (0.0, None)
    assert "ETA unknown" in lines.batch_line(1, 0, 0, 0, 0, 0.0, None, "")


def part(lo, hi, watermark, rows, status="copying"):
    return SimpleNamespace(lo=lo, hi=hi, watermark=watermark, rows_written=rows, status=status)


def test_run_progress_line_uses_the_rate_since_its_first_reading():
    now, clock = clock_at(0.0)
    run = RunProgressLog(clock=clock, every=30)
    assert run.due()
    # a resumed run: half already done by earlier attempts
    first = run.line([part(1, 1000, 500, 500), part(1001, 2000, 1500, 500)])
    assert first.startswith("run: 50.0% of the key span done (0/2 partitions finished, 1,000 rows written)")
    assert "ETA unknown" in first and not run.due()
    now[0] = 30.0
    assert run.due()
    line = run.line([part(1, 1000, 1000, 1000, "done"), part(1001, 2000, 1750, 750)])
    # 750 keys in 30 s since the first reading: 25 keys/s, 250 keys left: 10 s
    assert "87.5%" in line and "1/2 partitions finished" in line and "25 keys/s" in line and "ETA 10.0 s" in line


def test_durations_and_throttled_time_read_as_words():
    assert duration(42.14) == "42.1 s" and duration(725) == "12 min 5 s" and duration(12_000) == "3 h 20 min"
    assert throttled_words({}) == "never throttled"
    assert throttled_words({"rate": 2.1, "lag": 4.0, "load": 0.0}) == \
        "throttled 6.1 s (replica lag 4.0 s, rate ceiling 2.1 s)"


def test_partition_summary_is_words_not_dicts():
    s = partition_summary("p1 [500001..1000000]", {
        "attempt_rows": 269_999, "attempt_batches": 270, "attempt_seconds": 22.5,
        "progress": {"rows_written": 499_998, "keys_scanned": 500_000},
        "throttled_seconds": {"rate": 2.1, "lag": 4.0}, "retries": 2, "resumed_from": 730_000,
        "max_replica_lag_seconds": 0.4})
    assert s == ("p1 [500001..1000000]: copied 269,999 rows in 270 batches in 22.5 s this attempt, 12,000 rows/s; "
                 "partition total 499,998 rows written of 500,000 keys scanned; throttled 6.1 s (replica lag 4.0 s, "
                 "rate ceiling 2.1 s); 2 transient yields; resumed from key 730000; replica lag at most 0.40 s.")
    assert "{" not in s


def test_sparse_keys_count_rows_against_the_plans_estimate_not_the_key_span():
    now, clock = clock_at(0.0)
    # keys 1,400,477 .. 2*10^12 holding ~100,000 rows, most of them near the start
    lines = PartitionProgressLog("p2 [1400477..2000000000100]", 1_400_477, 2_000_000_000_100, 1_400_476,
                                 clock=clock, rows_estimate=100_000, start_scanned=0)
    now[0] = 2.0
    line = lines.batch_line(7, 1_545_936, 1_475_936, 1_545_936, 10_000, 0.02, None, "", scanned=20_000)
    assert "20.0% done" in line and "ETA 8.0 s" in line  # 80,000 rows left at 10,000 keys/s
    # the key span would say 0.0 % done and an ETA of months
    assert "0.0% done" in lines.batch_line(8, 1_545_936, 1_475_936, 1_545_936, 0, 0.02, None, "")
    # more rows than estimated (low statistics): the rest of the range at the density seen so far,
    # here about the same again (110,000 rows over the first half of the key span)
    line = lines.batch_line(9, 10**12, 1_545_936, 10**12, 90_000, 0.02, None, "", scanned=110_000)
    assert "50.0% done" in line, line
    assert "100.0% done, ETA 0.0 s" in lines.batch_line(10, 2_000_000_000_100, 10**12, 2_000_000_000_100, 5, 0.01,
                                                        None, "", scanned=110_005)


def test_run_progress_line_counts_rows_against_the_plans_estimates():
    now, clock = clock_at(0.0)
    run = RunProgressLog(clock=clock, every=30)

    def cp(no, lo, hi, watermark, scanned, status="copying"):
        return SimpleNamespace(partition_no=no, lo=lo, hi=hi, watermark=watermark, rows_written=scanned,
                               keys_scanned=scanned, status=status)

    est = {0: 100_000, 1: 100_000}
    first = run.line([cp(0, 1, 700_000, 700_000, 100_000, "done"), cp(1, 700_001, 2 * 10**12, 800_000, 10_000)], est)
    # p0 done, p1 10 % of its estimated rows: 55 %, where the key span says 0.0 %
    assert first.startswith("run: 55.0% of the expected rows done (1/2 partitions finished, 110,000 rows written)")
    now[0] = 30.0
    line = run.line([cp(0, 1, 700_000, 700_000, 100_000, "done"), cp(1, 700_001, 2 * 10**12, 10**12, 40_000)], est)
    assert "70.0%" in line and "1,000 keys/s" in line and "ETA 1 min 0 s" in line
    # p1 past its estimate (low statistics): the rest of its range at the density seen so far
    # (120,000 rows over keys 700,001..1,000,700,000: the same again for the other half of the span)
    line = run.line([cp(0, 1, 700_000, 700_000, 100_000, "done"), cp(1, 700_001, 2 * 10**12, 10**12, 120_000)], est)
    assert "run: 64.7% of the expected rows" in line, line
    # a partition without an estimate (its plan event gone): the whole line falls back to the key span
    assert "of the key span" in run.line([cp(0, 1, 10, 5, 5)], {})
