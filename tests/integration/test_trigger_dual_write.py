"""``dual_write: trigger`` on real servers, every engine: the application writes the legacy table
only while the copy runs, and the run's triggers keep the target in step; the run contracts exact
on every key (bytes compared), and the triggers are installed once, adopted by a takeover, kept by
a halted run and removed by contract and rollback."""

from __future__ import annotations

import random
import threading

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.errors import PreflightError
from zdt_backfill.lifecycle import Runner
from zdt_backfill.lifecycle.triggers import installed, trigger_base
from zdt_backfill.routing.flags import TableFlagStore
from zdt_backfill.state.runstate import HALTED, RunHandle

pytestmark = pytest.mark.integration

ROWS = 12_000


class LegacyWriter(threading.Thread):
    """The application of an unchanged codebase: inserts, updates (the key moved, sometimes) and
    deletes on users_legacy only, one transaction each, until the run starts its contract."""

    def __init__(self, env, key_max: int):
        super().__init__(daemon=True)
        self.env, self.key_max = env, key_max
        self.ops = {"insert": 0, "update": 0, "move": 0, "delete": 0, "failed": 0}
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.now = "now()" if env.engine == "postgres" else "CURRENT_TIMESTAMP(6)"

    def run(self):
        rnd, db = random.Random(7), self.env.db
        conn, next_key = db.connect(), 50_000_000
        try:
            while not self.stop_event.is_set():
                op = rnd.choice(["insert", "update", "update", "update", "move", "delete"])
                key = rnd.randint(1, self.key_max)
                try:
                    if op == "insert":
                        db.execute(conn, f"INSERT INTO users_legacy (id, email, legacy_data, updated_at) VALUES"
                                   f" (%s, %s, %s, {self.now})", (next_key, f" New{next_key}@Example.COM", "ÄÖ x "))
                        next_key += 1
                    elif op == "update":
                        db.execute(conn, f"UPDATE users_legacy SET email = %s, legacy_data = %s, updated_at = {self.now}"
                                   " WHERE id = %s", (f" Changed{key}@EXAMPLE.com ", f"v{rnd.random()}", key))
                    elif op == "move":  # an update that changes the key
                        db.execute(conn, "UPDATE users_legacy SET id = %s WHERE id = %s", (next_key, key))
                        next_key += 1
                    else:
                        db.execute(conn, "DELETE FROM users_legacy WHERE id = %s", (key,))
                    conn.commit()
                    self.ops[op] += 1
                except Exception as exc:  # a lock wait or deadlock is the application's to retry
                    conn.rollback()
                    if not db.is_transient(exc):
                        self.error = exc
                        return
                    self.ops["failed"] += 1
                if sum(self.ops.values()) % 20 == 0 and self._contracting():
                    return
        finally:
            conn.close()

    def _contracting(self) -> bool:
        rows = self.env.sql("SELECT state FROM zdt_backfill_runs")
        return bool(rows) and rows[0][0] in ("contracting", "soaking", "contracted", "halted", "rolled_back")

    def stop(self):
        self.stop_event.set()
        self.join(30)


def run_racing(env, config, tmp_path):
    """The whole lifecycle (Runner.run) with a LegacyWriter started once pre-flight installed the
    triggers (at the first partition's copy); returns ``(the run's outcome, the writer)``."""
    writer = LegacyWriter(env, ROWS)
    runner = Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db))
    real, started = runner.copy_partition, threading.Event()

    def copy_racing(partition):
        if not started.is_set():
            started.set()
            writer.start()
        return real(partition)

    runner.copy_partition = copy_racing
    try:
        out = runner.run(tmp_path)
    finally:
        writer.stop()
    assert writer.error is None, writer.error
    return out, writer


def trigger_conf(env, **over):
    return users_conf(env, dual_write="trigger", batch_size=500, partitions=2, **over)


def test_the_application_writes_legacy_only_and_the_run_contracts_exact(env, tmp_path):
    seed_users(env, ROWS)
    config = RunConfig.from_params(trigger_conf(env), run_id="trigger-contract")
    out, writer = run_racing(env, config, tmp_path)
    print("legacy writes while the run copied and validated:", writer.ops, "batch yields (lock waits, deadlocks):",
          out["report"].get("yields"), "batches:", out["report"].get("batches"))
    assert min(writer.ops[k] for k in ("insert", "update", "move", "delete")) > 5, writer.ops
    assert out["error"] is None and out["path"] == "contract", out.get("error")
    # the triggers kept it exact: validation named nothing to repair (a repair would hide a gap)
    assert "repairing" not in [e.state_to for e in RunHandle(env.db, config).events("transition")]
    assert out["report"]["dual_write"]["mode"] == "trigger"
    assert out["report"]["triggers"]["installed"] is False  # removed, and the report says so
    assert projection_diff(env) == 0  # every key, bytes compared, after the writer stopped
    assert env.scalar("SELECT count(*) FROM users_new") == env.scalar("SELECT count(*) FROM users_legacy")
    assert installed(config, env.db) == []  # removed by the contract's finish
    env.sql("UPDATE users_legacy SET email = 'after@contract' WHERE id = 2")  # legacy is on its own now
    assert env.scalar("SELECT count(*) FROM users_new WHERE email_normalized = 'after@contract'") == 0
    events = RunHandle(env.db, config).events("trigger")
    assert [e.detail["action"] for e in events] == ["install", "remove"]
    assert events[1].reason.startswith("write flip")  # the new schema is authoritative from the flip on
    assert all("TRIGGER" in s.upper() for s in events[0].detail["statements"])


def test_install_is_idempotent_and_a_takeover_adopts_the_triggers(env):
    seed_users(env, 2_000)
    first = RunConfig.from_params(trigger_conf(env), run_id="trigger-dead")
    Runner(first, env.db, owner="test").preflight()
    names = installed(first, env.db)
    assert names == sorted(env.db.dialect.trigger_names(trigger_base(first)))
    Runner(first, env.db, owner="test").preflight()  # a cleared pre-flight: installed again, one set
    assert installed(first, env.db) == names
    RunHandle(env.db, first, "test").release(HALTED, "the worker died")
    assert installed(first, env.db) == names  # a halted run keeps them: the target is still kept in step
    second = RunConfig.from_params(trigger_conf(env), run_id="trigger-takeover")
    plan = Runner(second, env.db, owner="test").preflight()
    assert plan["lock"]["taken_over"] if "taken_over" in plan["lock"] else True
    assert plan["triggers"]["adopted"] == names
    assert installed(second, env.db) == names  # the same triggers, never a second set
    with env.db.session() as conn:
        rows = env.db.query(conn, env.db.dialect.triggers_on_sql(), (env.db.schema, "users_legacy"))
    assert len(rows) == len(names)
    env.sql("UPDATE users_legacy SET email = ' Kept@In.Step ' WHERE id = 5")
    assert env.scalar("SELECT email_normalized FROM users_new WHERE id = 5") == "kept@in.step"


def test_rollback_removes_the_triggers_then_empties_the_target(env):
    seed_users(env, 3_000)
    config = RunConfig.from_params(trigger_conf(env), run_id="trigger-rollback")
    runner = Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db))
    plan = runner.preflight()
    runner.confirm_dual_write()
    runner.copy_partition(plan["partitions"][0])
    env.sql("UPDATE users_legacy SET email = 'during@copy' WHERE id = 2999")  # mirrored by the trigger
    assert env.scalar("SELECT email_normalized FROM users_new WHERE id = 2999") == "during@copy"
    runner.handle.release(HALTED, "a human stopped the copy")  # rollback starts from a halted run
    assert installed(config, env.db) != []  # halted: kept, the target is still kept in step
    for step in ("stop", "flip_routing", "empty_target", "restore_sequences", "clear_caches", "finish"):
        runner.rollback_step(step)
    assert installed(config, env.db) == []
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    env.sql("INSERT INTO users_legacy (id, email, legacy_data) VALUES (900001, 'x@y', 'z');\n"
            "UPDATE users_legacy SET email = 'later' WHERE id = 1;\nDELETE FROM users_legacy WHERE id = 3")
    assert env.scalar("SELECT count(*) FROM users_new") == 0  # a later legacy write touches nothing else


def test_a_refused_preflight_installs_nothing(env):
    seed_users(env, 500)
    config = RunConfig.from_params(trigger_conf(env, columns={"email_normalized": "lower(no_such_column)"}),
                                   run_id="trigger-refused")
    with pytest.raises(PreflightError):
        Runner(config, env.db, owner="test").preflight()
    assert installed(config, env.db) == []


def test_a_confirmation_reads_the_triggers_from_the_catalog(env):
    seed_users(env, 500)
    config = RunConfig.from_params(trigger_conf(env), run_id="trigger-confirm")
    runner = Runner(config, env.db, owner="test")
    runner.preflight()
    assert runner.confirm_dual_write()["mode"] == "trigger"
    with env.db.session() as conn:
        schema = env.db.resolved_schema(conn)
    env.sql(";\n".join(env.db.dialect.drop_up_sql("users_legacy", schema, trigger_base(config))))
    with pytest.raises(PreflightError, match="dual-write triggers missing"):
        runner.confirm_dual_write()


def test_fill_mode_the_application_writes_legacy_columns_only_and_the_run_contracts_exact(env, tmp_path):
    """Fill mode's up trigger (BEFORE INSERT OR UPDATE) sets the new column in the row being written."""
    seed_users(env, ROWS)
    env.sql("ALTER TABLE users_legacy ADD COLUMN email_normalized varchar(255) NULL")
    conf = users_conf(env, mode="fill", target_table=None, dual_write="trigger", batch_size=500, partitions=2,
                      columns={"email_normalized": "lower(trim(email))"})
    config = RunConfig.from_params(conf, run_id="trigger-fill")
    out, writer = run_racing(env, config, tmp_path)
    assert min(writer.ops[k] for k in ("insert", "update", "move", "delete")) > 5, writer.ops
    assert out["error"] is None and out["path"] == "contract", out.get("error")
    # the triggers kept it exact: validation named nothing to repair (a repair would hide a gap)
    assert "repairing" not in [e.state_to for e in RunHandle(env.db, config).events("transition")]
    if env.engine == "postgres":
        wrong = ("SELECT count(*) FROM users_legacy WHERE convert_to(email_normalized, 'UTF8')"
                 " IS DISTINCT FROM convert_to(lower(trim(email)), 'UTF8')")
    else:
        wrong = ("SELECT count(*) FROM users_legacy WHERE NOT (CAST(CONVERT(email_normalized USING utf8mb4) AS BINARY)"
                 " <=> CAST(CONVERT(lower(trim(email)) USING utf8mb4) AS BINARY))")
    assert env.scalar(wrong) == 0  # every row, bytes compared
    assert installed(config, env.db) == []
    env.sql("UPDATE users_legacy SET email = ' After@Contract ' WHERE id = 3")  # the trigger is gone
    assert env.scalar("SELECT email_normalized FROM users_legacy WHERE id = 3") != "after@contract"


def test_trigger_ddl_behind_an_open_transaction_gives_up_within_its_lock_wait_and_retries(env):
    """The application holds a write open on legacy: CREATE TRIGGER waits for it, and every other
    application write queues behind the waiting DDL, so each attempt gives up after the lock
    wait, backs off and tries again, and the application's other writes wait no longer than that."""
    import time

    seed_users(env, 1_000)
    config = RunConfig.from_params(trigger_conf(env, lock_timeout_seconds=0.2), run_id="trigger-lockwait")
    holder = env.db.connect()
    env.db.execute(holder, "UPDATE users_legacy SET email = 'held' WHERE id = 1")  # open, uncommitted
    done, failure = threading.Event(), []

    def preflight():
        try:
            Runner(config, env.db, owner="test").preflight()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=preflight)
    t.start()
    waits, other = [], env.db.connect()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not done.is_set():
        t0 = time.monotonic()
        env.db.execute(other, "UPDATE users_legacy SET legacy_data = 'other' WHERE id = %s", (500 + len(waits),))
        other.commit()
        waits.append(time.monotonic() - t0)
        time.sleep(0.05)
    assert not done.is_set() and installed(config, env.db) == []  # still waiting for the open write
    holder.commit()  # the application's transaction ends: the next attempt gets its lock
    t.join(60)
    holder.close()
    other.close()
    assert not failure, failure
    assert installed(config, env.db) == sorted(env.db.dialect.trigger_names(trigger_base(config)))
    # MySQL's lock_wait_timeout is whole seconds (at least 1); PostgreSQL's lock_timeout is 0.2 s
    bound = (0.2 if env.engine == "postgres" else 1.0) + 0.5
    assert len(waits) >= 5 and max(waits) < bound, waits
