"""The staging rehearsal DAG end to end on PostgreSQL (``dag.test``): it copies, validates and
contracts with the staging profile and auto-approval, then always restores staging (target empty,
both flags at legacy, checkpoints forgotten) and compares itself with the previous rehearsal."""

from __future__ import annotations

import json

import pytest
from unit.test_dag_run_note import api as stand_in_rest_api  # noqa: F401  (a fixture)

from conftest import ROOT, run_dag, seed_users, users_conf

pytestmark = pytest.mark.e2e

ROWS = 2_000
STAGING_MARK = {"zdt_environment": "staging"}


@pytest.fixture
def rehearsal_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["staging_rehearsal"]


def _assert_staging_restored(env):
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert env.scalar("SELECT count(*) FROM users_legacy") == ROWS  # the source is never touched
    flags = dict(env.sql("SELECT flag, value FROM zdt_routing_flags"))
    assert flags == {"users_new_read_path": "legacy", "users_new_write_path": "legacy"}
    assert env.scalar("SELECT count(*) FROM zdt_backfill_checkpoints") == 0


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_a_rehearsal_contracts_restores_staging_and_compares_with_the_previous_one(env, rehearsal_dag, monkeypatch,
                                                                                  request):
    base, calls = request.getfixturevalue("stand_in_rest_api")  # the DAG run's note goes to this stand-in REST API
    monkeypatch.setenv("AIRFLOW_CONN_ZDT_AIRFLOW_API", json.dumps(
        {"conn_type": "http", "login": "admin", "password": "pw", "extra": {"base_url": base}}))
    seed_users(env, ROWS)
    assert rehearsal_dag.params["profile"] == "staging" and rehearsal_dag.params["approval"] == "auto"
    conf = users_conf(env, profile="staging", approval="auto", replica_conn_ids=[env.replica_conn_id],
                      ramp_watch_minutes=0, max_rows_per_second=20_000, batch_size=500)

    dr1, states1, first = run_dag(rehearsal_dag, env, monkeypatch, conf, conn_extra=STAGING_MARK)
    assert str(dr1.state) == "success", states1
    assert first["state"] == "contracted" and first["rows_written"] == ROWS
    assert first["validation"]["mismatched"] == 0
    assert "TRUNCATE TABLE" in first["rehearsal"]["restore"]["summary"]
    assert first["rehearsal"]["comparison"]["previous_runs"] == []
    _assert_staging_restored(env)

    dr2, states2, second = run_dag(rehearsal_dag, env, monkeypatch, conf, conn_extra=STAGING_MARK)
    assert str(dr2.state) == "success", states2
    assert second["state"] == "contracted" and second["rows_written"] == ROWS  # restored: copied again in full
    _assert_staging_restored(env)
    cmp_ = second["rehearsal"]["comparison"]
    assert cmp_["previous_runs"] == [dr1.run_id] and cmp_["regression_pct"] == 20.0
    assert cmp_["figures"]["rows_per_second"]["baseline"] == first["rows_per_second"]
    stored = json.loads(env.scalar(
        "SELECT report_json FROM zdt_backfill_reports WHERE run_id = %s ORDER BY id DESC LIMIT 1", (dr2.run_id,)))
    assert stored["rehearsal"]["comparison"] == cmp_
    md = env.scalar("SELECT report_md FROM zdt_backfill_reports WHERE run_id = %s", (dr2.run_id,))
    assert "## Staging rehearsal" in md and "compared with 1 previous rehearsal(s)" in md
    notes = [body["note"] for method, path, body, _ in calls if method == "PATCH" and "staging_rehearsal" in path]
    assert len(notes) == 2 and notes[1].startswith("contracted: ") and "2,000 rows written" in notes[1]
    assert "validation exact" in notes[1] and f"run_id = '{dr2.run_id}'" in notes[1]


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
@pytest.mark.parametrize("extra", [None, {"zdt_environment": "prod"}])
def test_the_rehearsal_refuses_a_connection_not_marked_as_staging_and_changes_nothing(env, rehearsal_dag, monkeypatch,
                                                                                       extra):
    """Issue 22: the rehearsal auto-approves and truncates; on a connection not marked as staging
    (a production one named in its conf) it refuses in pre-flight, before any read or write."""
    seed_users(env, ROWS)
    conf = users_conf(env, profile="staging", approval="auto", ramp_watch_minutes=0, batch_size=500)
    dr, states, _ = run_dag(rehearsal_dag, env, monkeypatch, conf, conn_extra=extra)
    assert str(dr.state) == "failed", states
    assert states["preflight.check"] == "failed" and states["backfill.copy_partition"] != "success"
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert env.scalar("SELECT count(*) FROM users_legacy") == ROWS
    tables = env.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'zdt_%%'")
    assert tables == 0  # no control table, no lock, no flag: nothing was written
