"""The engine against real PostgreSQL and MariaDB (each test runs on both, on a fresh database)."""

from __future__ import annotations

import threading
import time

import pytest

import localdb
from conftest import USERS_COLUMNS, missing, projection_diff, seed_users, source_fingerprint, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.db import Database
from zdt_backfill.errors import BatchError, CheckpointConflictError, ConcurrentRunError, PreflightError
from zdt_backfill.lifecycle import Runner, rollback
from zdt_backfill.lifecycle.preflight import run_preflight
from zdt_backfill.signals.lag import ReplicaStatusProbe
from zdt_backfill.state.checkpoint import CheckpointStore
from zdt_backfill.state.runstate import HALTED, RunHandle
from zdt_backfill.verify import checksum

pytestmark = pytest.mark.integration


def backfill(env, run_id="run1", probes=None, on_batch=None, **conf):
    config = RunConfig.from_params(users_conf(env, **conf), run_id=run_id)
    plan = run_preflight(config, env.db, probes or [])
    results = [
        PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index, probes, on_batch).run()
        for p in plan.partitions
    ]
    return config, plan, results


def control_tables(env) -> list[str]:
    if env.engine == "postgres":
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'zdt%%'")
    else:
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = database() AND table_name LIKE 'zdt%%'")
    return sorted(r[0] for r in rows)


def test_copy_with_sparse_keys_keeps_every_batch_within_batch_size(env):
    seed_users(env, 5_000, sparse_step=997)
    seen = []
    config, plan, results = backfill(env, batch_size=300, partitions=3, on_batch=lambda p, c, r, s: seen.append(c.keys))
    assert len(plan.partitions) == 3
    assert seen and max(seen) <= 300 and sum(seen) == 5_000
    assert sum(r.progress["rows_written"] for r in results) == 5_000
    assert projection_diff(env) == 0


def test_insert_if_absent_keeps_rows_the_application_dual_wrote(env):
    seed_users(env, 2_000)
    env.sql("INSERT INTO users_new (id, email_normalized, data_hash) VALUES (7, 'written-by-app', 'x')")
    _, _, results = backfill(env, batch_size=500)
    assert sum(r.progress["rows_written"] for r in results) == 1_999
    assert env.sql("SELECT email_normalized, data_hash FROM users_new WHERE id = 7")[0] == ("written-by-app", "x")
    assert env.scalar("SELECT count(*) FROM users_new") == 2_000


def _install_failure(env, key: int) -> None:
    if env.engine == "postgres":
        env.sql(
            "CREATE FUNCTION zdt_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.id = {key} THEN RAISE EXCEPTION 'injected failure at %%', NEW.id; END IF; RETURN NEW; END $$;\n"
            "CREATE TRIGGER zdt_fail BEFORE INSERT ON users_new FOR EACH ROW EXECUTE FUNCTION zdt_fail()"
        )
    else:
        env.sql(
            "CREATE TRIGGER zdt_fail BEFORE INSERT ON users_new FOR EACH ROW BEGIN"
            f" IF NEW.id = {key} THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; END IF; END"
        )


def test_a_failed_partition_resumes_from_its_checkpoint_without_recopying(env):
    seed_users(env, 10_000)
    _install_failure(env, 6_123)  # raised like an application error: a retry would not fix it
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=1), run_id="resume")
    plan = run_preflight(config, env.db, [])
    part = Partition.from_dict(plan.partitions[0])
    # one key in 7,000 scanned is 0.014 % > 0.01 %: the circuit breaker halts the partition,
    # after writing the failing batch's other keys one by one and checkpointing the batch
    with pytest.raises(BatchError, match="circuit breaker.*injected failure"):
        PartitionCopier(config, env.db, part, plan.key_index).run()
    with env.db.session() as conn:
        (progress,) = CheckpointStore(env.db).progress(conn, "resume")
    assert progress.watermark == 7_000 and progress.rows_written == 6_999 and progress.data_errors == 1
    assert env.scalar("SELECT count(*) FROM users_new") == 6_999
    env.sql("DROP TRIGGER zdt_fail" + (" ON users_new" if env.engine == "postgres" else ""))
    result = PartitionCopier(config, env.db, part, plan.key_index).run()
    assert result.resumed_from == 7_000
    assert result.attempt_rows == 3_000 and result.attempt_batches == 3
    assert result.progress["keys_scanned"] == 10_000  # no key scanned twice across attempts
    assert result.progress["rows_written"] == 9_999
    assert projection_diff(env) == 1  # key 6123, recorded as a data error: validation names it, repair rewrites it


def test_foreign_key_errors_fail_the_batch_instead_of_being_skipped(env):
    env.sql("CREATE TABLE parent (id bigint PRIMARY KEY)")
    env.sql("INSERT INTO parent VALUES (1), (2)")
    env.sql("CREATE TABLE src (id bigint PRIMARY KEY, parent_id bigint)")
    env.sql("INSERT INTO src VALUES (1, 1), (2, 2), (3, 99)")
    env.sql("CREATE TABLE dst (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent (id))")
    config = RunConfig.from_params(
        {"conn_id": "x", "source_table": "src", "target_table": "dst", "key": "id",
         "columns": {"parent_id": "parent_id"}, "profile": "dev", "dual_write": "assumed"}, run_id="fk")
    plan = run_preflight(config, env.db, [])
    copier = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index)
    with pytest.raises(BatchError, match="(?i)circuit breaker.*foreign key") as err:
        copier.run()
    assert "a retry cannot fix it" in str(err.value) and copier.retries == 0
    # never skipped silently (INSERT IGNORE would): the bad key is a data error, the good ones are written
    assert env.sql("SELECT id FROM dst ORDER BY id") == [(1,), (2,)]


def test_fill_mode_fills_only_rows_still_null(env):
    seed_users(env, 3_000)
    env.sql("ALTER TABLE users_legacy ADD COLUMN email_normalized varchar(255) NULL")
    env.sql("UPDATE users_legacy SET email_normalized = 'app-wrote' WHERE id IN (5, 2500)")
    config, plan, results = backfill(
        env, mode="fill", target_table=None, columns={"email_normalized": "lower(trim(email))"}, batch_size=700
    )
    assert env.scalar("SELECT count(*) FROM users_legacy WHERE email_normalized IS NULL") == 0
    assert env.scalar("SELECT count(*) FROM users_legacy WHERE email_normalized = 'app-wrote'") == 2
    assert env.scalar("SELECT count(*) FROM users_legacy WHERE email_normalized = lower(trim(email))") == 2_998
    v = checksum.validate(config, env.db, [Partition.from_dict(p) for p in plan.partitions])
    assert v.different == 2 and v.missing == 0 and v.extra == 0
    handle = RunHandle(env.db, config)
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    rollback.stop(config, env.db, handle, "test")
    out = rollback.empty_target(config, env.db, handle)
    # through the copy's batch loop: keyset batches of batch_size, checkpointed under its own key
    assert out["batches"] == 5 and out["rows"] == 3_000
    with env.db.session() as conn:
        (cp,) = CheckpointStore(env.db).progress(conn, "run1:rollback")
    assert cp.watermark == 3_000 and cp.batches == 5
    assert env.scalar("SELECT count(*) FROM users_legacy WHERE email_normalized IS NOT NULL") == 0
    assert env.scalar("SELECT count(*) FROM users_legacy") == 3_000


BAD_INPUT = [
    ({"source_table": "no_such_table"}, "no_such_table not found"),
    ({"target_table": "no_such_target"}, "no_such_target not found"),
    ({"columns": {"no_such_column": "lower(email)"}}, "missing in target"),
    ({"key": "email"}, "only integer keys"),
    ({"columns": {"email_normalized": "lower(no_such_source_column)"}}, "does not run"),
    ({"key": "nope"}, "not found in source"),
]


@pytest.mark.parametrize("override, message", BAD_INPUT)
def test_preflight_refuses_bad_input_and_changes_nothing(env, override, message):
    seed_users(env, 1_000)
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (1, 'kept')")
    before = source_fingerprint(env)
    config = RunConfig.from_params(users_conf(env, **override), run_id="bad")
    with pytest.raises(PreflightError, match=message):
        run_preflight(config, env.db, [])
    assert control_tables(env) == []
    assert env.sql("SELECT id, email_normalized FROM users_new") == [(1, "kept")]
    assert source_fingerprint(env) == before


def test_non_unique_or_unindexed_key_is_refused(env):
    env.sql("CREATE TABLE s2 (id bigint NOT NULL, v text)")
    env.sql("CREATE TABLE t2 (id bigint PRIMARY KEY, v text)")
    env.sql("INSERT INTO s2 VALUES (1, 'a'), (1, 'b')")
    config = RunConfig.from_params(
        {"conn_id": "x", "source_table": "s2", "target_table": "t2", "key": "id", "columns": {"v": "v"},
         "dual_write": "assumed", "profile": "dev"}, run_id="noindex")
    with pytest.raises(PreflightError, match="unique index"):
        run_preflight(config, env.db, [])
    assert control_tables(env) == []


def test_not_null_target_column_is_refused_in_fill_mode(env):
    seed_users(env, 10)
    env.sql("ALTER TABLE users_legacy ADD COLUMN n bigint NOT NULL DEFAULT 0")
    config = RunConfig.from_params(users_conf(env, mode="fill", target_table=None, columns={"n": "id * 2"}), run_id="nn")
    with pytest.raises(PreflightError, match="NOT NULL"):
        run_preflight(config, env.db, [])


def test_a_second_run_on_the_same_table_is_refused_while_the_first_holds_its_lease(env):
    seed_users(env, 100)
    first = RunConfig.from_params(users_conf(env), run_id="first")
    run_preflight(first, env.db, [])
    run_preflight(first, env.db, [])  # re-entrant for the same run (a retried pre-flight)
    second = RunConfig.from_params(users_conf(env), run_id="second")
    with pytest.raises(ConcurrentRunError, match="first"):
        run_preflight(second, env.db, [])
    RunHandle(env.db, first).release()  # the first run ends (halted, copy kept)
    plan = run_preflight(second, env.db, [])
    assert plan.lock["mode"] == "takeover" and plan.lock["previous_run"] == "first"


def test_a_halted_run_stops_its_partitions(env):
    from zdt_backfill.errors import RunStoppedError

    seed_users(env, 3_000)
    config = RunConfig.from_params(users_conf(env, batch_size=100, partitions=1), run_id="stopme")
    plan = run_preflight(config, env.db, [])

    def halt_after_third_batch(progress, chunk, rows, seconds):
        if progress.batches == 3:
            RunHandle(env.db, config, "operator").transition(HALTED, "operator halted the run")

    with pytest.raises(RunStoppedError):
        PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index,
                        on_batch=halt_after_third_batch).run()
    assert env.scalar("SELECT count(*) FROM users_new") == 300


def test_validation_names_missing_different_and_extra_keys(env):
    seed_users(env, 4_000)
    config, plan, _ = backfill(env, batch_size=1_000, partitions=2)
    parts = [Partition.from_dict(p) for p in plan.partitions]
    assert checksum.validate(config, env.db, parts).mismatched == 0
    env.sql("DELETE FROM users_new WHERE id = 10")
    env.sql("UPDATE users_new SET data_hash = 'corrupt' WHERE id = 3001")
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (999999, 'orphan')")
    v = checksum.validate(config, env.db, parts)
    assert (v.missing, v.different, v.extra) == (1, 1, 1)
    assert v.sample_keys == {"missing": [10], "different": [3001], "extra": [999999]}
    assert v.source_rows == 4_000 and v.target_rows == 4_000
    assert v.match_pct == pytest.approx(100 * (1 - 3 / 4_000))
    assert sum(not r.match for r in v.ranges) == 2  # only the two damaged ranges were diffed


def test_validation_is_exact_across_charsets_and_case(env):
    """A latin1 target column against a utf8mb4 expression, and a case-only difference."""
    seed_users(env, 1_000)
    if env.engine == "mysql":
        env.sql("ALTER TABLE users_new MODIFY email_normalized VARCHAR(255) CHARACTER SET latin1 COLLATE latin1_swedish_ci")
    config, plan, _ = backfill(env, batch_size=400)
    parts = [Partition.from_dict(p) for p in plan.partitions]
    assert checksum.validate(config, env.db, parts).mismatched == 0
    env.sql("UPDATE users_new SET email_normalized = upper(email_normalized) WHERE id = 500")
    v = checksum.validate(config, env.db, parts)
    assert (v.missing, v.different, v.extra) == (0, 1, 0) and v.sample_keys == {"different": [500]}


def test_postgres_validation_sees_through_collations_and_column_types(pg_env):
    env = pg_env
    seed_users(env, 1_000)
    env.sql("CREATE COLLATION zdt_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    env.sql('ALTER TABLE users_new ALTER COLUMN email_normalized TYPE text COLLATE zdt_ci')
    env.sql("ALTER TABLE users_new ADD COLUMN score numeric(10,2)")
    columns = {**USERS_COLUMNS, "score": "id * 2"}  # integer expression, stored as 2.00
    config, plan, _ = backfill(env, batch_size=400, columns=columns)
    parts = [Partition.from_dict(p) for p in plan.partitions]
    assert checksum.validate(config, env.db, parts).mismatched == 0  # 2 vs 2.00 is no difference
    env.sql("UPDATE users_new SET email_normalized = upper(email_normalized) WHERE id = 321")
    v = checksum.validate(config, env.db, parts)
    assert v.sample_keys == {"different": [321]} and v.unexplained_ranges == 0


def test_rollback_truncates_the_target_restores_sequences_and_is_safe_twice(env):
    seed_users(env, 500)
    if env.engine == "postgres":
        env.sql("ALTER TABLE users_new ADD COLUMN seq_no bigserial")
        env.sql("SELECT setval('users_new_seq_no_seq', 41)")  # where the application had it
    else:
        env.sql("ALTER TABLE users_new MODIFY id BIGINT NOT NULL AUTO_INCREMENT")
        env.sql("ALTER TABLE users_new AUTO_INCREMENT = 1000")
    config, _, _ = backfill(env)
    before = source_fingerprint(env)
    assert env.scalar("SELECT count(*) FROM users_new") == 500
    handle = RunHandle(env.db, config)
    Runner(config, env.db, owner="test").start_catchup()
    Runner(config, env.db, owner="test").validate()
    for _ in range(2):  # rollback twice is safe: the second pass is a no-op
        for step in ("stop", "flip_routing", "empty_target", "restore_sequences", "clear_caches", "finish"):
            from zdt_backfill.routing.flags import TableFlagStore

            Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db)).rollback_step(step)
        assert env.scalar("SELECT count(*) FROM users_new") == 0
        assert source_fingerprint(env) == before
        assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "legacy"
        assert handle.row().state == "rolled_back"
        if env.engine == "postgres":
            # restored to the value recorded at pre-flight (41), not restarted at 1
            assert env.scalar("SELECT last_value FROM users_new_seq_no_seq") == 41
        else:
            assert env.scalar("SELECT auto_increment FROM information_schema.tables WHERE table_schema = database()"
                              " AND table_name = 'users_new'") == 1000
    steps = [e.detail["step"] for e in handle.events("destructive")]
    assert steps.count("truncate") == 1 and "reset_sequences" in steps  # logged once, before they ran
    if env.engine == "postgres":
        assert env.scalar("SELECT nextval('users_new_seq_no_seq')") == 42


def test_replica_lag_probe_reads_a_paused_replica_as_lagging(env):
    seed_users(env, 10)
    localdb.wait_replica_caught_up(env.pair)
    probe = ReplicaStatusProbe(env.replica_db)

    def settles_under_a_second() -> bool:  # Oracle MySQL's whole-second Seconds_Behind_Source can read 1 a moment
        deadline = time.monotonic() + 5
        while (lag := probe.measure()) is None or lag >= 1.0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    try:
        assert settles_under_a_second()
        localdb.pause_replay(env.pair)
        try:
            time.sleep(1.5)
            env.sql("UPDATE users_legacy SET email = 'x' WHERE id = 1")
            time.sleep(0.5)
            lag = probe.measure()
            if env.engine == "postgres":
                assert lag >= 1.0
            else:
                assert lag is None  # SQL thread stopped: Seconds_Behind_Master is NULL -> lagging
        finally:
            localdb.resume_replay(env.pair)
        localdb.wait_replica_caught_up(env.pair)
        assert settles_under_a_second()
    finally:
        probe.close()
    with pytest.raises(ValueError, match="not a replica"):
        ReplicaStatusProbe(env.db).measure()
    dead = Database(connect=lambda: (_ for _ in ()).throw(OSError("refused")), dialect=env.db.dialect, name="dead")
    assert ReplicaStatusProbe(dead).measure() is None


def test_batches_wait_while_the_replica_lags(env):
    seed_users(env, 2_000)
    localdb.wait_replica_caught_up(env.pair)
    config = RunConfig.from_params(
        users_conf(env, batch_size=500, partitions=1, max_replica_lag_seconds=0.5, replica_conn_ids=["replica"]),
        run_id="lagged",
    )
    plan = run_preflight(config, env.db, [])
    probe = ReplicaStatusProbe(env.replica_db)
    localdb.pause_replay(env.pair)
    # Replay-status lag grows with time since the last replayed commit (a heartbeat probe
    # comes with the health-gating issue): let time pass, then write so replay is behind.
    time.sleep(1.0)
    env.sql("UPDATE users_legacy SET email = 'y' WHERE id = 2")
    timer = threading.Timer(3.0, localdb.resume_replay, args=(env.pair,))
    timer.start()
    try:
        result = PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index, [probe]).run()
    finally:
        timer.join()
        probe.close()
    throttled = result.throttled_seconds
    assert sum(throttled.values()) >= 1.5, throttled
    assert set(throttled) <= {"lag", "lag-unknown", "replica-unreachable"}
    assert result.max_replica_lag_seconds >= 0.5 or {"lag-unknown", "replica-unreachable"} & set(throttled)
    assert projection_diff(env) == 0


def test_rollback_clears_cache_keys_by_pattern_with_real_redis(env):
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=15)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        missing("Redis is not running on 127.0.0.1:6379")
    client.flushdb()
    client.mset({f"users:{i}": i for i in range(2_500)})
    client.set("orders:1", 1)
    config = RunConfig.from_params(
        users_conf(env, cache_redis_url="redis://127.0.0.1:6379/15", cache_key_pattern="users:*"), run_id="cache")
    assert rollback.clear_caches(config)["cleared"] == 2_500
    assert client.dbsize() == 1 and client.get("orders:1") == b"1"
    client.flushdb()


def test_rerunning_preflight_in_the_same_run_keeps_the_checkpointed_partitions(env):
    seed_users(env, 3_000)
    first = RunConfig.from_params(users_conf(env, batch_size=500, partitions=2), run_id="replan")
    plan = run_preflight(first, env.db, [])
    (p0, p1) = [(p["lo"], p["hi"]) for p in plan.partitions]  # cut at the median key (MySQL's estimate is approximate)
    assert p0[0] == 1 and p1 == (p0[1] + 1, 3000) and 1350 <= p0[1] <= 1650, plan.partitions
    PartitionCopier(first, env.db, Partition.from_dict(plan.partitions[1]), plan.key_index).run()
    # A cleared task re-runs pre-flight, which would now plan three partitions.
    again = RunConfig.from_params(users_conf(env, batch_size=500, partitions=3), run_id="replan")
    replan = run_preflight(again, env.db, [])
    assert replan.partitions == plan.partitions
    with pytest.raises(CheckpointConflictError, match="checkpointed as"):
        PartitionCopier(again, env.db, Partition(1, 1001, 2000), replan.key_index).run()
    PartitionCopier(again, env.db, Partition.from_dict(replan.partitions[0]), replan.key_index).run()
    assert projection_diff(env) == 0


class LostAckConnection:
    """A real connection whose first commit of a batch (an INSERT into users_new) succeeds on the
    server, then reports a lost connection, as a dropped acknowledgement would."""

    def __init__(self, conn, error, state):
        self._conn, self._error, self._state = conn, error, state
        self._batch = False

    def cursor(self, *a, **kw):
        outer = self
        cur = self._conn.cursor(*a, **kw)

        class Cursor:
            def execute(self, sql, params=()):
                if "INSERT INTO" in sql and "users_new" in sql:  # MySQL's carries a leading tag comment
                    outer._batch = True
                return cur.execute(sql, params)

            def __getattr__(self, name):
                return getattr(cur, name)

        return Cursor()

    def commit(self):
        self._conn.commit()
        if self._batch and not self._state["failed"]:
            self._state["failed"] = True
            raise self._error
        self._batch = False

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_batch_whose_commit_acknowledgement_was_lost_is_not_copied_again(env):
    import MySQLdb
    import psycopg

    seed_users(env, 2_000)
    config = RunConfig.from_params(users_conf(env, batch_size=500, partitions=1), run_id="lostack")
    plan = run_preflight(config, env.db, [])
    error = psycopg.OperationalError("server closed the connection") if env.engine == "postgres" else \
        MySQLdb.OperationalError(2013, "Lost connection to server during query")
    real_connect = env.db.connect
    state = {"failed": False}
    db = Database(connect=lambda: LostAckConnection(real_connect(), error, state), dialect=env.db.dialect,
                  schema=env.db.schema, name="lossy")
    result = PartitionCopier(config, db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()
    assert state["failed"] and result.retries == 1
    assert result.progress["keys_scanned"] == 2_000 and result.progress["batches"] == 4
    assert projection_diff(env) == 0


# ---------------------------------------------------------------------- guards on destructive paths
def test_mysql_target_with_another_unique_index_is_refused(mysql_env):
    env = mysql_env
    seed_users(env, 100)
    env.sql("ALTER TABLE users_new ADD UNIQUE KEY uq_email (email_normalized)")
    with pytest.raises(PreflightError, match="besides the key"):
        run_preflight(RunConfig.from_params(users_conf(env), run_id="uq"), env.db, [])
    assert control_tables(env) == []


def test_postgres_collision_on_another_unique_index_fails_the_batch_loudly(pg_env):
    env = pg_env
    seed_users(env, 100)
    env.sql("CREATE UNIQUE INDEX uq_hash ON users_new (data_hash)")
    config = RunConfig.from_params(users_conf(env, columns={"email_normalized": "lower(trim(email))", "data_hash": "'same'"}),
                                   run_id="uq")
    plan = run_preflight(config, env.db, [])
    with pytest.raises(BatchError, match="(?i)unique"):
        PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()


def test_partial_unique_index_does_not_count_as_a_unique_key(pg_env):
    env = pg_env
    env.sql("CREATE TABLE s3 (id bigint NOT NULL, v text)")
    env.sql("CREATE UNIQUE INDEX s3_id ON s3 (id) WHERE v IS NOT NULL")
    env.sql("CREATE TABLE t3 (id bigint PRIMARY KEY, v text)")
    config = RunConfig.from_params({"conn_id": "x", "source_table": "s3", "target_table": "t3", "key": "id",
                                    "columns": {"v": "v"}, "dual_write": "assumed",
                                    "profile": "dev"}, run_id="partial")
    with pytest.raises(PreflightError, match="unique index"):
        run_preflight(config, env.db, [])


def test_fill_mode_refuses_columns_the_expressions_read(env):
    seed_users(env, 10)
    config = RunConfig.from_params(
        users_conf(env, mode="fill", target_table=None, columns={"email": "lower(email)"}), run_id="inplace")
    with pytest.raises(PreflightError, match="read by the expressions"):
        run_preflight(config, env.db, [])
    assert control_tables(env) == []


def test_copy_refuses_a_target_that_is_not_a_fresh_expand_target(env):
    seed_users(env, 10)
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (5, 'dual-written'), (424242, 'unrelated')")
    with pytest.raises(PreflightError, match="not a fresh expand target"):
        run_preflight(RunConfig.from_params(users_conf(env), run_id="fresh"), env.db, [])
    assert env.scalar("SELECT count(*) FROM users_new") == 2 and control_tables(env) == []


@pytest.mark.parametrize("fmt", ["STATEMENT", "MIXED"])
def test_statement_based_binlog_is_refused(mysql_env, fmt):
    env = mysql_env
    seed_users(env, 10)
    env.sql(f"SET GLOBAL binlog_format = '{fmt}'")
    try:
        with pytest.raises(PreflightError, match=f"binlog_format={fmt}.*binlog_row_image="):
            run_preflight(RunConfig.from_params(users_conf(env), run_id="sbr"), env.db, [])
    finally:
        env.sql("SET GLOBAL binlog_format = 'ROW'")


def test_rollback_refuses_to_touch_another_runs_target(env):
    from zdt_backfill.errors import RunStoppedError

    seed_users(env, 100)
    mine = RunConfig.from_params(users_conf(env), run_id="mine")
    run_preflight(mine, env.db, [])
    RunHandle(env.db, mine).release()  # the run ended (halted) ...
    theirs = RunConfig.from_params(users_conf(env), run_id="theirs")
    run_preflight(theirs, env.db, [])  # ... and a new run took the table over
    PartitionCopier(theirs, env.db, Partition(0, 1, 100)).run()
    with pytest.raises(RunStoppedError, match="does not hold the backfill lock"):
        rollback.stop(mine, env.db, RunHandle(env.db, mine), "late rollback of the old run")
    assert env.scalar("SELECT count(*) FROM users_new") == 100


def _hold_then_commit(env, statements, seconds):
    """An application transaction: run ``statements`` (sql, params), hold them ``seconds``, commit."""
    conn = env.db.connect()
    for sql, params in statements:
        env.db.execute(conn, sql, params)
    ready = threading.Event()

    def finish():
        ready.set()
        time.sleep(seconds)
        conn.commit()
        conn.close()

    th = threading.Thread(target=finish)
    th.start()
    ready.wait()
    return th


def test_a_delete_committed_while_the_batch_waits_for_its_row_is_not_resurrected(env):
    """The application deletes a source row (and its dual-written target row) in a transaction
    open when the batch reaches the row: the batch's shared lock waits (and retries) until the
    delete commits, then the row is gone from the source and is not copied back."""
    seed_users(env, 3_000)
    app = _hold_then_commit(env, [("DELETE FROM users_new WHERE id = %s", (1_500,)),
                                  ("DELETE FROM users_legacy WHERE id = %s", (1_500,))], 1.5)
    try:
        _, _, results = backfill(env, batch_size=1_000, partitions=1, lock_timeout_seconds=0.2)
    finally:
        app.join()
    assert env.scalar("SELECT count(*) FROM users_new WHERE id = 1500") == 0
    assert env.scalar("SELECT count(*) FROM users_new") == 2_999
    assert results[0].progress["rows_written"] == 2_999 and results[0].retries >= 1
    assert projection_diff(env) == 0


def test_a_row_dual_written_into_a_chunk_the_batch_saw_empty_is_kept(env):
    """The fused batch inserts a chunk whose target keys are all absent with a plain INSERT; an
    application row written into that chunk after the batch's snapshot fails it with a unique
    violation, and the batch is done again with insert-if-absent: the application's row stays."""
    seed_users(env, 3_000)
    app = _hold_then_commit(env, [("INSERT INTO users_new (id, email_normalized, data_hash)"
                                   " VALUES (%s, 'written-by-app', 'x')", (1_200,))], 1.0)
    try:
        _, _, results = backfill(env, batch_size=1_000, partitions=1, lock_timeout_seconds=5)
    finally:
        app.join()
    assert env.sql("SELECT email_normalized, data_hash FROM users_new WHERE id = 1200")[0] == ("written-by-app", "x")
    assert env.scalar("SELECT count(*) FROM users_new") == 3_000
    assert results[0].progress["rows_written"] == 2_999
    assert results[0].progress["keys_scanned"] == 3_000 and results[0].progress["batches"] == 3
