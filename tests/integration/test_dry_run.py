"""The dry run (``zdt_backfill.lifecycle.dryrun``, ``zdt-backfill dry-run`` and the seed's
``scripts/backfill_executor.sh``) against real PostgreSQL and MariaDB: it EXPLAINs the real
batch statement, lists partition and batch boundaries, estimates the duration, and writes
nothing: no table's row counters move, no control table appears, the target stays empty."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, seed_users, source_fingerprint, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.lifecycle import dryrun

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "backfill_executor.sh"


def zdt_tables(env) -> list[str]:
    if env.engine == "postgres":
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'zdt%%'")
    else:
        rows = env.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = database() AND table_name LIKE 'zdt%%'"
        )
    return sorted(r[0] for r in rows)


def write_counters(env) -> dict:
    """Row write counters: PostgreSQL n_tup_ins/upd/del of every user table (read on a fresh
    connection, after the statistics were flushed); MariaDB's global Innodb_rows_* and Handler_write."""
    if env.engine == "postgres":
        time.sleep(1.2)  # backends flush their statistics at most once a second, and at exit
        rows = env.sql(
            "SELECT pg_stat_clear_snapshot();\n"
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables ORDER BY relname"
        )
        return {r[0]: tuple(r[1:]) for r in rows}
    # Oracle MySQL counts its internal temporary tables (information_schema reads) in Handler_write:
    # there only InnoDB's row counters, which every write to a user table moves.
    handlers = "" if env.flavour == "mysql" else ", 'Handler_write', 'Handler_update', 'Handler_delete'"
    rows = env.sql("SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_rows_inserted', 'Innodb_rows_updated',"
                   f" 'Innodb_rows_deleted'{handlers})")
    return {r[0]: int(r[1]) for r in rows}


def test_dry_run_explains_lists_boundaries_and_writes_nothing(env):
    seed_users(env, 1_000)
    before_src = source_fingerprint(env)
    config = RunConfig.from_params(users_conf(env, partitions=2, batch_size=100, profile="prod", dry_run=True), run_id="dry")
    before = write_counters(env)
    if env.engine == "postgres":
        assert before["users_legacy"][0] == 1_000  # the counters are read, and flushed

    result = dryrun.dry_run(config, env.db)

    after = write_counters(env)
    assert after == before
    assert zdt_tables(env) == []
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert source_fingerprint(env) == before_src

    doc = json.loads(json.dumps(result))  # JSON-ready
    assert doc["dry_run"] is True and doc["engine"] == env.engine
    assert [(p["lo"], p["hi"]) for p in doc["partitions"]] == [(1, 500), (501, 1000)]
    assert doc["partitions"][0]["first_batches"] == [
        {"lo_exclusive": 0, "hi": 100, "keys": 100},
        {"lo_exclusive": 100, "hi": 200, "keys": 100},
        {"lo_exclusive": 200, "hi": 300, "keys": 100},
    ]
    assert doc["partitions"][1]["first_batches"][0] == {"lo_exclusive": 500, "hi": 600, "keys": 100}
    for p in doc["partitions"]:
        ex = p["explain"]
        assert ex["params"] == [p["first_batches"][0]["lo_exclusive"], p["first_batches"][0]["hi"]]
        assert ex["full_scan"] is False, ex["access"]
        assert ex["statement"] == doc["batch_statement"] and ex["statement"].startswith("INSERT INTO")
        if env.engine == "postgres":
            assert "Index" in ex["access"] and doc["key_index"] in ex["access"]
            assert ex["cost"] > 0
        else:
            assert "access_type=range key=PRIMARY" in ex["access"]
            assert "FORCE INDEX (PRIMARY)" in ex["statement"]
            assert "FORCE INDEX" not in p["explain_without_force_index"]["statement"]
    assert doc["full_scan"] is False and doc["full_scan_partitions"] == []
    if os.environ.get("ZDT_CAPTURE_EXPLAIN"):
        Path(os.environ["ZDT_CAPTURE_EXPLAIN"], f"{env.engine}_range.json").write_text(
            json.dumps(doc["partitions"][0]["explain"]["plan"], indent=1))
    est = doc["estimate"]
    assert est["max_rows_per_second"] == 500 and est["seconds"] == pytest.approx(2.0)  # 1,000 rows at 500 rows/s
    assert est["batches_estimate"] == 10


def test_full_scan_is_flagged_on_the_real_server(env):
    """Without the key index's help a whole-table range is a full scan, and the flag says so:
    PostgreSQL without the plan pinning; MariaDB, whose optimizer still range-scans a clustered
    primary key, when the index is ignored. The forced statement is what fixes it on MySQL."""
    seed_users(env, 2_000)
    config = RunConfig.from_params(users_conf(env), run_id="dry")
    d = env.db.dialect
    stmt = d.copy_batch_sql("users_legacy", "users_new", "id", config.columns, None, "PRIMARY")
    with env.db.session() as conn:
        if env.engine == "postgres":
            doc = d.parse_plan(env.db.query(conn, d.explain_sql(stmt), (0, 2_000))[0][0])
        else:
            ignored = stmt.replace("FORCE INDEX", "IGNORE INDEX")
            doc = d.parse_plan(env.db.query(conn, d.explain_sql(ignored), (0, 2_000))[0][0])
            forced = d.parse_plan(env.db.query(conn, d.explain_sql(stmt), (0, 2_000))[0][0])
            assert not d.full_scans(forced, "users_legacy")
        conn.rollback()
    assert d.full_scans(doc, "users_legacy"), doc
    if os.environ.get("ZDT_CAPTURE_EXPLAIN"):  # how tests/unit/test_dryrun.py's documents were captured
        Path(os.environ["ZDT_CAPTURE_EXPLAIN"], f"{env.engine}_full_scan.json").write_text(json.dumps(doc, indent=1))
    assert env.scalar("SELECT count(*) FROM users_new") == 0


def test_dry_run_cli_writes_the_json_file(env, tmp_path, capsys):
    from zdt_backfill import cli

    seed_users(env, 300)
    out = tmp_path / "explain_plan.json"
    code = cli.main(["dry-run", "--url", env.url, "--conf", json.dumps(users_conf(env, batch_size=50)),
                     "--output", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "no full scan" in stdout and str(out) in stdout
    assert json.loads(out.read_text())["partitions"][0]["first_batches"][0]["hi"] == 50
    assert zdt_tables(env) == []


def run_script(env, tmp_path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("BACKFILL_CONF", "ZDT_BACKFILL_URL")}
    environ.update(BACKFILL_URL=env.url, **extra)
    return subprocess.run([str(SCRIPT), *args], cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=120)


def test_seed_script_end_to_end(env, tmp_path):
    seed_users(env, 2_500)
    before = write_counters(env)
    r = run_script(env, tmp_path, "--mode=validate", "--output=explain_plan.json",
                   BACKFILL_DRY_RUN="true", BATCH_SIZE="1000", TARGET_TABLE="users_legacy")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "explain_plan.json").read_text())
    assert doc["source_table"] == "users_legacy" and doc["target_table"] == "users_new"
    assert doc["batch_size"] == 1000 and doc["profile"] == "prod"
    assert [p for p in doc["policy_refusals"] if "a ramp with no error signal" in p], doc["policy_refusals"]
    assert doc["partitions"][0]["first_batches"] == [
        {"lo_exclusive": 0, "hi": 1000, "keys": 1000},
        {"lo_exclusive": 1000, "hi": 2000, "keys": 1000},
        {"lo_exclusive": 2000, "hi": 2500, "keys": 500},
    ]
    assert doc["partitions"][0]["explain"]["full_scan"] is False
    assert doc["estimate"]["seconds"] == pytest.approx(5.0, rel=0.05)  # prod: 500 rows/s (InnoDB samples its row estimate)
    assert write_counters(env) == before
    assert zdt_tables(env) == []
    assert env.scalar("SELECT count(*) FROM users_new") == 0


@pytest.mark.parametrize(
    "args, extra, message",
    [
        (["--mode=validate"], {"BACKFILL_DRY_RUN": "false"}, "BACKFILL_DRY_RUN=false refused"),
        (["--mode=validate"], {}, "BACKFILL_DRY_RUN=<unset> refused"),
        (["--mode=execute"], {"BACKFILL_DRY_RUN": "true"}, "--mode=execute refused"),
        ([], {"BACKFILL_DRY_RUN": "true"}, "--mode=<none> refused"),
    ],
)
def test_seed_script_refuses_anything_but_a_dry_run(pg_env, tmp_path, args, extra, message):
    seed_users(pg_env, 10)
    r = run_script(pg_env, tmp_path, *args, "--output=explain_plan.json", **extra)
    assert r.returncode == 2
    assert message in r.stderr and "real runs go through the DAG" in r.stderr
    assert not (tmp_path / "explain_plan.json").exists()
    assert zdt_tables(pg_env) == []


def test_seed_script_takes_a_conf_and_reports_a_failed_preflight(env, tmp_path):
    seed_users(env, 10)
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"source_table": "users_legacy", "target_table": "users_new", "key": "email",
                                "columns": {"data_hash": "md5(legacy_data)"}}))
    r = run_script(env, tmp_path, "--mode=validate", "--output=plan.json", BACKFILL_DRY_RUN="true",
                   BACKFILL_CONF=str(conf))
    assert r.returncode == 1
    assert "only integer keys" in r.stderr and "nothing was written" in r.stderr
    assert not Path(tmp_path / "plan.json").exists()
