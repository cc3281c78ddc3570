"""Pure decisions: the branch (seed thresholds) and the throttle; the rows/s limiter paces for real."""

import time

import pytest

from zdt_backfill.config import Thresholds
from zdt_backfill.decision import decide_branch, error_rate_pct
from zdt_backfill.throttler import Throttler, decide

T = Thresholds()


def test_forward_when_every_condition_holds():
    d = decide_branch(100.0, True, 0, 100_000, 0.3, T)
    assert d.branch == "contract"


@pytest.mark.parametrize(
    "match, errors, rows, lag, reason",
    [
        (99.98, 0, 100_000, 0.0, "checksum match"),
        (100.0, 11, 100_000, 0.0, "error rate"),  # 0.011 % > 0.01 %
        (100.0, 0, 100_000, 6.0, "replica lag 6.0s > 5"),
        (100.0, 0, 100_000, 3.0, "forward needs less"),
        (100.0, 0, 100_000, None, "unreachable"),
    ],
)
def test_rollback_on_any_failed_condition(match, errors, rows, lag, reason):
    d = decide_branch(match, True, errors, rows, lag, T)
    assert d.branch == "rollback" and any(reason in r for r in d.reasons)


def test_error_rate_boundary_is_exclusive():
    assert error_rate_pct(10, 100_000) == pytest.approx(0.01)
    assert decide_branch(100.0, True, 10, 100_000, 0.0, T).branch == "contract"


def test_throttle_decide_reasons():
    assert decide(None, {}, 2.0).throttle is False
    assert decide(0.5, {"r": 0.5}, 2.0).throttle is False
    d = decide(3.2, {"r": 3.2}, 2.0)
    assert d.throttle and d.reason == "replica-lag=3.2s>2s"
    d = decide(None, {"r1": 0.1, "r2": None}, 2.0)
    assert d.throttle and d.reason == "replica-unreachable=r2"
    assert decide(30.0, {"r": 30.0}, None).throttle is False  # gate off


class FakeProbe:
    def __init__(self, readings):
        self.name = "replica1"
        self.readings = list(readings)

    def measure(self):
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def test_lag_gate_holds_until_the_replica_catches_up():
    clock = [0.0]
    t = Throttler(None, 100, [FakeProbe([5.0, 4.0, 1.0])], max_lag_seconds=2.0,
                  clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    t.before_batch()
    assert t.throttled_seconds["replica-lag"] == pytest.approx(1.0)  # two sleeps of 0.5 s
    assert t.max_lag_seen == 5.0


def test_lag_gate_gives_up_after_max_wait():
    from zdt_backfill.errors import ThrottleTimeoutError

    clock = [0.0]
    t = Throttler(None, 100, [FakeProbe([None])], max_lag_seconds=2.0, max_wait_seconds=3.0,
                  clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    with pytest.raises(ThrottleTimeoutError, match="replica-unreachable"):
        t.before_batch()


def test_rate_ceiling_paces_batches():
    # 2,000 rows/s with batches of 500: the bucket starts full (one batch), then each
    # further batch must wait ~0.25 s; three more batches need >= ~0.7 s in all.
    t = Throttler(2_000, 500)
    start = time.monotonic()
    for _ in range(4):
        t.after_batch(500)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.7
    assert t.throttled_seconds["rate"] >= 0.7


def test_a_checksum_difference_nobody_can_explain_rolls_back():
    d = decide_branch(100.0, True, 0, 1_000, 0.0, T, unexplained_ranges=1)
    assert d.branch == "rollback" and "no differing key" in d.reasons[0]
