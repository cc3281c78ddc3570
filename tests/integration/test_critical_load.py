"""Critical load (gh-ost's --critical-load), on real servers: the batch in flight is cancelled,
the run drops to one active partition until row-lock waits return to baseline, and critical
load again in that mode halts.

An application transaction holds a row the first batch of partition 0 must insert, so that
batch's statement waits (lock wait 30 s); then sessions running SLEEP/pg_sleep push the
running-sessions signal over its critical limit. The watchdog cancels the batch within about a
reading, and the batch and its checkpoint roll back together.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.lifecycle.preflight import run_preflight
from zdt_backfill.signals.critical import CriticalLoadError
from zdt_backfill.state.runstate import RunHandle

pytestmark = pytest.mark.integration


def signal_of(env) -> str:
    return "active_backends" if env.engine == "postgres" else "threads_running"


#: Running sessions at or above which load is critical in these tests: above what two partitions,
#: their heartbeats and probes and this test's own sessions reach (up to ~6 on MariaDB).
CRITICAL = 9


def overload(env, sleepers: list[threading.Thread], seconds: int = 3, n: int = 12) -> float:
    """Start ``n`` sessions sleeping ``seconds`` (running sessions over :data:`CRITICAL`)."""
    pause = f"SELECT pg_sleep({seconds})" if env.engine == "postgres" else f"SELECT SLEEP({seconds})"

    def sleeper():
        with env.db.session() as c:
            env.db.query(c, pause)

    for _ in range(n):
        th = threading.Thread(target=sleeper)
        th.start()
        sleepers.append(th)
    return time.monotonic()


def single_partition(handle: RunHandle) -> dict | None:
    return handle.critical_mode()


def test_critical_load_cancels_the_batch_drops_to_one_partition_and_resumes_at_baseline(env):
    rows = 20_000
    seed_users(env, rows)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=2, lock_timeout_seconds=30,
                                              statement_timeout_seconds=60, target_batch_seconds=0,
                                              max_rows_per_second=4_000, critical_load={signal_of(env): CRITICAL}),
                                   run_id="critical-single")
    plan = run_preflight(config, env.db, [])
    assert len(plan.partitions) == 2
    app = env.db.connect()  # the application: an uncommitted insert of a key of p0's first batch
    env.db.execute(app, "INSERT INTO users_new (id, email_normalized) VALUES (550, 'app@example.com')")
    handle = RunHandle(env.db, config)
    sleepers: list[threading.Thread] = []
    batches: list[tuple[int, float, int]] = []  # (partition, when, watermark)
    mode: dict[str, float] = {}
    stop = threading.Event()

    def watch():
        """The application's side: release the row once the batch was cancelled; note when the
        run entered and left single-partition mode (the control row)."""
        while not stop.is_set():
            on = single_partition(handle) is not None
            if on and "entered" not in mode:
                mode["entered"] = time.monotonic()
                time.sleep(0.5)
                app.rollback()
            if not on and "entered" in mode and "left" not in mode:
                mode["left"] = time.monotonic()
            time.sleep(0.05)

    def trigger():
        time.sleep(1.5)  # p0's first batch now waits on the application's row
        mode["overload"] = overload(env, sleepers)

    copiers = [PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index,
                               on_batch=lambda pr, ch, r, s, i=i: batches.append((i, time.monotonic(), ch.hi)))
               for i, p in enumerate(plan.partitions)]
    errors: list[BaseException] = []

    def run(c):
        try:
            c.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in copiers]
    watcher, trig = threading.Thread(target=watch), threading.Thread(target=trigger)
    watcher.start()
    trig.start()
    for th in threads:
        th.start()
    try:
        for th in threads:
            th.join(120)
    finally:
        stop.set()
        watcher.join()
        trig.join()
        app.rollback()
        app.close()
        for th in sleepers:
            th.join()
    assert not errors, errors
    assert "entered" in mode and "left" in mode, mode
    # the cancel came at once, not after the 30 s lock wait (~1-2 s here: the overload's sessions
    # connect, a watchdog reading, the KILL; 10 s leaves room for a loaded machine)
    assert mode["entered"] - mode["overload"] < 10
    # while p0 was the one active partition, p1 held: no batch of p1 ended inside that window (once p0
    # is done, p1 is the lowest-numbered partition running and takes over, mode or not)
    p0_done = max(b[1] for b in batches if b[0] == 0)
    inside = [b for b in batches if b[0] == 1 and mode["entered"] + 0.3 < b[1] < min(mode["left"], p0_done) - 0.3]
    assert not inside, (inside, mode, [b for b in batches if b[0] == 1][-12:])
    assert copiers[1].throttler.throttled_seconds["critical-load"] > 1.0
    # p0 copied on in the mode (after the load cleared and before the row-lock waits were back to baseline
    # for 3 readings, or right after); both finished, and the copy is exact, every key once
    assert env.scalar("SELECT count(*) FROM users_new") == rows and projection_diff(env) == 0
    kinds = [e.kind for e in handle.events()]
    assert "critical_load" in kinds and "critical_load_over" in kinds
    entered = handle.events("critical_load")[0].detail  # the first partition whose batch was cancelled
    assert entered["watermark"] == plan.partitions[entered["partition"]]["lo"] - 1 or entered["partition"] == 1
    assert single_partition(handle) is None


def test_critical_load_again_with_one_partition_active_halts_keeping_the_checkpoint(env):
    seed_users(env, 3_000)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=1, lock_timeout_seconds=30,
                                              statement_timeout_seconds=60, target_batch_seconds=0,
                                              critical_load={signal_of(env): CRITICAL}), run_id="critical-again")
    plan = run_preflight(config, env.db, [])
    app = env.db.connect()  # holds a row of the first batch through both waves of load
    env.db.execute(app, "INSERT INTO users_new (id, email_normalized) VALUES (550, 'app@example.com')")
    handle = RunHandle(env.db, config)
    sleepers: list[threading.Thread] = []
    second: dict[str, float] = {}

    def waves():
        time.sleep(1.5)
        overload(env, sleepers)  # first wave: the batch is cancelled, one partition active
        deadline = time.monotonic() + 30
        while single_partition(handle) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(5)  # the first wave is over (3 s); the batch waits on the row again
        second["at"] = overload(env, sleepers)

    trigger = threading.Thread(target=waves)
    trigger.start()
    try:
        with pytest.raises(CriticalLoadError, match="with one partition active") as err:
            PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()
        halted_after = time.monotonic() - second["at"]
    finally:
        trigger.join()
        app.rollback()
        app.close()
        for th in sleepers:
            th.join()
    assert halted_after < 10, halted_after  # cancelled at once, not after the 30 s lock wait (2.6 s seen in CI)
    assert signal_of(env) in str(err.value)
    assert env.scalar("SELECT count(*) FROM users_new") == 0  # both cancelled batches rolled back
    events = handle.events("critical_load")
    assert len(events) == 2 and events[-1].detail["halt"] and events[-1].detail["watermark"] == plan.partitions[0]["lo"] - 1


def test_a_halt_decided_between_batches_is_recorded_with_its_checkpoint(env, monkeypatch):
    """Critical load again while the partition holds between batches (not during a statement)
    halts from the throttler, not the watchdog: the halt event and its checkpoint are recorded
    all the same. The decision itself is forced here (real load cannot pick the moment)."""
    seed_users(env, 3_000)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=1, target_batch_seconds=0,
                                              critical_load={signal_of(env): CRITICAL}), run_id="critical-between")
    plan = run_preflight(config, env.db, [])
    copier = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index)
    real, calls = copier.throttler.before_batch, []

    def before_batch():
        calls.append(1)
        if len(calls) == 2:  # the first batch committed; critical load again in single-partition mode
            raise CriticalLoadError(f"critical {signal_of(env)}=13>=9 again with one partition active")
        real()

    monkeypatch.setattr(copier.throttler, "before_batch", before_batch)
    with pytest.raises(CriticalLoadError, match="again with one partition active"):
        copier.run()
    assert env.scalar("SELECT count(*) FROM users_new") == 1_000  # the first batch stays, the rest waits
    (event,) = RunHandle(env.db, config).events("critical_load")
    assert event.detail["halt"] and event.detail["watermark"] == 1_000 and event.detail["partition"] == 0
