"""Pure decisions: the branch (seed thresholds) and the throttle; the rows/s limiter paces for real."""

import time

import pytest

from zdt_backfill.config import Thresholds
from zdt_backfill.lifecycle.decision import decide_branch, error_rate_pct
from zdt_backfill.signals.throttler import Limits, Readings, Throttler, decide

T = Thresholds()


def test_forward_only_when_nothing_is_left_after_repair():
    d = decide_branch(0, 0, 100_000, T)
    assert d.branch == "forward"


@pytest.mark.parametrize(
    "mismatches, data_errors, rows, branch, reason",
    [
        (11, 0, 100_000, "rollback", "error rate 0.0110% > 0.01%"),  # 0.011 % > 0.01 %
        (0, 11, 100_000, "rollback", "error rate"),  # data errors count too
        (10, 0, 100_000, "hold", "a human decides"),  # 0.01 %: not above the limit, not zero
        (1, 0, 100_000, "hold", "a human decides"),
        (0, 1, 0, "rollback", "error rate 100.0000%"),
    ],
)
def test_errors_roll_back_above_the_rate_and_hold_below_it(mismatches, data_errors, rows, branch, reason):
    d = decide_branch(mismatches, data_errors, rows, T)
    assert d.branch == branch and any(reason in r for r in d.reasons), d


def test_unexplained_checksum_difference_holds_for_a_human_never_forward():
    d = decide_branch(0, 0, 100_000, T, unexplained_ranges=1)
    assert d.branch == "hold" and "no differing key" in d.reasons[0]


def test_error_rate_boundary_is_exclusive():
    assert error_rate_pct(10, 100_000) == pytest.approx(0.01)
    assert decide_branch(10, 0, 100_000, T).branch == "hold"
    assert decide_branch(11, 0, 100_000, T).branch == "rollback"


def lag(name, seconds, status="ok", detail=""):
    from zdt_backfill.signals.lag import LagReading

    return LagReading(name, seconds, status, "heartbeat", detail)


L = Limits(max_lag_seconds=2.0, max_load={"threads_running": 25}, critical_load={"threads_running": 100},
           throttle_query_max=70)


@pytest.mark.parametrize(
    "readings, kind, reason",
    [
        (Readings(), "", ""),
        (Readings(lag=(lag("r", 0.5),)), "", ""),
        (Readings(lag=(lag("r", 3.2),)), "lag", "lag=3.2s>2s (r, heartbeat)"),
        (Readings(lag=(lag("r1", 0.1), lag("r2", None, "unreachable", "refused"))), "replica-unreachable",
         "replica-unreachable: r2 (refused)"),
        (Readings(lag=(lag("r", None, "unknown", "replication stopped"),)), "lag-unknown",
         "lag-unknown: r (replication stopped)"),
        (Readings(load={"threads_running": 31}), "load", "threads_running=31>=25"),
        (Readings(load={"threads_running": 24}), "", ""),
        (Readings(throttle_query=71.5), "throttle-query", "throttle_query=71.5>=70"),
        (Readings(throttle_query=float("nan")), "throttle-query", "throttle_query=nan>=70"),
        (Readings(paused=True, lag=(lag("r", 9.0),)), "paused", "paused by an operator"),
    ],
)
def test_decide_names_the_kind_and_the_figure(readings, kind, reason):
    d = decide(readings, L)
    assert (d.kind, d.reason, d.throttle, d.halt) == (kind, reason, bool(kind), False)


def test_critical_load_comes_first_and_drops_to_one_partition_instead_of_halting():
    d = decide(Readings(load={"threads_running": 120}, paused=True), L)
    assert (d.throttle, d.halt, d.enter_single, d.kind) == (True, False, True, "critical-load")
    assert d.reason == "critical threads_running=120>=100"


SINGLE = {"reason": "critical threads_running=120>=100", "baseline": 2.0}


def test_in_single_partition_mode_only_the_active_partition_goes():
    assert not decide(Readings(load={"threads_running": 3}, single=SINGLE, active=True), L).throttle
    d = decide(Readings(load={"threads_running": 3}, single=SINGLE, active=False), L)
    assert (d.throttle, d.kind, d.halt) == (True, "critical-load", False) and "until row-lock waits" in d.reason
    # still critical (the same episode): every partition holds, none enters the mode again
    d = decide(Readings(load={"threads_running": 120}, single=SINGLE, active=True), L)
    assert (d.throttle, d.halt, d.enter_single) == (True, False, False)


def test_critical_load_again_after_it_cleared_in_single_partition_mode_halts():
    d = decide(Readings(load={"threads_running": 120}, single=SINGLE, active=True, critical_recovered=True), L)
    assert d.halt and d.kind == "critical" and "again with one partition active" in d.reason


class FakeMode:
    """The run's control row and checkpoints, in memory, shared by two partitions' throttlers."""

    def __init__(self):
        self.control: dict = {}
        self.done: set[int] = set()
        self.log: list[tuple] = []

    def for_partition(self, index, clock):
        from zdt_backfill.signals.critical import CriticalLoadMode

        def write(value):
            if value is None:
                self.control.pop("single_partition", None)
                self.log.append(("leave", index))
            else:
                self.control["single_partition"] = value
                self.log.append(("enter", index, value["baseline"]))

        return CriticalLoadMode(index, "row_lock_waits_per_s", lambda: self.control.get("single_partition"), write,
                                lambda: min({0, 1} - self.done, default=index), clock=clock)


class FakeLoad:
    def __init__(self, script):
        self.script = list(script)

    def read(self):
        return dict(self.script.pop(0) if len(self.script) > 1 else self.script[0])


def test_critical_load_drops_to_one_partition_until_row_lock_waits_return_to_baseline():
    clock, now, sleep = fake_time()
    mode = FakeMode()
    limits = Limits(critical_load={"threads_running": 100})
    quiet = {"threads_running": 5, "row_lock_waits_per_s": 2.0}
    # p0: quiet (the baseline, median 2), critical twice, then busy row locks, then back to baseline
    p0 = Throttler(None, 100, clock=now, sleep=sleep, limits=limits, control=lambda: dict(mode.control),
                   load=FakeLoad([quiet] * 4 + [{"threads_running": 150, "row_lock_waits_per_s": 40.0}] * 2
                                 + [{"threads_running": 5, "row_lock_waits_per_s": 9.0}]
                                 + [quiet] * 3 + [quiet]), critical=mode.for_partition(0, now))
    p1 = Throttler(None, 100, clock=now, sleep=sleep, limits=limits, control=lambda: dict(mode.control),
                   load=FakeLoad([quiet]), critical=mode.for_partition(1, now))
    for _ in range(4):  # four quiet readings: the baseline
        p0.before_batch()
        clock[0] += 1
    p0.before_batch()  # critical: enters the mode, holds while critical, then goes (it is the active one)
    assert mode.log[0] == ("enter", 0, 2.0) and p0.throttled_seconds["critical-load"] == pytest.approx(1.0)
    assert mode.control["single_partition"]["baseline"] == 2.0
    # p1 is not the lowest-numbered partition running: it holds until p0 sees 3 readings <= 2*1.1+1
    clock[0] += 1
    p0.before_batch()  # the first reading at baseline (9.0 > 3.2 did not count)
    for _ in range(3):
        clock[0] += 1
        p0.before_batch()
    assert mode.log[-1][0] == "leave" and "single_partition" not in mode.control
    p1.before_batch()
    assert p1.throttled_seconds["critical-load"] == 0  # the mode is over: p1 goes


def test_the_partition_holding_in_single_mode_resumes_when_the_active_one_is_done():
    clock, now, sleep = fake_time()
    mode = FakeMode()
    mode.control["single_partition"] = dict(SINGLE)
    p1 = Throttler(None, 100, clock=now, sleep=sleep, limits=Limits(critical_load={"threads_running": 100}),
                   control=lambda: dict(mode.control), load=FakeLoad([{"threads_running": 5}]),
                   critical=mode.for_partition(1, now))

    def finish_p0(seconds):
        sleep(seconds)
        if clock[0] >= 3:
            mode.done.add(0)

    p1.sleep = finish_p0
    p1.before_batch()
    assert 3 <= p1.throttled_seconds["critical-load"] <= 6  # held until p0 was done (re-read every 2 s)


def test_critical_load_again_after_it_cleared_halts_the_throttler():
    from zdt_backfill.signals.critical import CriticalLoadError

    clock, now, sleep = fake_time()
    mode = FakeMode()
    limits = Limits(critical_load={"threads_running": 100})
    t = Throttler(None, 100, clock=now, sleep=sleep, limits=limits, control=lambda: dict(mode.control),
                  load=FakeLoad([{"threads_running": 150}, {"threads_running": 5, "row_lock_waits_per_s": 50.0},
                                 {"threads_running": 150}]), critical=mode.for_partition(0, now))
    t.before_batch()  # enters, holds, then goes on the quiet reading (row locks still high: mode stays)
    clock[0] += 1
    with pytest.raises(CriticalLoadError, match="again with one partition active"):
        t.before_batch()


def test_gates_that_are_off_never_throttle():
    off = Limits()
    assert not decide(Readings(lag=(lag("r", 30.0), lag("x", None)), load={"threads_running": 999}), off).throttle


class FakeProbe:
    def __init__(self, readings):
        self.name = "replica1"
        self.readings = list(readings)

    def measure(self):
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def fake_time():
    clock = [0.0]
    return clock, (lambda: clock[0]), (lambda s: clock.__setitem__(0, clock[0] + s))


def test_lag_gate_holds_until_the_replica_catches_up():
    clock, now, sleep = fake_time()
    t = Throttler(None, 100, [FakeProbe([5.0, 4.0, 1.0])], max_lag_seconds=2.0, clock=now, sleep=sleep)
    t.before_batch()
    assert t.throttled_seconds["lag"] == pytest.approx(1.0)  # two sleeps of 0.5 s
    assert t.max_lag_seen == 5.0


def test_lag_above_the_halt_threshold_sustained_halts_but_a_spike_only_throttles():
    from zdt_backfill.signals.throttler import SustainedLagError

    # a 60 s spike at 8 s lag, then caught up: throttled, never halted (grace 300 s)
    clock, now, sleep = fake_time()
    t = Throttler(None, 100, [FakeProbe([8.0] * 120 + [1.0])], max_lag_seconds=2.0, clock=now, sleep=sleep,
                  halt_lag_seconds=5.0, halt_lag_after_seconds=300.0)
    t.before_batch()
    assert t.throttled_seconds["lag"] == pytest.approx(60.0)
    # lag that stays at 8 s halts after 300 s, before the 600 s hold deadline
    clock, now, sleep = fake_time()
    t = Throttler(None, 100, [FakeProbe([8.0])], max_lag_seconds=2.0, clock=now, sleep=sleep,
                  halt_lag_seconds=5.0, halt_lag_after_seconds=300.0)
    with pytest.raises(SustainedLagError, match=r"lag 8.0s > 5s for 300s"):
        t.before_batch()
    assert clock[0] == pytest.approx(300.0)
    # 4 s lag (over the gate, under the halt threshold) holds until the hold deadline instead
    clock, now, sleep = fake_time()
    t = Throttler(None, 100, [FakeProbe([4.0])], max_lag_seconds=2.0, max_wait_seconds=400.0, clock=now, sleep=sleep,
                  halt_lag_seconds=5.0, halt_lag_after_seconds=300.0)
    from zdt_backfill.errors import ThrottleTimeoutError

    with pytest.raises(ThrottleTimeoutError):
        t.before_batch()


def test_lag_gate_gives_up_after_max_wait_but_a_pause_has_no_deadline():
    from zdt_backfill.errors import ThrottleTimeoutError

    clock, now, sleep = fake_time()
    t = Throttler(None, 100, [FakeProbe([None])], max_lag_seconds=2.0, max_wait_seconds=3.0, clock=now, sleep=sleep)
    with pytest.raises(ThrottleTimeoutError, match="lag-unknown"):
        t.before_batch()
    ctl = {"pause": True}
    clock2, now2, sleep2 = fake_time()

    def sleeping(s):
        sleep2(s)
        if clock2[0] > 600:
            ctl["pause"] = False  # an operator resumes after ten minutes

    t = Throttler(None, 100, max_wait_seconds=3.0, clock=now2, sleep=sleeping, control=lambda: dict(ctl))
    t.before_batch()
    assert t.throttled_seconds["paused"] == pytest.approx(600.5, abs=0.6)


def test_a_held_throttle_logs_its_kind_once_and_its_figure_every_ten_seconds(caplog):
    import logging

    clock, now, sleep = fake_time()
    readings = [5.0 + i * 0.01 for i in range(80)] + [0.1]
    t = Throttler(None, 100, [FakeProbe(readings)], max_lag_seconds=2.0, clock=now, sleep=sleep)
    with caplog.at_level(logging.INFO, logger="zdt_backfill.signals.throttler"):
        t.before_batch()
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("throttle: lag=") for m in lines) == 1  # the change of kind, once
    assert 3 <= sum(m.startswith("throttle held") for m in lines) <= 4  # 40 s held: every 10 s
    assert lines[-1].startswith("throttle released (was lag)")


def test_live_control_changes_the_rate_ceiling():
    ctl = {"max_rows_per_second": 1000}
    t = Throttler(None, 100, control=lambda: dict(ctl))
    t.before_batch()
    assert t.rate == 1000
    ctl["max_rows_per_second"] = 0  # 0 turns it off
    t._last_check = float("-inf")
    t.before_batch()
    assert t.rate is None


def test_a_stop_request_raises():
    from zdt_backfill.signals.throttler import StopRequestedError

    with pytest.raises(StopRequestedError):
        Throttler(None, 100, control=lambda: {"stop": True}).before_batch()


def test_rate_ceiling_paces_batches_on_keys_scanned():
    # 2,000 rows/s with batches of 500 keys: the bucket starts full (one batch), then each
    # further batch must wait ~0.25 s; three more batches need >= ~0.7 s in all, whatever
    # the batches inserted (a re-run over a full target inserts nothing and still waits).
    t = Throttler(2_000, 500)
    start = time.monotonic()
    for _ in range(4):
        t.after_batch(500)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.7
    assert t.throttled_seconds["rate"] >= 0.7


def test_the_ceiling_is_shared_by_the_planned_partitions():
    from zdt_backfill.config import RunConfig

    c = RunConfig.from_params({"conn_id": "c", "source_table": "a", "target_table": "b", "columns": {"x": "y"},
                               "profile": "prod", "partitions": 4, "allow_unwatched_ramp": True})
    assert c.rate_per_partition() == 125.0  # asked for 4
    assert c.rate_per_partition(planned=1) == 500.0  # a small table got one partition: it gets it all


def test_batch_sizer_follows_spirits_rule():
    from zdt_backfill.copying.chunker import BatchSizer

    s = BatchSizer(1_000, 0.5, 100, 10_000)
    assert s.feedback(1_000, 0.1) == 1_500  # 5x too fast: grows, at most 1.5x a step
    assert s.feedback(1_500, 0.15) == 2_250
    for _ in range(10):
        s.feedback(s.size, s.size * 0.0001)  # 0.1 ms a key: aims the slow end at 0.7 x 0.5 s = 3,500 keys
    assert abs(s.size - 3_500) <= 1
    assert s.feedback(s.size, 2.6) == 349  # a batch took over 5x the target: shrink 10x at once
    assert s.halve() and s.size == 174
    while s.halve():
        pass
    assert s.size == 100  # the floor
    fixed = BatchSizer(1_000, 0, 1_000, 1_000)
    assert fixed.feedback(1_000, 30.0) == 1_000  # target 0: fixed size
    # a time-targeted run starts at 1,000 rows (pt-osc, Spirit) and grows 1.5x a batch toward the target
    big = BatchSizer(50_000, 0.5, 1_000, 50_000)
    assert big.size == 1_000
    sizes = [big.size] + [big.feedback(big.size, big.size * 1e-6) for _ in range(10)]
    assert sizes == [1_000, 1_500, 2_250, 3_375, 5_062, 7_593, 11_389, 17_083, 25_624, 38_436, 50_000]
    assert BatchSizer(50_000, 0, 1_000, 50_000).size == 50_000  # fixed size: batch_size from the first batch
    assert BatchSizer(50_000, 0.5, 5_000, 50_000).size == 5_000  # never under the floor


def test_load_collector_turns_counters_into_rates():
    from zdt_backfill.dialects import PostgresDialect
    from zdt_backfill.signals.load import LoadCollector

    class FakeDialect(PostgresDialect):
        def load_sql(self, schema, tables):
            return "x", ()

    rows = [{"active_backends": 3, "deadlocks": 10, "wal_bytes": 1_000}, {"active_backends": 4, "deadlocks": 12,
                                                                            "wal_bytes": 5_000}]

    class FakeDb:
        dialect = FakeDialect()
        schema = None

        def connect(self):
            return type("C", (), {"rollback": lambda self: None, "close": lambda self: None})()

        def query_dicts(self, conn, sql, params):
            return [rows.pop(0)]

    clock = [0.0]
    lc = LoadCollector(FakeDb(), ("a",), clock=lambda: clock[0])
    first = lc.read()
    assert first["active_backends"] == 3 and first["deadlocks_per_s"] is None
    clock[0] = 2.0
    second = lc.read()
    assert second["deadlocks_per_s"] == 1.0 and second["wal_bytes_per_s"] == 2_000.0


def test_the_ceiling_follows_the_work_when_a_partition_finishes():
    clock, now, sleep = fake_time()
    running = [2]
    t = Throttler(1000, 100, clock=now, sleep=sleep, share=2, active_partitions=lambda: running[0])
    assert t.rate == 500  # half of the run's ceiling each
    t.after_batch(0)
    assert t.rate == 500
    running[0] = 1  # the other partition finished
    clock[0] += 4.0
    t.after_batch(0)
    assert t.rate == 500  # re-read every 5 s, not every batch
    clock[0] += 1.0
    t.after_batch(0)
    assert t.rate == 1000  # this partition took over the whole ceiling
    # live control sets the run's ceiling, shared as now
    t.control = lambda: {"max_rows_per_second": 300}
    t._apply_control(t.control())
    assert t.rate == 300


def test_a_siblings_trip_in_the_same_episode_joins_the_mode_and_a_trip_after_recovery_does_not():
    clock, now, sleep = fake_time()
    mode = FakeMode()
    mode.control["single_partition"] = dict(SINGLE)  # set by p1 whose batch was cancelled first
    p0 = Throttler(None, 100, clock=now, sleep=sleep, limits=Limits(critical_load={"threads_running": 100}),
                   control=lambda: dict(mode.control),
                   load=FakeLoad([{"threads_running": 150}, {"threads_running": 150}, {"threads_running": 5}]),
                   critical=mode.for_partition(0, now))
    p0.critical.join()  # p0's own batch was cancelled in the same episode: it joins, nothing is set again
    assert not p0.critical.recovered and mode.log == []
    p0.before_batch()  # holds while critical (no halt: the same episode), then goes: p0 is the lowest running
    assert p0.critical.recovered and p0.throttled_seconds["critical-load"] == pytest.approx(1.0)


def test_baseline_readings_count_only_while_the_active_partition_copies():
    clock, now, sleep = fake_time()
    mode = FakeMode()
    mode.control["single_partition"] = dict(SINGLE)
    vacuum = {"threads_running": 5, "vacuum_on_tables": 1, "row_lock_waits_per_s": 0.0}
    quiet = {"threads_running": 5, "vacuum_on_tables": 0, "row_lock_waits_per_s": 0.0}
    t = Throttler(None, 100, clock=now, sleep=sleep,
                  limits=Limits(max_load={"vacuum_on_tables": 1}, critical_load={"threads_running": 100}),
                  control=lambda: dict(mode.control), load=FakeLoad([vacuum] * 4 + [quiet]), critical=mode.for_partition(0, now))
    t.before_batch()  # held by autovacuum for four readings at row-lock baseline: they do not count
    assert "single_partition" in mode.control and t.throttled_seconds["load"] == pytest.approx(2.0)
    for _ in range(2):
        clock[0] += 1
        t.before_batch()
    assert mode.log[-1][0] == "leave"  # three readings while copying
