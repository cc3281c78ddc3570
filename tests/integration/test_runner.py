"""The Runner walks the whole lifecycle in one process, in the DAG's order, on real servers:
the order of the steps is written once (``Runner.run``), and ``zdt-backfill run`` uses it."""

from __future__ import annotations

import json

import pytest

from conftest import projection_diff, seed_users, source_fingerprint, users_conf
from zdt_backfill import cli
from zdt_backfill.config import RunConfig
from zdt_backfill.lifecycle import Runner
from zdt_backfill.routing.flags import NEW, TableFlagStore
from zdt_backfill.state.runstate import STEPS, TRANSITIONS, RunHandle

pytestmark = pytest.mark.integration


def states(env, config) -> list[str]:
    events = RunHandle(env.db, config).events("transition")
    return [e.state_to for e in events]


def test_run_walks_the_whole_lifecycle_to_contract(env, tmp_path):
    seed_users(env, 5_000)
    config = RunConfig.from_params(users_conf(env, batch_size=1_000), run_id="runner-contract")
    store = TableFlagStore(env.db)
    out = Runner(config, env.db, owner="test", flag_store=store).run(tmp_path)
    assert out["error"] is None and out["path"] == "contract", out.get("error")
    assert out["ending"]["success"] and out["ending"]["state"] == "contracted"
    assert projection_diff(env) == 0
    assert states(env, config) == ["planned", "copying", "catching_up", "validating", "contracting", "soaking", "contracted"]
    assert store.get(config.routing_flag) == NEW and store.get(config.write_flag) == NEW
    assert (tmp_path / "runner-contract" / "report.json").is_file()
    assert out["report"]["validation"]["mismatched"] == 0


def test_run_repairs_what_validation_names_before_it_decides(env, tmp_path, monkeypatch):
    seed_users(env, 3_000)
    config = RunConfig.from_params(users_conf(env, batch_size=500), run_id="runner-repair")
    runner = Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db))
    real = runner.catch_up

    def tamper():  # a wrong row written into the target behind the copy's back
        env.sql("UPDATE users_new SET data_hash = 'x' WHERE id = 77")
        return real()

    monkeypatch.setattr(runner, "catch_up", tamper)
    out = runner.run(tmp_path)
    assert out["ending"]["success"], out.get("error")
    assert projection_diff(env) == 0
    assert "repairing" in states(env, config)


def test_run_never_answers_for_a_human(env, tmp_path):
    """approval required: the decision is answered 'hold' (halted, nothing destroyed, flags untouched)."""
    seed_users(env, 2_000)
    before = source_fingerprint(env)
    config = RunConfig.from_params(users_conf(env, approval="required"), run_id="runner-hold")
    store = TableFlagStore(env.db)
    out = Runner(config, env.db, owner="test", flag_store=store).run(tmp_path)
    assert out["path"] == "hold" and not out["ending"]["success"] and out["ending"]["state"] == "halted"
    assert store.get(config.routing_flag) is None  # never flipped
    assert projection_diff(env) == 0 and source_fingerprint(env) == before


def test_cli_run_contracts_and_says_where_the_report_is(env, tmp_path, capsys):
    seed_users(env, 1_000)
    conf = users_conf(env)
    conf.pop("replica_conn_ids")
    code = cli.main(["run", "--url", env.url, "--conf", json.dumps(conf), "--replica-url", env.replica_url,
                     "--run-id", "cli-run", "--reports-dir", str(tmp_path)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "contracted" in printed.out and "zdt_backfill_reports" in printed.out
    assert projection_diff(env) == 0


def test_cli_run_refuses_the_airflow_variable_flag_store(env, tmp_path, capsys):
    seed_users(env, 10)
    code = cli.main(["run", "--url", env.url, "--conf", json.dumps(users_conf(env, flag_store="variable"))])
    assert code == 2 and "outside Airflow" in capsys.readouterr().err
    assert env.scalar("SELECT count(*) FROM users_new") == 0


def test_the_steps_table_is_the_only_rule():
    """Every transition is some step's; a health hold never enters a destructive state; rollback may
    follow a human's choice while the run holds on health."""
    for state, targets in TRANSITIONS.items():
        for to in targets:
            assert any(s.enters == to and state in s.starts_from for s in STEPS.values()), (state, to)
    assert STEPS["hold"].enters == "holding" and "holding" in STEPS["stop"].starts_from
    assert not STEPS["preflight"].keeps_lease and not STEPS["report"].keeps_lease and STEPS["copy"].keeps_lease
