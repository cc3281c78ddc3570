"""Fences that hold (issue 22), on real servers: a run's writes commit only while it holds its lock
in the state that allows them, checked in the write's own transaction under a row lock of its
``zdt_backfill_runs`` row that a takeover, a stop or a halt must wait for.

The copy test stalls a batch in flight (a slow trigger on the target, or on the checkpoint
UPDATE), takes the run over while it is stalled, and shows that nothing of the old run commits
after the takeover returned. With the earlier fence (a plain read in the checkpoint UPDATE)
PostgreSQL's stalled batch committed after the takeover in both places: its fused batch reads the
guard in the statement's snapshot, taken before the takeover. On InnoDB the checkpoint UPDATE's
subquery already share-locked the run's row, so neither stall breaks the earlier fence there (it
still guarded nothing before that UPDATE: the key-by-key writes of a chunk that failed on data
committed unfenced); the fence now takes its lock at the start of every write transaction.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import seed_users, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.repair import repair_ranges
from zdt_backfill.dialects import Range
from zdt_backfill.errors import RunStoppedError
from zdt_backfill.lifecycle import Runner
from zdt_backfill.routing.flags import NEW, FencedFlagStore, FlagValue, TableFlagStore
from zdt_backfill.state import runstate
from zdt_backfill.state.runstate import COPYING, REPAIRING, RunHandle

pytestmark = pytest.mark.integration

SLOW_KEY = 1_200
STALL_SECONDS = 4


def slow_trigger(env, where: str) -> None:
    """A trigger that sleeps once the batch holding SLOW_KEY is in flight: ``target``, BEFORE INSERT
    on users_new (the batch stalls writing its rows); ``checkpoint``, BEFORE UPDATE on the
    checkpoints (it stalls after its rows, in the checkpoint UPDATE that carried the old guard)."""
    table, row = ("users_new", "NEW.id") if where == "target" else ("zdt_backfill_checkpoints", "NEW.watermark")
    when = f"{row} >= {SLOW_KEY} AND {row} < {SLOW_KEY + 400}" if where == "checkpoint" else f"{row} = {SLOW_KEY}"
    event = "INSERT" if where == "target" else "UPDATE"
    if env.engine == "postgres":
        env.sql("CREATE FUNCTION zdt_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF {when} THEN PERFORM pg_sleep({STALL_SECONDS}); END IF; RETURN NEW; END $$")
        env.sql(f"CREATE TRIGGER zdt_test_slow BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION zdt_test_slow()")
    else:
        env.sql(f"CREATE TRIGGER zdt_test_slow BEFORE {event} ON {table} FOR EACH ROW BEGIN"
                f" IF {when} THEN DO SLEEP({STALL_SECONDS}); END IF; END")


def stalled(env) -> bool:
    if env.engine == "postgres":
        return env.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") > 0
    return env.scalar("SELECT count(*) FROM information_schema.processlist WHERE state = 'User sleep'") > 0


def expire_lease(env, run_id: str) -> None:
    past = ("now() - interval '1 hour'" if env.engine == "postgres"
            else "current_timestamp(6) - INTERVAL 1 HOUR")
    env.sql(f"UPDATE zdt_backfill_runs SET lease_expires_at = {past} WHERE run_id = %s", (run_id,))


def committed(env, run_id: str) -> tuple:
    """What the old run has committed: the target's rows and its checkpoints."""
    return (env.scalar("SELECT count(*) FROM users_new"),
            tuple(env.sql("SELECT partition_no, watermark, rows_written, batches FROM zdt_backfill_checkpoints"
                          " WHERE run_id = %s ORDER BY partition_no", (run_id,))))


@pytest.mark.parametrize("where", ["target", "checkpoint"])
def test_a_batch_in_flight_never_commits_after_a_takeover(env, monkeypatch, where):
    seed_users(env, 3_000)
    monkeypatch.setattr(runstate, "HEARTBEAT_SECONDS", 3600.0)  # the old run's lease is not renewed meanwhile
    old = RunConfig.from_params(users_conf(env, partitions=1, batch_size=400), run_id="fence-old")
    plan = Runner(old, env.db, owner="old").preflight()
    slow_trigger(env, where)
    outcome: dict = {}

    def copy() -> None:
        try:
            outcome["result"] = Runner(old, env.db, owner="old").copy_partition(plan["partitions"][0])
        except BaseException as exc:  # noqa: BLE001 - the outcome is the assertion
            outcome["error"] = exc

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not stalled(env):
        assert time.monotonic() < deadline and worker.is_alive(), outcome
        time.sleep(0.05)
    # The batch holding SLOW_KEY is in flight. Its lease expires (MySQL: this UPDATE itself waits for
    # the batch's shared lock), and a new run takes the table over.
    expire_lease(env, "fence-old")
    new = RunConfig.from_params(users_conf(env, partitions=1, batch_size=400), run_id="fence-new")
    taken = Runner(new, env.db, owner="new").preflight()
    assert taken["lock"]["mode"] == "takeover", taken["lock"]
    after_takeover = committed(env, "fence-old")
    worker.join(120)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), RunStoppedError), outcome
    assert committed(env, "fence-old") == after_takeover  # no row, no checkpoint of the old run after it
    # the stalled batch committed before the takeover could (it waited for the fence), or not at all
    copied = env.scalar("SELECT count(*) FROM users_new")
    assert copied == after_takeover[0] and copied < 3_000
    # the new run adopted exactly what was committed, and finishes the copy exactly
    for p in taken["partitions"]:
        Runner(new, env.db, owner="new").copy_partition(p)
    assert env.scalar("SELECT count(*) FROM users_new") == 3_000
    assert env.scalar("SELECT count(*) FROM users_new WHERE id = %s", (SLOW_KEY,)) == 1


def a_run_taken_over(env) -> tuple[RunConfig, RunHandle]:
    """A run that pre-flight planned, then lost its lock to another run (the old handle is stale)."""
    seed_users(env, 500)
    old = RunConfig.from_params(users_conf(env), run_id="stale")
    Runner(old, env.db, owner="old").preflight()
    expire_lease(env, "stale")
    Runner(RunConfig.from_params(users_conf(env), run_id="fresh"), env.db, owner="new").preflight()
    return old, RunHandle(env.db, old, "old")


def test_a_repair_batch_of_a_run_taken_over_writes_nothing(env):
    old, handle = a_run_taken_over(env)
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (7, 'only-in-target')")
    with pytest.raises(RunStoppedError, match="no longer holds the backfill lock"):
        repair_ranges(old, env.db, [Range(0, 100)], fence=handle.fencer(handle.fence_states("repair")))
    assert env.scalar("SELECT count(*) FROM users_new") == 1  # the extra row was not deleted, nothing upserted
    assert handle.fence_states("repair") == (REPAIRING,)


def test_ddl_of_a_run_taken_over_does_not_run(env):
    old, handle = a_run_taken_over(env)
    with pytest.raises(RunStoppedError):
        env.db.run_ddl([(env.db.dialect.truncate_sql("users_legacy"), ())], "test", fence=handle.fencer())
    assert env.scalar("SELECT count(*) FROM users_legacy") == 500


def test_a_flag_flip_of_a_run_taken_over_is_refused_and_a_flip_back_is_not(env):
    old, handle = a_run_taken_over(env)
    table = TableFlagStore(env.db)
    table.set("users_new_read_path", FlagValue("legacy", 0), "stale")
    fenced = FencedFlagStore(table, handle.fencer((COPYING,)), env.db)
    with pytest.raises(RunStoppedError):
        fenced.set("users_new_read_path", NEW, "stale")
    assert table.get("users_new_read_path").path == "legacy"
    fenced.set("users_new_read_path", FlagValue("legacy", 0), "stale")  # the safe direction is never fenced


def test_the_fence_holds_a_state_change_until_the_write_commits(env):
    """A stop (any state change reads the row FOR UPDATE) waits for a write transaction holding
    the fence, and a write transaction started after the stop finds it."""
    seed_users(env, 100)
    config = RunConfig.from_params(users_conf(env), run_id="fence-wait")
    Runner(config, env.db, owner="t").preflight()
    handle = RunHandle(env.db, config, "t")
    planned = handle.row().state
    moved = {}
    with env.db.session() as conn:
        handle.fence(conn, (planned,))

        def halt() -> None:
            t0 = time.monotonic()
            RunHandle(env.db, config, "other").step("halt", "test")
            moved["waited"] = time.monotonic() - t0

        t = threading.Thread(target=halt, daemon=True)
        t.start()
        time.sleep(1.5)
        assert "waited" not in moved  # the halt waits for the fenced transaction
        conn.commit()
    t.join(30)
    assert moved["waited"] >= 1.4
    with env.db.session() as conn, pytest.raises(RunStoppedError, match=f"state {planned}"):
        handle.fence(conn, (planned,))
