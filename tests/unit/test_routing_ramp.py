"""The seed's ramp (1 % of reads, roll back above 0.1 % 5xx) on a fake clock, store and signal."""

from __future__ import annotations

import json
import logging
import math

import pytest

from zdt_backfill.errors import ConfigError
from zdt_backfill.routing.flags import LEGACY, NEW, FlagValue, HttpFlagStore, TableFlagStore, flag_store_from_config
from zdt_backfill.routing.ramp import RampResult, ramp
from zdt_backfill.signals.errorsignal import HttpErrorSignal, SqlErrorSignal

STEP = FlagValue("new", 1)


class FakeClock:
    def __init__(self):
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


class FakeStore:
    name = "fake"

    def __init__(self, initial=None):
        self.value = initial
        self.sets: list[tuple[str, FlagValue, str]] = []

    def get(self, flag):
        return self.value

    def set(self, flag, value, run_id):
        self.sets.append((flag, value, run_id))
        self.value = value

    @property
    def values(self):
        return [v for _, v, _ in self.sets]


class Scripted:
    """Returns the scripted readings in order (the last one repeats); records when it was read."""

    name = "scripted"

    def __init__(self, clock, readings):
        self.clock = clock
        self.readings = list(readings)
        self.read_at: list[float] = []

    def read(self):
        self.read_at.append(self.clock())
        value = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        if isinstance(value, BaseException):
            raise value
        return value


def run(store, signal, clock, **kw):
    kw.setdefault("watch_seconds", 60.0)
    kw.setdefault("poll_seconds", 5.0)
    return ramp(store, "users_read_path", "run-1", signal, clock=clock, sleep=clock.sleep, **kw)


def test_flag_value_shapes():
    assert LEGACY == FlagValue("legacy", 0) and NEW == FlagValue("new", 100)
    assert STEP.to_dict() == {"path": "new", "percent": 1}
    assert FlagValue.from_dict({"path": "new", "percent": 1, "run_id": "x"}) == STEP
    assert FlagValue.from_dict({"path": "new"}) == NEW and FlagValue.from_dict({"path": "legacy"}) == LEGACY
    assert FlagValue.from_dict({"path": "new", "percent": 1.0}) == STEP
    for bad in ({"path": "old"}, {"path": "new", "percent": 101}, {"path": "new", "percent": 1.5},
                {"path": "legacy", "percent": 5}, {"percent": 1}, [1]):
        with pytest.raises(ValueError):
            FlagValue.from_dict(bad)


def test_healthy_readings_end_at_100_percent():
    clock = FakeClock()
    store = FakeStore(LEGACY)
    signal = Scripted(clock, [0.0, 0.05, 0.1, 0.02])  # 0.1 is not > 0.1
    r = run(store, signal, clock)
    assert r.ok and r.final == NEW
    assert store.values == [STEP, NEW]
    assert all(run_id == "run-1" and flag == "users_read_path" for flag, _, run_id in store.sets)
    # read at once, every 5 s, and at the end of the 60 s window
    assert [t - 1000.0 for t in signal.read_at] == [5.0 * i for i in range(13)]
    assert len(r.readings) == 13 and r.readings[0] == (0.0, 0.0)
    assert "at most 0.1% <= 0.1% over 60s at 1% of reads (13 readings)" in r.reason
    assert [c["to"] for c in r.changes] == [STEP.to_dict(), NEW.to_dict()]
    assert r.changes[0]["from"] == LEGACY.to_dict() and r.changes[1]["from"] == STEP.to_dict()


def test_a_reading_over_the_limit_flips_back_to_legacy_at_once():
    clock = FakeClock()
    store = FakeStore(None)
    signal = Scripted(clock, [0.0, 0.02, 0.5, 0.0])
    r = run(store, signal, clock)
    assert not r.ok and r.final == LEGACY
    assert r.reason == "5xx rate 0.5% > 0.1% at 1% of reads"
    assert store.values == [STEP, LEGACY]
    assert r.readings == [(0.0, 0.0), (5.0, 0.02), (10.0, 0.5)]
    assert clock.t - 1000.0 == 10.0  # no more waiting after the bad reading
    d = r.to_dict()
    assert d["readings"] == [[0.0, 0.0], [5.0, 0.02], [10.0, 0.5]] and d["final"] == {"path": "legacy", "percent": 0}
    assert d["changes"][0]["from"] is None and d["ok"] is False
    json.dumps(d)


@pytest.mark.parametrize("bad", [math.nan, None, "0.01", RuntimeError("metrics down"), -1.0])
def test_an_unreadable_reading_flips_back(bad):
    clock = FakeClock()
    store = FakeStore(LEGACY)
    r = run(store, Scripted(clock, [0.0, bad, 0.0]), clock)
    assert not r.ok and r.final == LEGACY
    assert "unreadable" in r.reason and "treated as failing" in r.reason
    assert store.values == [STEP, LEGACY]
    assert math.isnan(r.readings[-1][1])
    assert r.to_dict()["readings"][-1] == [5.0, None]
    json.dumps(r.to_dict(), allow_nan=False)


def test_no_signal_goes_to_100_percent_after_the_watch(caplog):
    clock = FakeClock()
    store = FakeStore(LEGACY)
    with caplog.at_level(logging.INFO, logger="zdt_backfill.routing.ramp"):
        r = run(store, None, clock, watch_seconds=30.0, poll_seconds=10.0)
    assert r.ok and r.final == NEW and r.readings == [] and r.signal is None
    assert store.values == [STEP, NEW]
    assert clock.t - 1000.0 == 30.0
    assert "unwatched" in r.reason
    assert any("UNWATCHED" in rec.message and rec.levelno == logging.WARNING for rec in caplog.records)


def test_every_change_is_logged_before_it_is_made_with_old_and_new(caplog):
    clock = FakeClock()
    events: list[str] = []

    class Recording(FakeStore):
        def set(self, flag, value, run_id):
            events.append(f"set {value}")
            super().set(flag, value, run_id)

    class Handler(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("routing flag users_read_path (fake):"):
                events.append(record.getMessage())

    logger = logging.getLogger("test_routing_ramp")
    logger.setLevel(logging.INFO)
    logger.addHandler(Handler())
    run(Recording(LEGACY), Scripted(clock, [0.0, 0.3]), clock, log=logger)
    assert events[0].startswith("routing flag users_read_path (fake): legacy@0% -> new@1%")
    assert events[1] == "set new@1%"
    assert events[2].startswith("routing flag users_read_path (fake): new@1% -> legacy@0%")
    assert events[3] == "set legacy@0%"


def test_watch_zero_still_takes_one_reading():
    clock = FakeClock()
    store = FakeStore(LEGACY)
    signal = Scripted(clock, [0.01])
    r = run(store, signal, clock, watch_seconds=0)
    assert r.ok and len(r.readings) == 1 and clock.sleeps == []
    assert store.values == [STEP, NEW]
    clock, store = FakeClock(), FakeStore(LEGACY)
    r = run(store, Scripted(clock, [0.2]), clock, watch_seconds=0)
    assert not r.ok and store.values == [STEP, LEGACY]


def test_poll_does_not_overshoot_the_window():
    clock = FakeClock()
    signal = Scripted(clock, [0.0])
    r = run(FakeStore(LEGACY), signal, clock, watch_seconds=12.0, poll_seconds=5.0)
    assert r.ok and clock.sleeps == [5.0, 5.0, 2.0]
    assert [t for t, _ in r.readings] == [0.0, 5.0, 10.0, 12.0]


def test_other_ramp_percent_and_threshold():
    clock = FakeClock()
    store = FakeStore(LEGACY)
    r = run(store, Scripted(clock, [0.4]), clock, ramp_percent=5, max_error_rate_pct=0.5)
    assert r.ok and store.values == [FlagValue("new", 5), NEW]
    clock, store = FakeClock(), FakeStore(LEGACY)
    r = run(store, Scripted(clock, [0.0, 0.6]), clock, ramp_percent=5, max_error_rate_pct=0.5)
    assert r.reason == "5xx rate 0.6% > 0.5% at 5% of reads" and store.values == [FlagValue("new", 5), LEGACY]


def test_an_interrupted_watch_rolls_back_then_raises():
    clock = FakeClock()
    store = FakeStore(LEGACY)

    def sleep(s):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ramp(store, "f", "run-1", Scripted(clock, [0.0]), watch_seconds=60, clock=clock, sleep=sleep)
    assert store.values == [STEP, LEGACY]


def test_a_failed_rollback_raises():
    clock = FakeClock()

    class Broken(FakeStore):
        def set(self, flag, value, run_id):
            if value == LEGACY:
                raise ConnectionError("flag service down")
            super().set(flag, value, run_id)

    store = Broken(LEGACY)
    with pytest.raises(ConnectionError):
        run(store, Scripted(clock, [1.0]), clock)
    assert store.values == [STEP]


def test_a_failed_ramp_step_restores_the_previous_value_then_raises():
    clock = FakeClock()

    class Flaky(FakeStore):
        def set(self, flag, value, run_id):
            super().set(flag, value, run_id)  # applied, but the answer is lost
            if value == STEP:
                raise TimeoutError("read timed out")

    store = Flaky(None)
    with pytest.raises(TimeoutError):
        run(store, Scripted(clock, [0.0]), clock)
    assert store.values == [STEP, LEGACY]


@pytest.mark.parametrize("kw", [{"ramp_percent": 0}, {"ramp_percent": 101}, {"ramp_percent": 1.5},
                                {"watch_seconds": -1}, {"poll_seconds": 0}, {"max_error_rate_pct": -0.1}])
def test_bad_arguments_change_nothing(kw):
    clock = FakeClock()
    store = FakeStore(LEGACY)
    with pytest.raises(ConfigError):
        run(store, Scripted(clock, [0.0]), clock, **kw)
    assert store.sets == []


def test_result_to_dict_is_json():
    r = RampResult(ok=True, reason="x", readings=[(0.0, 0.01), (5.0004, math.nan)], final=NEW)
    d = r.to_dict()
    assert d["readings"] == [[0.0, 0.01], [5.0, None]] and d["final"] == {"path": "new", "percent": 100}
    json.dumps(d, allow_nan=False)


def test_factory_and_constructor_checks():
    from zdt_backfill.db import Database
    from zdt_backfill.dialects import dialect_for

    db = Database(connect=lambda: None, dialect=dialect_for("postgres"), name="app")
    assert isinstance(flag_store_from_config("table", db, None), TableFlagStore)
    http = flag_store_from_config("http", None, "http://flags.internal/v1/flags/")
    assert isinstance(http, HttpFlagStore) and http._flag_url("a b/c") == "http://flags.internal/v1/flags/a%20b%2Fc"
    for kind, d, u in (("variable", db, None), ("redis", db, None), ("table", None, None), ("http", None, None)):
        with pytest.raises(ConfigError):
            flag_store_from_config(kind, d, u)
    with pytest.raises(ConfigError):
        HttpFlagStore("file:///etc/passwd")
    with pytest.raises(ConfigError):
        HttpErrorSignal("ftp://x")
    with pytest.raises(ConfigError, match="';'"):
        SqlErrorSignal(db, "SELECT 1; DROP TABLE users")
    with pytest.raises(ConfigError):
        SqlErrorSignal(db, "  ")
