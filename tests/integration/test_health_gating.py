"""Health gating on real servers with real faults: heartbeat lag (paused replay, a stopped WAL
receiver, MariaDB MASTER_DELAY and STOP SLAVE), an application row lock inside a batch, a
statement timeout that halves the batch, the circuit breaker, and live control."""

from __future__ import annotations

import threading
import time

import pytest

import localdb
from conftest import cte_depth, projection_diff, seed_users, seq, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.db import Database
from zdt_backfill.errors import BatchError
from zdt_backfill.lifecycle.preflight import run_preflight
from zdt_backfill.signals.lag import ReplicaLagProbe
from zdt_backfill.state.runstate import RunHandle

pytestmark = pytest.mark.integration


def replica_sql(env, statement):
    conn = env.replica_db.connect()
    try:
        if env.engine == "postgres":
            conn.autocommit = True  # ALTER SYSTEM runs outside a transaction
        rows = env.replica_db.query(conn, statement)
        conn.commit()
        return rows
    finally:
        conn.close()


RATE = 8_000  # rows/s: 40,000 rows take 5 s, long enough for lag to build


def lagging_copy(env, fault, heal, rows=40_000, gate=1.0, heal_after=4.0, **conf):
    """Copy ``rows`` rows at :data:`RATE` rows/s with the lag gate at ``gate`` s; ``fault`` is
    applied after the second batch and undone by ``heal`` ``heal_after`` s later. Returns the
    partition result, ``seen`` (``gate_closed_after``: seconds from the fault to the start of the
    longest pause between batches) and the run handle."""
    seed_users(env, rows)
    localdb.wait_replica_caught_up(env.pair)
    config = RunConfig.from_params(
        users_conf(env, batch_size=500, partitions=1, max_replica_lag_seconds=gate, replica_conn_ids=["replica"],
                   target_batch_seconds=0, max_rows_per_second=RATE, **conf), run_id="lag")
    plan = run_preflight(config, env.db, [])
    handle = RunHandle(env.db, config)
    probe = ReplicaLagProbe(Database.from_url(env.replica_url, timeout_s=5), heartbeat=handle.lock_key())
    seen = {"times": []}
    timer = threading.Timer(heal_after, heal)

    def on_batch(progress, chunk, n, seconds):
        now = time.monotonic()
        seen["times"].append(now)
        if progress.batches == 2 and "fault_at" not in seen:
            fault()
            seen["fault_at"] = time.monotonic()
            timer.start()

    try:
        result = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index, [probe],
                                 on_batch=on_batch).run()
    finally:
        if timer.ident is not None:
            timer.join()
        probe.close()
    times = seen["times"]
    gaps = [(b - a, a) for a, b in zip(times, times[1:], strict=False)]
    seen["longest_pause"], start = max(gaps)
    seen["gate_closed_after"] = start - seen["fault_at"]
    return result, seen, handle


def assert_gated(result, seen, handle, kinds, gate=1.0):
    throttled = result.throttled_seconds
    assert sum(throttled[k] for k in kinds if k in throttled) >= 1.5, throttled
    assert seen["longest_pause"] >= 1.5, seen["longest_pause"]
    # the gate closed once lag passed it, within a check interval and a batch: not seconds later
    assert seen["gate_closed_after"] <= gate + 1.0, seen["gate_closed_after"]
    assert result.progress["keys_scanned"] == 40_000
    events = handle.events("throttle")
    assert events and any(k in events[-1].detail["seconds"] for k in kinds)


def test_a_paused_postgres_replica_throttles_within_a_batch_by_heartbeat(pg_env):
    env = pg_env
    result, seen, handle = lagging_copy(env, lambda: localdb.pause_replay(env.pair),
                                        lambda: localdb.resume_replay(env.pair))
    assert_gated(result, seen, handle, ("lag",))
    assert projection_diff(env) == 0


def test_a_stopped_wal_receiver_reads_as_growing_lag(pg_env):
    env = pg_env
    original = replica_sql(env, "SHOW primary_conninfo")[0][0]

    def disconnect():
        replica_sql(env, "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 connect_timeout=1'")
        replica_sql(env, "SELECT pg_reload_conf()")

    def reconnect():
        replica_sql(env, f"ALTER SYSTEM SET primary_conninfo = '{original.replace(chr(39), chr(39) * 2)}'")
        replica_sql(env, "SELECT pg_reload_conf()")

    try:
        result, seen, handle = lagging_copy(env, disconnect, reconnect)
    finally:
        reconnect()
    assert_gated(result, seen, handle, ("lag",))
    localdb.wait_replica_caught_up(env.pair, timeout=60)


def test_mariadb_master_delay_throttles(mariadb_env):
    env = mariadb_env

    def delay():
        replica_sql(env, "STOP SLAVE")
        replica_sql(env, "CHANGE MASTER TO MASTER_DELAY = 3")
        replica_sql(env, "START SLAVE")

    def undelay():
        replica_sql(env, "STOP SLAVE")
        replica_sql(env, "CHANGE MASTER TO MASTER_DELAY = 0")
        replica_sql(env, "START SLAVE")

    try:
        result, seen, handle = lagging_copy(env, delay, undelay, heal_after=5.0)
    finally:
        undelay()
    assert_gated(result, seen, handle, ("lag", "lag-unknown"))


def test_mariadb_stop_slave_throttles_and_never_crashes(mariadb_env):
    env = mariadb_env
    try:
        result, seen, handle = lagging_copy(env, lambda: replica_sql(env, "STOP SLAVE"),
                                            lambda: replica_sql(env, "START SLAVE"))
    finally:
        replica_sql(env, "START SLAVE")
    assert_gated(result, seen, handle, ("lag", "lag-unknown"))


def test_an_unknown_or_unreachable_replica_reads_as_none_never_zero(env):
    seed_users(env, 10)
    dead = Database.direct("postgres" if env.engine == "postgres" else "mysql", "127.0.0.1", localdb.free_port(),
                           "x", "", "x", timeout_s=2)
    reading = ReplicaLagProbe(dead, heartbeat="any").read()
    assert reading.seconds is None and reading.status == "unreachable"
    with pytest.raises(ValueError, match="not a replica"):
        ReplicaLagProbe(env.db).read()  # a primary named as a replica fails loudly


def test_an_application_row_lock_inside_a_batch_is_waited_out_without_blocking_the_application(env):
    seed_users(env, 3_000)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=1, target_batch_seconds=0,
                                              lock_timeout_seconds=0.5), run_id="rowlock")
    plan = run_preflight(config, env.db, [])
    app = env.db.connect()
    env.db.query(app, "SELECT id FROM users_legacy WHERE id = 550 FOR UPDATE")  # inside the first batch
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", PartitionCopier(
        config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()))
    worker.start()
    time.sleep(0.3)  # the batch now holds shared locks on keys 1..549 and waits for 550
    t0 = time.monotonic()
    env.db.execute(app, "UPDATE users_legacy SET legacy_data = 'app' WHERE id = 10")
    blocked = time.monotonic() - t0
    time.sleep(1.5)
    app.commit()
    app.close()
    worker.join(60)
    lock_wait = 0.5 if env.engine == "postgres" else 1.0  # MySQL's lock wait is whole seconds
    assert blocked <= lock_wait + 0.5, blocked  # never longer than the backfill's lock wait
    assert result["r"].retries >= 1  # the batch gave up, backed off and completed later
    assert projection_diff(env) == 0


def _slow_target(env, seconds_per_row):
    if env.engine == "postgres":
        env.sql("CREATE FUNCTION zdt_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" PERFORM pg_sleep({seconds_per_row}); RETURN NEW; END $$;\n"
                "CREATE TRIGGER zdt_slow BEFORE INSERT ON users_new FOR EACH ROW EXECUTE FUNCTION zdt_slow()")
    else:
        env.sql(f"CREATE TRIGGER zdt_slow BEFORE INSERT ON users_new FOR EACH ROW SET @zdt = SLEEP({seconds_per_row})")


def test_a_statement_timeout_halves_the_batch_until_it_fits(env):
    seed_users(env, 600)
    _slow_target(env, 0.004)  # 400 rows take 1.6 s: over the 1 s statement timeout
    config = RunConfig.from_params(users_conf(env, batch_size=400, min_batch_size=25, partitions=1,
                                              target_batch_seconds=0, statement_timeout_seconds=1.0), run_id="halve")
    plan = run_preflight(config, env.db, [])
    sizes = []
    copier = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index,
                             on_batch=lambda p, c, n, s: sizes.append(c.keys))
    result = copier.run()
    assert sizes and max(sizes) <= 200 and sum(sizes) == 600  # 400 timed out; halved until it fit
    assert result.retries >= 1 and result.progress["rows_written"] == 600
    assert projection_diff(env) == 0


def _fk_target(env, bad_keys):
    env.sql("CREATE TABLE parent (id bigint PRIMARY KEY)")
    env.sql("CREATE TABLE src (id bigint PRIMARY KEY, parent_id bigint)")
    env.sql("CREATE TABLE dst (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent (id))")
    if env.engine == "postgres":
        env.sql("INSERT INTO parent SELECT 1")
        env.sql("INSERT INTO src SELECT g, CASE WHEN g IN (" + ",".join(map(str, bad_keys)) + ") THEN 99 ELSE 1 END"
                " FROM generate_series(1, 20000) g")
    else:
        env.sql("INSERT INTO parent VALUES (1)")
        env.sql(cte_depth(env) + "INSERT INTO src SELECT seq, CASE WHEN seq IN (" + ",".join(map(str, bad_keys))
                + ") THEN 99 ELSE 1 END FROM " + seq(env, 20000))
    return RunConfig.from_params(
        {"conn_id": "x", "source_table": "src", "target_table": "dst", "key": "id",
         "columns": {"parent_id": "parent_id"}, "profile": "dev", "dual_write": "assumed", "batch_size": 1000,
         "partitions": 1, "target_batch_seconds": 0}, run_id="breaker")


def test_data_errors_under_the_breaker_limit_are_isolated_and_the_copy_goes_on(env):
    config = _fk_target(env, [12_345])  # 1 in 20,000 = 0.005 % <= 0.01 %
    plan = run_preflight(config, env.db, [])
    result = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()
    assert result.progress["data_errors"] == 1 and result.progress["keys_scanned"] == 20_000
    assert env.scalar("SELECT count(*) FROM dst") == 19_999  # every other key of that batch written
    (event,) = RunHandle(env.db, config).events("data_error")
    assert event.detail["keys"][0][0] == 12_345 and event.detail["count"] == 1


def test_data_errors_over_the_breaker_limit_halt(env):
    config = _fk_target(env, [3, 5, 7])  # 3 in the first 1,000 keys: 0.3 % > 0.01 %
    plan = run_preflight(config, env.db, [])
    with pytest.raises(BatchError, match="circuit breaker: 3 data error"):
        PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()
    assert env.scalar("SELECT count(*) FROM dst") == 997  # the batch's good keys kept, the run stopped there


def test_live_control_pauses_and_resumes_within_a_batch_and_stop_halts(env):
    seed_users(env, 20_000)
    config = RunConfig.from_params(users_conf(env, batch_size=500, partitions=1, target_batch_seconds=0),
                                   run_id="control")
    plan = run_preflight(config, env.db, [])
    handle = RunHandle(env.db, config)
    marks = {}

    def on_batch(progress, chunk, n, seconds):
        if progress.batches == 3 and "paused" not in marks:
            handle.set_control(pause=True)  # the SQL/table way; the Variable way is the same dict
            marks["paused"] = progress.watermark
            threading.Timer(2.0, lambda: handle.set_control(pause=None)).start()
        if "paused" in marks and "next" not in marks and progress.watermark > marks["paused"]:
            marks["next"] = time.monotonic()

    t0 = time.monotonic()
    result = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index,
                             on_batch=on_batch).run()
    assert result.throttled_seconds.get("paused", 0) >= 1.5
    assert marks["next"] - t0 >= 2.0 and result.progress["keys_scanned"] == 20_000
    handle.set_control(stop=True)
    from zdt_backfill.signals.throttler import StopRequestedError

    env.sql("TRUNCATE TABLE users_new")
    again = RunConfig.from_params(users_conf(env, batch_size=500, partitions=1), run_id="control2")
    handle.release()
    plan2 = run_preflight(again, env.db, [])
    with pytest.raises(StopRequestedError):
        PartitionCopier(again, env.db, Partition.from_dict(plan2.partitions[0]), plan2.key_index).run()


def test_diagnose_reports_a_lock_wait_and_the_replicas_with_verdicts(env):
    import subprocess
    import sys

    seed_users(env, 100)
    holder, waiter = env.db.connect(), env.db.connect()
    env.db.query(holder, "SELECT id FROM users_legacy WHERE id = 1 FOR UPDATE")
    blocked = threading.Thread(target=lambda: _quietly(lambda: env.db.execute(
        waiter, "UPDATE users_legacy SET email = 'w' WHERE id = 1")))
    blocked.start()
    time.sleep(0.5)
    try:
        r = subprocess.run([sys.executable, "-m", "zdt_backfill", "diagnose", "--url", env.url, "--replica-url",
                            env.replica_url, "--json"], capture_output=True, text=True, timeout=120)
    finally:
        holder.rollback()
        holder.close()
        blocked.join(10)
        _quietly(waiter.rollback)
        waiter.close()
    assert r.returncode in (0, 1), r.stderr
    import json

    findings = {f["check"].split(" ")[0]: f for f in json.loads(r.stdout)}
    assert findings["lock_waits"]["value"] >= 1 and findings["lock_waits"]["verdict"] in ("warn", "critical")
    assert findings["replica_lag"]["verdict"] == "ok" and findings["connections"]["verdict"] == "ok"
    assert "backfill_sessions" in findings


def _quietly(fn):
    try:
        fn()
    except Exception:
        pass


def test_lag_above_the_halt_threshold_sustained_halts_the_copy_and_destroys_nothing(env):
    """The seed's rule: lag over 5 s halts. Here with 1 s sustained for 2 s, on a replica whose
    replay is paused (PostgreSQL) or whose SQL thread is stopped... then left so (MariaDB)."""
    from zdt_backfill.signals.throttler import SustainedLagError

    fault, heal = (lambda: localdb.pause_replay(env.pair)), (lambda: localdb.resume_replay(env.pair))
    try:
        with pytest.raises(SustainedLagError, match="halting the copy"):
            lagging_copy(env, fault, lambda: None, heal_after=0.1, halt_lag_seconds=1.0, halt_lag_after_seconds=2.0)
    finally:
        heal()
    copied = env.scalar("SELECT count(*) FROM users_new")
    assert 0 < copied < 40_000  # halted mid-copy; what was copied stays
    assert env.scalar("SELECT count(*) FROM users_legacy") == 40_000
    assert projection_diff(env) == 40_000 - copied  # only the keys not yet copied differ (missing)
    localdb.wait_replica_caught_up(env.pair, timeout=60)


def test_postgres_replica_lag_in_wal_bytes_is_read_on_the_primary_and_throttles(pg_env):
    from zdt_backfill.signals.load import LoadCollector
    from zdt_backfill.signals.throttler import Limits, Readings, decide

    env = pg_env
    seed_users(env, 1_000)
    localdb.wait_replica_caught_up(env.pair)
    collector = LoadCollector(env.db, ("users_legacy", "users_new"))
    try:
        before = collector.read()["replica_lag_bytes"]
        assert before is not None and before < 1024 * 1024
        localdb.pause_replay(env.pair)
        try:
            env.sql("INSERT INTO users_legacy (id, email, legacy_data) SELECT g, 'x', repeat('y', 500)"
                    " FROM generate_series(10001, 30000) g")
            deadline = time.monotonic() + 10
            behind = 0.0
            while time.monotonic() < deadline and behind < 4 * 1024 * 1024:
                behind = collector.read()["replica_lag_bytes"] or 0.0
                time.sleep(0.2)
            assert behind >= 4 * 1024 * 1024, behind  # ~10 MB of WAL not replayed
            d = decide(Readings(load={"replica_lag_bytes": behind}), Limits(max_load={"replica_lag_bytes": 1024 * 1024}))
            assert d.throttle and d.kind == "load" and "replica_lag_bytes" in d.reason
        finally:
            localdb.resume_replay(env.pair)
        localdb.wait_replica_caught_up(env.pair, timeout=60)
        assert (collector.read()["replica_lag_bytes"] or 0) < 1024 * 1024
    finally:
        collector.close()


def test_the_ceiling_follows_the_work_a_finished_partitions_share_goes_to_the_rest(env):
    seed_users(env, 32_000)
    conf = users_conf(env, batch_size=1_000, partitions=2, target_batch_seconds=0)
    unthrottled = RunConfig.from_params(conf, run_id="share")
    plan = run_preflight(unthrottled, env.db, [])
    assert len(plan.partitions) == 2
    # p0 copied (and done) first; then p1 alone under a 4,000 rows/s ceiling planned for two
    PartitionCopier(unthrottled, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()
    ceiling = RunConfig.from_params({**conf, "max_rows_per_second": 4_000}, run_id="share")
    started = time.monotonic()
    result = PartitionCopier(ceiling, env.db, Partition.from_dict(plan.partitions[1]), plan.key_index,
                             planned=2).run()
    seconds = time.monotonic() - started
    keys = result.progress["keys_scanned"]
    assert keys >= 15_000
    # the whole ceiling (~4 s for 16,000 keys), not the planned half (~8 s)
    assert keys / seconds > 3_000, (keys, seconds)
    assert keys / seconds < 4_000 * 1.05, (keys, seconds)
    assert projection_diff(env) == 0
