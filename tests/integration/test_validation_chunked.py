"""Chunked validation on real servers: keys named exactly, bisection, re-check, checklist,
sampling, replica source (both engines)."""

from __future__ import annotations

import time

from conftest import seed_users, users_conf
from zdt_backfill.config import RunConfig, Thresholds
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.lifecycle import Runner
from zdt_backfill.lifecycle.decision import HOLD, decide_branch
from zdt_backfill.verify import checksum
from zdt_backfill.verify.checklist import failed_data_items, run_checklist


def no_wait(_seconds: float) -> None:
    pass


def copied(env, rows: int, **conf) -> tuple[RunConfig, list[Partition]]:
    """users_legacy with ``rows`` rows and users_new filled with the exact projection by SQL."""
    seed_users(env, rows)
    env.sql("INSERT INTO users_new (id, email_normalized, data_hash)"
            " SELECT id, lower(trim(email)), md5(legacy_data) FROM users_legacy")
    config = RunConfig.from_params(users_conf(env, **conf), run_id="chunked")
    half = rows // 2
    return config, [Partition(0, 1, half), Partition(1, half + 1, rows)]


def keys_of(v: checksum.ValidationResult) -> dict[str, list]:
    return {kind: sorted(keys) for kind, keys in v.sample_keys.items()}


def test_injected_rows_are_all_found_classed_and_named_in_short_chunks(env):
    rows = 20_000
    config, parts = copied(env, rows, batch_size=1_000)
    clean = checksum.validate(config, env.db, parts, sleep=no_wait)
    assert (clean.mismatched, clean.source_rows, clean.target_rows) == (0, rows, rows)
    assert clean.chunks_checked > 2 and clean.chunk_rows_max < rows  # no statement covered the table
    env.sql("DELETE FROM users_new WHERE id IN (1, 7001, 20000)")
    env.sql("UPDATE users_new SET data_hash = 'x' WHERE id IN (100, 10000, 15500)")
    env.sql("UPDATE users_new SET email_normalized = NULL WHERE id = 12345")
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (-5, 'below'), (0, 'below'), (10000000, 'above')")
    v = checksum.validate(config, env.db, parts, sleep=no_wait)
    assert keys_of(v) == {"missing": [1, 7001, 20000], "different": [100, 10000, 12345, 15500],
                          "extra": [-5, 0, 10000000]}
    assert (v.missing, v.different, v.extra, v.unexplained_ranges) == (3, 4, 3, 0)
    assert (v.source_rows, v.target_rows) == (rows, rows)
    assert v.chunks_checked > 2 and v.chunk_rows_max < rows
    assert all(not r.match for r in v.ranges) and sum(r.missing + r.different + r.extra for r in v.ranges) == 10
    d = v.to_dict()
    assert d["chunks_checked"] == v.chunks_checked and d["rechecked_keys"] == 10 and d["cleared_by_recheck"] == 0


def test_bisection_finds_one_changed_row_among_200k(env):
    rows = 200_000
    config, parts = copied(env, rows, batch_size=50_000)  # first chunks > BISECT_ROWS: they are split
    env.sql("UPDATE users_new SET data_hash = upper(data_hash) WHERE id = 123457")
    t0 = time.monotonic()
    v = checksum.validate(config, env.db, parts, sleep=no_wait)
    seconds = time.monotonic() - t0
    assert keys_of(v) == {"different": [123457]} and v.mismatched == 1
    assert v.subchunks_checked > 0 and v.chunks_checked > 1 and v.chunk_rows_max < rows
    leaf = v.ranges[0]
    assert len(v.ranges) == 1 and leaf.lo < 123457 <= leaf.hi
    assert max(leaf.source_rows, leaf.target_rows) <= checksum.BISECT_ROWS
    print(f"[{env.engine}] one changed row of {rows} found in {seconds:.2f}s, {v.chunks_checked} chunks, "
          f"{v.subchunks_checked} sub-chunks")


def test_a_difference_cleared_by_a_write_before_the_recheck_is_not_counted(env):
    config, parts = copied(env, 5_000, batch_size=1_000)
    env.sql("UPDATE users_new SET data_hash = 'in flight' WHERE id IN (42, 43)")
    waits: list[float] = []

    def dual_write_lands() -> None:  # the application's write of key 42 lands between the reads
        env.sql("UPDATE users_new SET data_hash = (SELECT md5(legacy_data) FROM users_legacy WHERE id = 42)"
                " WHERE id = 42")

    v = checksum.validate(config, env.db, parts, sleep=waits.append, on_recheck=dual_write_lands)
    assert waits == [config.validation_recheck_seconds] == [2.0]
    assert keys_of(v) == {"different": [43]} and v.mismatched == 1
    assert (v.rechecked_keys, v.cleared_by_recheck) == (2, 1)


def test_checklist_items_pass_and_fail_on_crafted_cases(env):
    config, parts = copied(env, 3_000, batch_size=1_000)
    v = checksum.validate(config, env.db, parts, sleep=no_wait)
    items = {i["name"]: i for i in run_checklist(config, env.db, v, [])}
    assert items["row_count_parity"]["status"] == "pass"
    assert items["whole_table_checksum"]["status"] == "n/a"  # transformed columns
    assert items["no_nulls_left"]["status"] == "pass"
    assert items["no_nulls_left"]["implied_by_validation"]  # every key compared: no table-wide join
    assert items["no_orphaned_foreign_keys"]["status"] == "n/a"
    assert items["cache_hit_ratio"]["status"] in ("pass", "warn") and "miss_ratio" in items["cache_hit_ratio"]
    assert items["replicas_caught_up"]["status"] == "n/a"
    assert failed_data_items(list(items.values())) == []

    env.sql("UPDATE users_new SET data_hash = NULL WHERE id = 7")
    env.sql("CREATE TABLE orders (id bigint NOT NULL PRIMARY KEY, user_id bigint,"
            " CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users_new (id))")
    orphan = ("SET session_replication_role = replica;\n" if env.engine == "postgres"
              else "SET foreign_key_checks = 0;\n")
    env.sql(orphan + "INSERT INTO orders VALUES (1, 5), (2, 99999), (3, NULL)")
    env.sql("DELETE FROM users_new WHERE id = 3000")
    v = checksum.validate(config, env.db, parts, sleep=no_wait)
    items = {i["name"]: i for i in run_checklist(config, env.db, v, [])}
    assert items["no_nulls_left"]["status"] == "fail" and items["no_nulls_left"]["nulls"] == 1
    assert not items["no_nulls_left"]["implied_by_validation"]  # differences found: counted by the query
    fk = items["no_orphaned_foreign_keys"]
    assert fk["status"] == "fail" and fk["orphans"] == 1 and fk["foreign_keys"][0]["parent"] == "users_new.id"
    assert items["row_count_parity"]["status"] == "fail"
    failed = failed_data_items(list(items.values()))
    assert len(failed) == 3
    d = decide_branch(0, 0, 3_000, Thresholds(), 0, failed)  # even with no mismatch left: hold
    assert d.branch == HOLD and any("orphan" in r for r in d.reasons)


def test_whole_table_checksum_of_an_identity_copy(env):
    seed_users(env, 2_000)
    like = ("CREATE TABLE users_copy (LIKE users_legacy INCLUDING ALL)" if env.engine == "postgres"
            else "CREATE TABLE users_copy LIKE users_legacy")
    env.sql(like)
    env.sql("INSERT INTO users_copy SELECT * FROM users_legacy")
    cols = {"email": "email", "legacy_data": "legacy_data", "updated_at": "updated_at"}
    config = RunConfig.from_params(users_conf(env, target_table="users_copy", columns=cols), run_id="identity")
    v = checksum.validate(config, env.db, [Partition(0, 1, 2_000)], sleep=no_wait)
    assert v.mismatched == 0
    items = {i["name"]: i for i in run_checklist(config, env.db, v, [])}
    assert items["whole_table_checksum"]["status"] == "pass", items["whole_table_checksum"]
    env.sql("UPDATE users_copy SET email = 'changed' WHERE id = 1000")
    again = checksum.validate(config, env.db, [Partition(0, 1, 2_000)], sleep=no_wait)
    items = {i["name"]: i for i in run_checklist(config, env.db, again, [])}
    assert items["whole_table_checksum"]["status"] == "fail"
    assert items["whole_table_checksum"]["differing"] == 1  # from the chunked validation: no whole-table read


def test_sampled_validation_reports_its_size_confidence_and_method(env):
    rows = 20_000
    config, parts = copied(env, rows, batch_size=1_000, validation="sampled", validation_confidence=0.999,
                           validation_detect_pct=1.0)
    env.sql("UPDATE users_new SET data_hash = 'x' WHERE mod(id, 10) = 0")  # 10 % of the rows differ
    v = checksum.validate(config, env.db, parts, sleep=no_wait, seed=7)
    n = checksum.sample_size(0.999, 1.0)
    assert v.mode == "sampled" and v.sampling["sample_rows"] == n == 688
    assert v.sampling["confidence"] == 0.999 and "uniformly" in v.sampling["method"]
    assert 0 < v.source_rows < rows and v.different > 0
    assert all(k % 10 == 0 for k in v.sample_keys["different"])
    items = {i["name"]: i for i in run_checklist(config, env.db, v, [])}
    assert items["row_count_parity"]["status"] == "n/a"


def test_validation_on_the_replica_gives_the_primarys_result(env):
    config, parts = copied(env, 10_000, batch_size=1_000)
    env.sql("UPDATE users_new SET data_hash = 'x' WHERE id IN (10, 9000)")
    env.sql("DELETE FROM users_new WHERE id = 5000")
    deadline = time.monotonic() + 60
    with env.replica_db.session() as conn:
        while True:
            n = env.replica_db.query(conn, "SELECT count(*) FROM users_new WHERE data_hash = 'x'")[0][0]
            conn.rollback()
            if n == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    on_primary = checksum.validate(config, env.db, parts, sleep=no_wait)
    on_replica = checksum.validate(config, env.db, parts, read_db=env.replica_db, sleep=no_wait)
    assert keys_of(on_replica) == keys_of(on_primary) == {"missing": [5000], "different": [10, 9000]}
    assert (on_replica.source_rows, on_replica.target_rows) == (on_primary.source_rows, on_primary.target_rows)
    assert on_replica.source == "replica" and on_primary.source == "primary"


def _copied_run(env, rows: int, **conf):
    """A real run (pre-flight, copy, catch-up state) whose validation is then read through the lifecycle."""
    from zdt_backfill.copying.copier import PartitionCopier
    from zdt_backfill.lifecycle.preflight import run_preflight

    seed_users(env, rows)
    config = RunConfig.from_params(users_conf(env, **conf), run_id="lifecycle-validate")
    plan = run_preflight(config, env.db, [])
    for p in plan.partitions:
        PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index).run()
    Runner(config, env.db, owner="test").start_catchup()
    return config


def test_lifecycle_validation_reads_a_caught_up_replica_and_records_the_checklist(env):
    from zdt_backfill.signals.lag import ReplicaLagProbe

    config = _copied_run(env, 6_000, partitions=2, batch_size=1_000, validation_source="replica",
                         replica_conn_ids=[env.replica_conn_id], validation_recheck_seconds=0)
    env.sql("UPDATE users_new SET data_hash = 'x' WHERE id = 4321")
    probe = ReplicaLagProbe(env.replica_db, Runner(config, env.db).heartbeat_name)
    out = Runner(config, env.db, owner="test", probes=[probe], replica=env.replica_db).validate()
    # read on the replica once its heartbeat passed the start of validation; re-checked on the primary
    assert out["source"] == "replica" and out["sample_keys"] == {"different": [4321]}
    assert (out["source_rows"], out["target_rows"], out["mismatched"]) == (6_000, 6_000, 1)
    items = {i["name"]: i["status"] for i in out["checklist"]}
    assert items["row_count_parity"] == "pass" and items["no_nulls_left"] == "pass"
    assert Runner(config, env.db, owner="test", probes=[probe]).decide()["next"] != "contract"  # never forward on a difference


def test_lifecycle_validation_reads_the_primary_when_the_replica_never_catches_up(pg_env):

    env = pg_env
    config = _copied_run(env, 3_000, validation_source="replica", replica_conn_ids=[env.replica_conn_id],
                         replica_wait_timeout_seconds=3, validation_recheck_seconds=0)
    with env.replica_db.session() as conn:
        env.replica_db.query(conn, "SELECT pg_wal_replay_pause()")
        conn.commit()
    try:
        t0 = time.monotonic()
        out = Runner(config, env.db, owner="test", replica=env.replica_db).validate()
        assert out["source"] == "primary" and out["mismatched"] == 0 and out["source_rows"] == 3_000
        assert 3 <= time.monotonic() - t0 < 30
    finally:
        with env.replica_db.session() as conn:
            env.replica_db.query(conn, "SELECT pg_wal_replay_resume()")
            conn.commit()


def test_validation_under_a_concurrent_dual_writer_is_exact(env):
    """Updates and inserts written to both schemas in one transaction each, all through the
    validation: every chunk reads one snapshot, so no correct dual-write reads as a difference;
    a wrong row written meanwhile is found."""
    import random
    import threading

    rows = 30_000
    config, parts = copied(env, rows, batch_size=1_000, validation_chunk_seconds=0.02)
    stop, writes, errors = threading.Event(), [0], []

    def writer() -> None:
        rnd = random.Random(7)
        next_key = rows + 1
        try:
            with env.db.session() as c:
                while not stop.is_set():
                    k, email = rnd.randint(1, rows), f"  W{rnd.random()}@X.io "
                    env.db.execute(c, "UPDATE users_legacy SET email = %s WHERE id = %s", (email, k))
                    env.db.execute(c, "UPDATE users_new SET email_normalized = lower(trim(%s)) WHERE id = %s", (email, k))
                    env.db.execute(c, "INSERT INTO users_legacy (id, email, legacy_data) VALUES (%s, %s, %s)",
                                   (next_key, email, f"d{next_key}"))
                    env.db.execute(c, "INSERT INTO users_new (id, email_normalized, data_hash)"
                                      " SELECT id, lower(trim(email)), md5(legacy_data) FROM users_legacy WHERE id = %s",
                                   (next_key,))
                    c.commit()
                    next_key += 1
                    writes[0] += 1
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        v = checksum.validate(config, env.db, parts, sleep=no_wait)
    finally:
        stop.set()
        t.join(10)
    assert not errors and writes[0] > 20
    assert v.chunks_checked > 10 and v.mismatched == 0 and v.cleared_by_recheck == 0, v.sample_keys
    assert v.source_rows == v.target_rows >= rows
    env.sql("UPDATE users_new SET email_normalized = 'wrong' WHERE id = 777")
    again = checksum.validate(config, env.db, parts, sleep=no_wait)
    assert keys_of(again) == {"different": [777]}
