"""Every DAG imports cleanly and follows the house rules (Astronomer's integrity test, extended)."""

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bag():
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(bag):
    assert bag.import_errors == {}
    assert "zero_downtime_backfill" in bag.dags


def test_dag_loads_in_a_stock_airflow_without_pythonpath(tmp_path):
    """The installed package is all a stock Airflow needs: dags_folder and plugins_folder point at
    the project, PYTHONPATH is unset, and the working directory is elsewhere."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    })
    code = (
        "import sys\n"
        "assert not any(p.rstrip('/').endswith(('/include', '/plugins')) for p in sys.path), sys.path\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from airflow.configuration import conf\n"
        "bag = DagBag(dag_folder=conf.get('core', 'dags_folder'))\n"
        "assert bag.import_errors == {}, bag.import_errors\n"
        "print(sorted(bag.dags))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "zero_downtime_backfill" in r.stdout


def test_every_dag_has_tags_and_one_active_run(bag):
    assert bag.dags
    for dag_id, dag in bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.max_active_runs == 1, f"{dag_id}: two runs on one table must never overlap"


def test_task_groups_follow_the_expand_contract_windows(bag):
    dag = bag.dags["zero_downtime_backfill"]
    order = [
        "preflight.check", "dual_write.confirm", "backfill.copy_partition", "replica_catchup.wait_for_replicas",
        "validation.checksum", "validation.repair", "decide", "approval.review",
    ]
    for up, down in zip(order, order[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down}"
    # one branching point, a human-in-the-loop one: contract, roll back, or hold
    from airflow.providers.standard.operators.hitl import HITLBranchOperator

    review = dag.get_task("approval.review")
    assert isinstance(review, HITLBranchOperator)
    assert review.downstream_task_ids == {"contract.flip_routing", "rollback.stop_backfill", "approval.hold"}
    assert set(review.options_mapping.values()) == review.downstream_task_ids
    assert review.defaults == ["hold"]  # a timeout holds; nothing destroyed
    chain = ["contract.flip_routing", "contract.soak", "contract.approve_drop", "contract.legacy_action",
             "contract.reclaim_storage", "contract.finish"]
    for up, down in zip(chain, chain[1:], strict=False):
        assert dag.get_task(down).upstream_task_ids == {up}, f"{up} -> {down}"
    report = dag.get_task("report.write_report")
    assert report.is_teardown and "preflight.check" in report.upstream_task_ids
    assert report.on_failure_fail_dagrun  # the teardown decides the run's state: success only when contracted
    # an empty source maps zero partitions (skipped); the catch-up sensor and validation still run
    assert dag.get_task("replica_catchup.wait_for_replicas").trigger_rule == "none_failed"


def test_partitions_are_mapped_retried_and_labelled(bag):
    task = bag.dags["zero_downtime_backfill"].get_task("backfill.copy_partition")
    assert task.partial_kwargs.get("retries", 0) >= 1 if hasattr(task, "partial_kwargs") else task.retries >= 1
    assert "partition_label" in (task.map_index_template or "")


def test_sensor_is_deferrable(bag):
    assert bag.dags["zero_downtime_backfill"].get_task("replica_catchup.wait_for_replicas").deferrable is True


def test_every_param_is_titled_described_and_sectioned(bag):
    params = bag.dags["zero_downtime_backfill"].params
    assert len(params) >= 25
    for name in params:
        param = params.get_param(name)
        assert param.description, f"param {name} has no description"
        for field in ("title", "section"):
            assert param.schema.get(field), f"param {name} has no {field}"


def test_params_reject_unsafe_identifiers_before_any_task(bag):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(bag.dags["zero_downtime_backfill"].params)
    params.validate()  # the defaults are valid
    for field, bad in (("source_table", 'users"; DROP TABLE users; --'), ("key", "id;"), ("batch_size", 0),
                       ("columns", {"bad name": "x"}), ("profile", "qa")):
        broken = copy.deepcopy(params)
        with pytest.raises(ParamValidationError):
            broken[field] = bad  # ParamsDict validates on assignment
            broken.validate()
