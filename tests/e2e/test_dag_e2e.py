"""The whole DAG through ``dag.test()`` on PostgreSQL and MariaDB primary + replica pairs.

Contract: 100,000 rows while a background writer keeps inserting, updating and
deleting source rows and dual-writing them, as the application would; the run must
end in contract with the target exactly equal to the transformed source (every key).

Rollback: an injected mismatch (a trigger corrupting some target rows) must send the
run to rollback, which leaves the target empty and the legacy data untouched.
"""

from __future__ import annotations

import random
import threading

import pytest

from conftest import projection_diff, run_dag, seed_users, source_fingerprint, users_conf

pytestmark = pytest.mark.e2e

ROWS = 100_000


class DualWriter(threading.Thread):
    """Application stand-in: each write changes the source and the target in one transaction."""

    def __init__(self, env, key_max: int):
        super().__init__(daemon=True)
        self.env = env
        self.key_max = key_max
        self.next_key = 10_000_000
        self.stop_event = threading.Event()
        self.ops = {"insert": 0, "update": 0, "delete": 0, "retried": 0}
        self.error: BaseException | None = None
        pg = env.engine == "postgres"
        self.upsert = (
            "INSERT INTO users_new (id, email_normalized, data_hash) SELECT id, lower(trim(email)), md5(legacy_data)"
            " FROM users_legacy WHERE id = %s ON CONFLICT (id) DO UPDATE SET"
            " email_normalized = EXCLUDED.email_normalized, data_hash = EXCLUDED.data_hash"
            if pg else
            "INSERT INTO users_new (id, email_normalized, data_hash) SELECT id, lower(trim(email)), md5(legacy_data)"
            " FROM users_legacy WHERE id = %s ON DUPLICATE KEY UPDATE"
            " email_normalized = VALUES(email_normalized), data_hash = VALUES(data_hash)"
        )
        self.now = "now()" if pg else "CURRENT_TIMESTAMP(6)"

    def run(self):
        rnd = random.Random(42)
        db = self.env.db
        conn = db.connect()
        try:
            while not self.stop_event.is_set():
                op = rnd.choice(["insert", "update", "update", "update", "delete"])
                try:
                    if op == "insert":
                        key = self.next_key
                        db.execute(conn, f"INSERT INTO users_legacy (id, email, legacy_data, updated_at) VALUES (%s, %s, %s, {self.now})",
                                   (key, f" New{key}@Example.COM", f"data{key}"))
                        db.execute(conn, self.upsert, (key,))
                        self.next_key += 1
                    elif op == "update":
                        key = rnd.randint(1, self.key_max)
                        db.execute(conn, f"UPDATE users_legacy SET email = %s, legacy_data = %s, updated_at = {self.now} WHERE id = %s",
                                   (f" Changed{key}@Example.COM ", f"changed{rnd.random()}", key))
                        db.execute(conn, self.upsert, (key,))
                    else:
                        key = rnd.randint(1, self.key_max)
                        db.execute(conn, "DELETE FROM users_legacy WHERE id = %s", (key,))
                        db.execute(conn, "DELETE FROM users_new WHERE id = %s", (key,))
                    conn.commit()
                    self.ops[op] += 1
                except Exception as exc:  # lock wait / deadlock: the application retries
                    conn.rollback()
                    if not db.is_transient(exc):
                        raise
                    self.ops["retried"] += 1
                self.stop_event.wait(0.003)
        except BaseException as exc:
            self.error = exc
        finally:
            conn.close()

    def stop(self):
        self.stop_event.set()
        self.join(30)
        assert self.error is None, f"writer failed: {self.error!r}"


def test_backfill_under_live_dual_writes_ends_in_contract(env, backfill_dag, monkeypatch):
    seed_users(env, ROWS)
    writer = DualWriter(env, ROWS)
    writer.start()
    try:
        writer.stop_event.wait(1.0)  # recent dual-writes exist for the check
        conf = users_conf(env, replica_conn_ids=[env.replica_conn_id], batch_size=5_000, partitions=4,
                          dual_write="check", dual_write_updated_column="updated_at")
        dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    finally:
        writer.stop()
    assert writer.ops["update"] > 50 and writer.ops["insert"] > 10 and writer.ops["delete"] > 10, writer.ops
    assert str(dr.state) == "success", states
    assert states["contract.finish"] == "success"
    assert states["rollback.stop_backfill"] == "skipped" and states["approval.hold"] == "skipped"
    assert report["state"] == "contracted" and report["success"]
    assert report["decision"]["decision"]["branch"] == "forward"
    assert report["validation"]["mismatched"] == 0 and report["validation"]["match_pct"] == 100.0
    assert report["dual_write"]["mode"] == "check" and report["dual_write"]["recent_rows"] > 0
    assert report["partitions"] == 4 and report["rows_per_second"] > 0
    assert [t["to"] for t in report["transitions"]][-4:] == ["validating", "contracting", "soaking", "contracted"]
    assert set(report["windows"]) == {"pre_backfill", "active_backfill", "post_backfill"}
    # exact, over every key, after the writer stopped
    assert projection_diff(env) == 0
    assert env.scalar("SELECT count(*) FROM users_new") == env.scalar("SELECT count(*) FROM users_legacy")
    assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "new"
    assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_write_path'") == "new"
    assert env.scalar("SELECT state FROM zdt_backfill_runs") == "contracted"
    assert env.scalar("SELECT count(*) FROM users_legacy") > 0  # legacy_action is keep by default


def test_a_corrupting_target_rolls_back_leaving_target_empty_and_legacy_untouched(env, backfill_dag, monkeypatch):
    seed_users(env, ROWS)
    if env.engine == "postgres":
        env.sql(
            "CREATE FUNCTION corrupt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.id %% 500 = 0 THEN NEW.data_hash := 'corrupt'; END IF; RETURN NEW; END $$;\n"
            "CREATE TRIGGER corrupt BEFORE INSERT OR UPDATE ON users_new FOR EACH ROW EXECUTE FUNCTION corrupt()"
        )
    else:  # one trigger per event: the repair's upsert updates the rows the copy inserted
        for event in ("INSERT", "UPDATE"):
            env.sql(
                f"CREATE TRIGGER corrupt_{event.lower()} BEFORE {event} ON users_new FOR EACH ROW BEGIN"
                " IF NEW.id %% 500 = 0 THEN SET NEW.data_hash = 'corrupt'; END IF; END"
            )
    before = source_fingerprint(env)
    conf = users_conf(env, replica_conn_ids=[env.replica_conn_id], batch_size=20_000, partitions=2)
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    # a trigger corrupts every 500th row on every write, so the repair cannot fix them either:
    # 0.2 % > 0.01 % after repair rolls back, and a rolled-back run is a failed Airflow run
    assert str(dr.state) == "failed", states
    assert states["contract.flip_routing"] == "skipped"
    assert states["rollback.finish"] == "success" and states["report.write_report"] == "failed"
    assert report["state"] == "rolled_back" and not report["success"]
    assert report["validation"]["different"] == ROWS // 500 and report["validation"]["after_repair"]
    assert report["repair"]["repaired"]["different"] == ROWS // 500
    assert report["decision"]["decision"]["branch"] == "rollback"
    assert [d["step"] for d in report["destructive"]] == ["repair", "truncate"]  # each recorded before it ran
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert source_fingerprint(env) == before
    assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "legacy"
    assert env.scalar("SELECT state FROM zdt_backfill_runs") == "rolled_back"


def test_invalid_conf_fails_params_validation_before_any_task(env, backfill_dag, monkeypatch):
    from airflow.sdk.exceptions import ParamValidationError

    seed_users(env, 100)
    before = source_fingerprint(env)
    for bad in ({"source_table": "users_legacy; DROP TABLE users_new"}, {"batch_size": "lots"}, {"profile": "qa"}):
        with pytest.raises(ParamValidationError):
            run_dag(backfill_dag, env, monkeypatch, users_conf(env, **bad))
    assert source_fingerprint(env) == before
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'zdt%%'"
    assert env.scalar(tables + (" AND table_schema = database()" if env.engine == "mysql" else "")) == 0


def test_unknown_table_fails_preflight_and_changes_nothing(env, backfill_dag, monkeypatch):
    seed_users(env, 100)
    dr, states, _ = run_dag(backfill_dag, env, monkeypatch, users_conf(env, target_table="no_such_table"))
    assert str(dr.state) == "failed"
    assert states["preflight.check"] == "failed"
    assert states["backfill.copy_partition"] == "upstream_failed"
    assert states["report.write_report"] != "success"  # pre-flight never took the lock: no report
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'zdt%%'"
    assert env.scalar(tables + (" AND table_schema = database()" if env.engine == "mysql" else "")) == 0


def test_empty_source_table_still_validates_and_contracts(env, backfill_dag, monkeypatch):
    seed_users(env, 0)
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, users_conf(env, replica_conn_ids=[env.replica_conn_id]))
    assert str(dr.state) == "success", states
    assert states["backfill.copy_partition"] == "skipped"  # mapped over zero partitions
    assert states["validation.checksum"] == "success"
    assert report["state"] == "contracted"
    assert report["validation"]["source_rows"] == 0 and report["rows_written"] == 0
