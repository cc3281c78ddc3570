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


def test_every_dag_has_tags_and_one_active_run(bag):
    assert bag.dags
    for dag_id, dag in bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.max_active_runs == 1, f"{dag_id}: two runs on one table must never overlap"


def test_task_groups_follow_the_expand_contract_windows(bag):
    dag = bag.dags["zero_downtime_backfill"]
    order = [
        "preflight.check", "dual_write.confirm", "backfill.copy_partition", "replica_catchup.wait_for_replicas",
        "validation.checksum", "decide",
    ]
    for up, down in zip(order, order[1:], strict=False):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down}"
    assert dag.get_task("decide").downstream_task_ids == {"contract.flip_routing", "rollback.stop_backfill"}
    report = dag.get_task("report.write_report")
    assert report.is_teardown and "preflight.check" in report.upstream_task_ids
    assert report.on_failure_fail_dagrun  # a report that could not release the lock fails the run
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
