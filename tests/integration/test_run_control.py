"""Run control on real PostgreSQL and MariaDB: the state machine, the leased lock, repair,
decisions that hold before they destroy, and DDL that never queues the application."""

from __future__ import annotations

import threading
import time

import pytest

import localdb
from conftest import projection_diff, seed_users, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.errors import ConcurrentRunError, RunStoppedError
from zdt_backfill.lifecycle import Runner
from zdt_backfill.lifecycle.preflight import run_preflight
from zdt_backfill.routing.flags import TableFlagStore
from zdt_backfill.signals.lag import ReplicaStatusProbe
from zdt_backfill.state import runstate
from zdt_backfill.state.runstate import InvalidTransitionError, RunHandle

pytestmark = pytest.mark.integration


def copy_all(env, config, plan):
    for p in plan.partitions:
        PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index).run()


def states(handle: RunHandle) -> list[str]:
    return [e.state_to for e in handle.events("transition")]


def test_the_lock_key_is_the_same_for_a_null_and_an_explicit_schema(env):
    seed_users(env, 100)
    explicit = "public" if env.engine == "postgres" else env.database
    first = RunConfig.from_params(users_conf(env), run_id="null_schema")
    plan = run_preflight(first, env.db, [])
    assert plan.lock["mode"] == "fresh"
    second = RunConfig.from_params(users_conf(env, schema=explicit), run_id="explicit_schema")
    from zdt_backfill.db import Database

    db2 = Database(connect=env.db.connect, dialect=env.db.dialect, schema=explicit, name="explicit")
    with pytest.raises(ConcurrentRunError, match="null_schema"):
        run_preflight(second, db2, [])
    assert env.scalar("SELECT lock_key FROM zdt_backfill_runs") == f"{explicit}.users_new"


def test_a_preflight_failing_after_the_lock_leaves_no_lock(env, monkeypatch):
    from zdt_backfill.state.checkpoint import CheckpointStore

    seed_users(env, 100)
    config = RunConfig.from_params(users_conf(env), run_id="fails_late")

    def broken(*a, **kw):
        raise OSError("connection reset while writing the plan")

    monkeypatch.setattr(CheckpointStore, "open_partition", broken)
    with pytest.raises(OSError, match="connection reset"):
        run_preflight(config, env.db, [])
    monkeypatch.undo()
    row = RunHandle(env.db, config).row()
    assert row.state == "halted" and not row.lease_live and "pre-flight failed" in row.reason
    # nobody holds the table: the next run takes it at once
    nxt = RunConfig.from_params(users_conf(env), run_id="next")
    assert run_preflight(nxt, env.db, []).lock["previous_run"] == "fails_late"


def test_a_run_whose_worker_died_is_taken_over_and_resumed_from_its_checkpoints(env, monkeypatch):
    seed_users(env, 5_000)
    monkeypatch.setattr(runstate, "LEASE_SECONDS", 2.0)  # a short lease, really expiring
    dead = RunConfig.from_params(users_conf(env, batch_size=500, partitions=1), run_id="dead")
    plan = run_preflight(dead, env.db, [])

    class WorkerKilled(BaseException):
        pass

    def die_after_four_batches(progress, chunk, rows, seconds):
        if progress.batches == 4:
            raise WorkerKilled  # the process is gone: no release, no more heartbeats

    with pytest.raises(WorkerKilled):
        PartitionCopier(dead, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index,
                        on_batch=die_after_four_batches).run()
    nxt = RunConfig.from_params(users_conf(env, batch_size=500, partitions=1), run_id="next")
    with pytest.raises(ConcurrentRunError, match="live lease"):  # never a live lease ...
        run_preflight(nxt, env.db, [])
    time.sleep(2.5)  # ... but once it expired
    taken = run_preflight(nxt, env.db, [])
    assert taken.lock["mode"] == "takeover" and taken.lock["previous_run"] == "dead"
    assert taken.lock["adopted_partitions"][0]["watermark"] == 2_000
    result = PartitionCopier(nxt, env.db, Partition.from_dict(taken.partitions[0]), taken.key_index).run()
    assert result.resumed_from == 2_000 and result.attempt_batches == 6  # the rest only
    assert result.progress["keys_scanned"] == 5_000
    assert projection_diff(env) == 0
    takeover = [e for e in RunHandle(env.db, nxt).events("lock")]
    assert takeover and takeover[-1].detail["mode"] == "takeover"
    # the dead run's late batch cannot commit any more: its lock is gone
    with pytest.raises(RunStoppedError):
        PartitionCopier(dead, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()


def test_a_wrong_dual_written_row_and_a_key_above_the_plan_are_repaired_then_forward(env):
    seed_users(env, 3_000)
    # the application dual-wrote key 7 wrongly before the backfill (insert-if-absent keeps it)
    env.sql("INSERT INTO users_new (id, email_normalized, data_hash) VALUES (7, 'WRONG', 'x')")
    config = RunConfig.from_params(users_conf(env, batch_size=500, partitions=2), run_id="repairs")
    plan = run_preflight(config, env.db, [])
    copy_all(env, config, plan)
    # above the planned range, and dual_write "assumed": nothing wrote it to the target
    env.sql("INSERT INTO users_legacy (id, email, legacy_data) VALUES (9000000, ' Late@Example.COM', 'late')")
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (8000000, 'orphan')")  # and one extra key
    Runner(config, env.db, owner="test").start_catchup()
    first = Runner(config, env.db, owner="test").validate()
    assert (first["missing"], first["different"], first["extra"]) == (1, 1, 1)
    out = Runner(config, env.db, owner="test").repair()
    assert out["repair"]["repaired"] == {"missing": 1, "different": 1, "extra": 1}
    assert out["validation"]["mismatched"] == 0 and out["validation"]["after_repair"]
    decision = Runner(config, env.db, owner="test").decide()
    assert decision["decision"]["branch"] == "forward" and decision["next"] == "contract"
    assert projection_diff(env) == 0
    handle = RunHandle(env.db, config)
    assert "repairing" in states(handle)
    assert [e.detail["step"] for e in handle.events("destructive")] == ["repair", "repair"]  # upsert, delete


def test_a_lag_spike_at_decide_holds_then_goes_forward(env):
    seed_users(env, 1_000)
    config = RunConfig.from_params(users_conf(env, replica_conn_ids=["replica"]), run_id="lagspike")
    plan = run_preflight(config, env.db, [])
    copy_all(env, config, plan)
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    localdb.wait_replica_caught_up(env.pair)
    probe = ReplicaStatusProbe(env.replica_db)
    localdb.pause_replay(env.pair)
    time.sleep(2.5)
    env.sql("UPDATE users_legacy SET email = 'spike' WHERE id = 3")  # replay is now behind
    timer = threading.Timer(3.0, localdb.resume_replay, args=(env.pair,))
    timer.start()
    try:
        out = Runner(config, env.db, owner="test", probes=[probe]).decide()
    finally:
        timer.join()
        probe.close()
    assert out["decision"]["branch"] == "forward"
    handle = RunHandle(env.db, config)
    assert "holding" in states(handle) and states(handle)[-1] == "validating"
    assert env.scalar("SELECT count(*) FROM users_new") == 1_000  # nothing destroyed while holding


def test_lock_wait_retries_are_yields_not_errors(env):
    """More transient retries than 0.01 % of the rows still goes forward: they are how the
    backfill yields to the application, not errors."""
    seed_users(env, 2_000)
    config = RunConfig.from_params(users_conf(env, batch_size=100, partitions=1, lock_timeout_seconds=0.1),
                                   run_id="yields")
    plan = run_preflight(config, env.db, [])
    stop = threading.Event()

    def application_locking_rows():
        conn = env.db.connect()
        try:
            for key in range(50, 2_000, 300):  # rows ahead of the backfill, locked for 1.5 s each
                if stop.is_set():
                    break
                env.db.query(conn, "SELECT id FROM users_legacy WHERE id = %s FOR UPDATE", (key,))
                time.sleep(1.5)
                conn.commit()
        finally:
            conn.close()

    locker = threading.Thread(target=application_locking_rows)
    locker.start()
    try:
        copy_all(env, config, plan)
    finally:
        stop.set()
        locker.join()
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    Runner(config, env.db, owner="test").repair()
    out = Runner(config, env.db, owner="test").decide()
    assert out["yields"] >= 2, out  # > 0.01 % of 2,000 rows
    assert out["data_errors"] == 0 and out["decision"]["branch"] == "forward"
    assert projection_diff(env) == 0


def test_clearing_decide_or_contract_after_a_rollback_never_flips_routing(env):
    seed_users(env, 500)
    config = RunConfig.from_params(users_conf(env), run_id="cleared")
    plan = run_preflight(config, env.db, [])
    copy_all(env, config, plan)
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    store = TableFlagStore(env.db)
    for step in ("stop", "flip_routing", "empty_target", "restore_sequences", "clear_caches", "finish"):
        Runner(config, env.db, owner="test", flag_store=store).rollback_step(step)
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    with pytest.raises(InvalidTransitionError, match="rolled_back"):
        Runner(config, env.db, owner="cleared decide").decide()
    with pytest.raises(InvalidTransitionError):
        Runner(config, env.db, owner="cleared contract", flag_store=store).contract_step("flip_routing")
    assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "legacy"


def test_contract_refuses_a_validation_older_than_the_last_repair(env):
    seed_users(env, 500)
    config = RunConfig.from_params(users_conf(env), run_id="stale")
    plan = run_preflight(config, env.db, [])
    copy_all(env, config, plan)
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    handle = RunHandle(env.db, config)
    handle.destructive("truncate", "TRUNCATE TABLE users_new", "someone emptied the target after validating")
    with pytest.raises(InvalidTransitionError, match="stale validation"):
        Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db)).contract_step("flip_routing")
    assert TableFlagStore(env.db).get("users_new_read_path") is None


def _hold_an_open_transaction_on(env, table):
    """An application transaction that read the table and stays open (it holds the metadata
    lock on MySQL and an ACCESS SHARE lock on PostgreSQL until it ends)."""
    conn = env.db.connect()
    env.db.query(conn, f"SELECT count(*) FROM {table}")
    return conn


def test_truncate_behind_an_open_application_transaction_gives_up_and_retries_without_blocking_writes(env):
    seed_users(env, 200)
    config = RunConfig.from_params(users_conf(env, lock_timeout_seconds=1.0), run_id="ddl")
    plan = run_preflight(config, env.db, [])
    copy_all(env, config, plan)
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    store = TableFlagStore(env.db)
    Runner(config, env.db, owner="test", flag_store=store).rollback_step("stop")
    Runner(config, env.db, owner="test", flag_store=store).rollback_step("flip_routing")
    holder = _hold_an_open_transaction_on(env, "users_new")
    done = {}

    def truncate():
        t0 = time.monotonic()
        done["out"] = Runner(config, env.db, owner="test", flag_store=store).rollback_step("empty_target")
        done["seconds"] = time.monotonic() - t0

    worker = threading.Thread(target=truncate)
    worker.start()
    # While TRUNCATE keeps trying, the application's other writes to the table go through,
    # each waiting at most about one DDL lock wait (1 s) behind a queued attempt.
    waits = []
    app = env.db.connect()
    try:
        for i in range(6):
            t0 = time.monotonic()
            env.db.execute(app, "INSERT INTO users_new (id, email_normalized) VALUES (%s, 'app')", (700_000 + i,))
            app.commit()
            waits.append(time.monotonic() - t0)
            time.sleep(0.5)
    finally:
        app.close()
    assert worker.is_alive()  # still retrying: the open transaction holds its lock
    holder.commit()
    holder.close()
    worker.join(60)
    assert "out" in done and done["seconds"] > 3
    assert max(waits) < 2.5, waits  # never queued behind the DDL for longer than its lock wait (+ margin)
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert env.scalar("SELECT count(*) FROM users_legacy") == 200


def test_a_heartbeat_renewal_never_shortens_a_waits_lease(env):
    seed_users(env, 10)
    config = RunConfig.from_params(users_conf(env), run_id="waits")
    run_preflight(config, env.db, [])
    handle = RunHandle(env.db, config)
    handle.renew(3_600)  # a wait for a human set an hour
    handle.renew(60)  # a working task's keeper renews afterwards
    age = "extract(epoch FROM lease_expires_at - now())" if env.engine == "postgres" else \
        "timestampdiff(SECOND, current_timestamp(6), lease_expires_at)"
    assert env.scalar(f"SELECT {age} FROM zdt_backfill_runs") > 3_000
