"""The write flip is a one-way door (issue 22), on real servers: once the application writes the
new schema only, nothing destroys, overwrites or re-copies what it wrote; sequences move before
the flip; a rejected drop keeps legacy and the run contracts; an interrupted rollback's
checkpoints are never adopted."""

from __future__ import annotations

import pytest

from conftest import projection_diff, seed_users, source_fingerprint, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.lifecycle import Runner
from zdt_backfill.routing.flags import NEW, TableFlagStore
from zdt_backfill.state.runstate import PostFlipError, RunHandle

pytestmark = pytest.mark.integration


def runner(env, config, **kw):
    return Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db), **kw)


def up_to_the_flip(env, config) -> None:
    """Pre-flight, copy, catch-up, validation, decision, then the contract's flip (reads, sequences, writes)."""
    plan = runner(env, config).preflight()
    for p in plan["partitions"]:
        runner(env, config).copy_partition(p)
    runner(env, config).start_catchup()
    assert runner(env, config).validate()["mismatched"] == 0
    assert runner(env, config).decide()["next"] == "contract"
    runner(env, config).contract_step("flip_routing")


def table_image(env) -> list[tuple]:
    """Every row of users_new, its values as bytes (exact: no collation in the way)."""
    if env.engine == "postgres":
        q = ("SELECT id, convert_to(coalesce(email_normalized, '<null>'), 'UTF8'),"
             " convert_to(coalesce(data_hash, '<null>'), 'UTF8') FROM users_new ORDER BY id")
    else:
        q = ("SELECT id, CAST(coalesce(email_normalized, '<null>') AS BINARY), CAST(coalesce(data_hash, '<null>')"
             " AS BINARY) FROM users_new ORDER BY id")
    return [tuple(bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for v in r) for r in env.sql(q)]


def application_writes_the_new_schema_only(env) -> None:
    """What the application does after the write flip: writes that exist nowhere but in users_new."""
    env.sql("INSERT INTO users_new (id, email_normalized, data_hash) VALUES (900001, 'new@x.io', 'n1');\n"
            "UPDATE users_new SET email_normalized = 'Changed After Flip' WHERE id = 10;\n"
            "DELETE FROM users_new WHERE id = 20")


def test_after_the_flip_rollback_repair_revalidation_and_new_runs_are_refused(env):
    seed_users(env, 3_000)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, legacy_action="keep"), run_id="door")
    up_to_the_flip(env, config)
    handle = RunHandle(env.db, config)
    assert handle.row().state == "soaking"
    assert TableFlagStore(env.db).get(config.write_flag) == NEW
    application_writes_the_new_schema_only(env)
    image = table_image(env)
    legacy = source_fingerprint(env)

    refusals = {
        "rollback": lambda: runner(env, config).rollback_step("stop"),
        "empty target": lambda: runner(env, config).rollback_step("empty_target"),
        "repair": lambda: runner(env, config).repair(),
        "validation": lambda: runner(env, config).validate(),
        "new run": lambda: runner(env, RunConfig.from_params(users_conf(env), run_id="door-2")).preflight(),
    }
    for what, step in refusals.items():
        with pytest.raises(PostFlipError, match="post-backfill window") as err:
            step()
        assert "revert window" in str(err.value), what
    # the run's end (the report task) never halts it: it stays past the flip, lease released
    ended = runner(env, config).finish()
    assert ended["state"] == "soaking" and not ended["success"]
    # an expired lease is no way in either: a takeover is refused at the database, flags aside
    env.sql("UPDATE zdt_backfill_runs SET lease_expires_at = NULL")
    with pytest.raises(PostFlipError):
        Runner(RunConfig.from_params(users_conf(env), run_id="door-3"), env.db, owner="test").preflight()
    # every write the application made is there, byte for byte; legacy untouched; flags as they were
    assert table_image(env) == image and source_fingerprint(env) == legacy
    assert TableFlagStore(env.db).get(config.write_flag) == NEW and handle.row().state == "soaking"
    # the contract goes on from there: finish, contracted
    assert runner(env, config).contract_step("finish")["state"] == "contracted"
    assert table_image(env) == image


def test_a_halted_run_whose_write_flag_is_new_is_never_rolled_back(env):
    """A run halted with the writes flipped (an older version's trap): the flag store is read right
    before acting, and the rollback refuses."""
    seed_users(env, 500)
    config = RunConfig.from_params(users_conf(env), run_id="door-halted")
    plan = runner(env, config).preflight()
    for p in plan["partitions"]:
        runner(env, config).copy_partition(p)
    RunHandle(env.db, config, "operator").transition("halted", "operator halted the run")
    TableFlagStore(env.db).set(config.write_flag, NEW, "elsewhere")
    rows = env.scalar("SELECT count(*) FROM users_new")
    with pytest.raises(PostFlipError, match="flag users_new_write_path"):
        runner(env, config).rollback_step("stop")
    assert RunHandle(env.db, config).row().state == "halted" and env.scalar("SELECT count(*) FROM users_new") == rows


def test_sequences_move_past_the_copy_before_the_write_flip(env):
    """The application's first insert without a key after the flip gets one above every copied key
    (PostgreSQL identity; MySQL AUTO_INCREMENT), during the soak, not a day later."""
    seed_users(env, 2_000)
    if env.engine == "postgres":
        env.sql("ALTER TABLE users_new ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    else:
        env.sql("ALTER TABLE users_new MODIFY id BIGINT NOT NULL AUTO_INCREMENT")
    config = RunConfig.from_params(users_conf(env, soak_minutes=60, legacy_action="drop"), run_id="door-seq")
    up_to_the_flip(env, config)
    assert RunHandle(env.db, config).row().state == "soaking"
    env.sql("INSERT INTO users_new (email_normalized, data_hash) VALUES ('first@new.io', 'h')")
    new_id = env.scalar("SELECT id FROM users_new WHERE email_normalized = 'first@new.io'")
    assert new_id > 2_000


@pytest.mark.parametrize("who", ["alice", "timeout"])
def test_a_rejected_or_timed_out_drop_keeps_legacy_and_the_run_contracts(env, who):
    seed_users(env, 1_000)
    legacy = source_fingerprint(env)
    config = RunConfig.from_params(users_conf(env, approval="required", legacy_action="drop"), run_id=f"door-{who}")
    plan = runner(env, config).preflight()
    for p in plan["partitions"]:
        runner(env, config).copy_partition(p)
    runner(env, config).start_catchup()
    runner(env, config).validate()
    assert runner(env, config).decide()["next"] == "approval"
    runner(env, config).record_approval("contract", "dba")
    runner(env, config).contract_step("flip_routing")
    runner(env, config).record_approval("reject", who, what="drop")
    out = runner(env, config).contract_step("legacy_action")
    assert out["action"] == "keep" and out["kept_because"]
    runner(env, config).contract_step("reclaim_storage")
    assert runner(env, config).contract_step("finish")["state"] == "contracted"
    assert source_fingerprint(env) == legacy  # legacy intact
    kept = RunHandle(env.db, config).events("legacy_kept")
    assert len(kept) == 1 and kept[0].detail["by"] == who


def test_a_rollback_interrupted_after_truncate_leaves_no_checkpoint_to_adopt(env, monkeypatch):
    """TRUNCATE forgets the copy's checkpoints in the transaction that records it: a new run taking
    over copies every row again, even with sampled validation (which would miss an almost empty target)."""
    seed_users(env, 4_000)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, approval="required", validation="sampled"),
                                   run_id="door-truncate")
    plan = runner(env, config).preflight()
    for p in plan["partitions"]:
        runner(env, config).copy_partition(p)
    runner(env, config).start_catchup()
    runner(env, config).validate()
    runner(env, config).decide()
    runner(env, config).record_approval("roll back", "dba")
    for step in ("stop", "flip_routing", "empty_target"):
        runner(env, config).rollback_step(step)
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert env.scalar("SELECT count(*) FROM zdt_backfill_checkpoints WHERE run_id = %s", (config.run_id,)) == 0

    def broken(*a, **k):
        raise RuntimeError("sequence restore failed")

    with monkeypatch.context() as m:
        m.setattr("zdt_backfill.lifecycle.rollback.restore_sequences", broken)
        with pytest.raises(RuntimeError):
            runner(env, config).rollback_step("restore_sequences")
    assert runner(env, config).finish()["state"] == "halted"
    # a new run takes the halted run over: nothing adopted, every row copied again, then exact
    again = RunConfig.from_params(users_conf(env, batch_size=1_000, approval="auto", validation="sampled"),
                                  run_id="door-truncate-2")
    plan = runner(env, again).preflight()
    assert plan["lock"]["mode"] == "takeover" and plan["lock"]["adopted_partitions"] == []
    for p in plan["partitions"]:
        runner(env, again).copy_partition(p)
    assert env.scalar("SELECT count(*) FROM users_new") == 4_000 and projection_diff(env) == 0
