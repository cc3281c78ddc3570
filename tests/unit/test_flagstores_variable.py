"""VariableFlagStore round-trips through real Airflow Variables, from inside a real task
(``dag.test()``: the task SDK's ``Variable.set`` goes through the supervisor and the
Execution API, as on a worker), and refuses a Variable shadowed by ``AIRFLOW_VAR_*``."""

from __future__ import annotations

import datetime as dt

import pytest

from zdt_airflow.flagstores import VariableFlagStore, flag_store_for
from zdt_backfill.db import Database
from zdt_backfill.dialects import dialect_for
from zdt_backfill.errors import ConfigError
from zdt_backfill.routing.flags import HttpFlagStore, TableFlagStore


def test_flag_store_for_kinds():
    db = Database(connect=lambda: None, dialect=dialect_for("mysql"), name="app")
    assert isinstance(flag_store_for("variable", db, None), VariableFlagStore)
    assert flag_store_for("variable", variable_prefix="team_a_").key("f") == "team_a_f"
    assert isinstance(flag_store_for("table", db, None), TableFlagStore)
    assert isinstance(flag_store_for("http", None, "https://flags.example/v1"), HttpFlagStore)
    with pytest.raises(ConfigError, match="'table', 'variable' or 'http'"):
        flag_store_for("redis", db, None)
    with pytest.raises(ConfigError):
        flag_store_for("http", db, None)
    with pytest.raises(ConfigError):
        VariableFlagStore().key("has space")
    with pytest.raises(ConfigError):
        VariableFlagStore().key("a..b")


def test_variable_flag_store_round_trips_inside_a_task(airflow_db, monkeypatch, tmp_path):
    from airflow.sdk import DAG, task

    # Shadows zdt_flag_shadowed: Variable.get reads environment variables before the API server.
    monkeypatch.setenv("AIRFLOW_VAR_ZDT_FLAG_SHADOWED", '{"path": "legacy", "percent": 0}')

    with DAG("zdt_test_variable_flag_store", schedule=None, start_date=dt.datetime(2025, 1, 1),
             catchup=False) as dag:

        @task
        def round_trip() -> dict:
            from zdt_airflow.flagstores import VariableFlagStore
            from zdt_backfill.routing.flags import LEGACY, NEW, FlagValue

            store = VariableFlagStore()
            seen = {"before": store.get("users_new_read_path")}
            store.set("users_new_read_path", FlagValue("new", 1), "run-1")
            seen["step"] = store.get("users_new_read_path").to_dict()
            store.set("users_new_read_path", NEW, "run-2")
            seen["new"] = store.get("users_new_read_path").to_dict()
            store.set("users_new_read_path", LEGACY, "run-3")
            seen["legacy"] = store.get("users_new_read_path").to_dict()
            try:
                store.set("shadowed", NEW, "run-4")
                seen["shadowed"] = "not detected"
            except ConfigError as exc:
                seen["shadowed"] = str(exc)
            return seen

        round_trip()

    # dag.test() needs the DAG serialized in the metadata DB (it normally finds it by parsing a
    # bundle); write this in-test DAG to the default bundle first, as the DAG processor would.
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(tmp_path), collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)

    dr = dag.test()
    ti = next(t for t in dr.get_task_instances() if t.task_id == "round_trip")
    assert dr.state == "success", [(t.task_id, t.state) for t in dr.get_task_instances()]
    seen = ti.xcom_pull(task_ids="round_trip")
    assert seen["before"] is None
    assert seen["step"] == {"path": "new", "percent": 1}
    assert seen["new"] == {"path": "new", "percent": 100}
    assert seen["legacy"] == {"path": "legacy", "percent": 0}
    assert "AIRFLOW_VAR_ZDT_FLAG_SHADOWED" in seen["shadowed"]

    # What the application reads through the REST API: the Variable in the metadata database.
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        var = session.scalars(select(VariableModel).where(VariableModel.key == "zdt_flag_users_new_read_path")).one()
        assert var.val == '{"path": "legacy", "percent": 0, "run_id": "run-3"}'
