"""DAG integrity of both DAGs (one factory), the rehearsal's schedule from its Variable, and the
rehearsal comparison's regression rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from zdt_backfill.report import compare, to_markdown

DAGS = Path(__file__).resolve().parents[2] / "dags"


def load_dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag


def test_both_dags_load_from_one_factory_with_their_schedules(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_ZDT_STAGING_REHEARSAL_SCHEDULE", raising=False)
    bag = load_dags()
    main, reh = bag.dags["zero_downtime_backfill"], bag.dags["staging_rehearsal"]
    assert main.schedule is None and reh.schedule == "0 3 * * 0"  # weekly by default
    assert set(main.task_ids) == set(reh.task_ids)
    params = reh.params
    assert (params["profile"], params["approval"], params["conn_id"]) == ("staging", "auto", "backfill_staging")
    assert params["replica_conn_ids"] == ["backfill_staging_replica"] and params["legacy_action"] == "keep"
    assert main.params["profile"] == "prod" and main.params["conn_id"] == "backfill_pg"
    assert reh.get_task("report.write_report").post_report is not None
    assert main.get_task("report.write_report").post_report is None


@pytest.mark.parametrize("value, expected", [("*/30 * * * *", "*/30 * * * *"), ("none", None)])
def test_the_schedule_comes_from_the_airflow_variable(monkeypatch, value, expected):
    monkeypatch.setenv("AIRFLOW_VAR_ZDT_STAGING_REHEARSAL_SCHEDULE", value)
    import zdt_airflow.rehearsal as rehearsal

    assert rehearsal.schedule_from_variable() == expected
    assert load_dags().dags["staging_rehearsal"].schedule == expected


def test_a_figure_worse_than_the_median_of_earlier_rehearsals_by_more_than_the_threshold_is_a_regression():
    previous = [
        {"run_id": "a", "rows_per_second": 1000.0, "throttled_seconds": 10.0, "max_replica_lag_seconds": 0.5,
         "validation_seconds": 2.0},
        {"run_id": "b", "rows_per_second": 900.0, "throttled_seconds": 12.0, "max_replica_lag_seconds": 0.0,
         "validation_seconds": 2.2},
        {"run_id": "c", "rows_per_second": 1100.0, "throttled_seconds": 11.0, "validation_seconds": 1.8},
    ]
    now = {"rows_per_second": 700.0, "throttled_seconds": 12.0, "max_replica_lag_seconds": 0.1,
           "validation_seconds": 3.0}
    c = compare(now, previous, 20.0)
    assert c["previous_runs"] == ["a", "b", "c"]
    assert c["figures"]["rows_per_second"] == {"now": 700.0, "baseline": 1000.0, "change_pct": -30.0,
                                               "regression": True}
    assert c["figures"]["throttled_seconds"]["regression"] is False  # +9.1 % <= 20 %
    assert c["figures"]["validation_seconds"]["regression"] is True  # +50 %
    assert c["figures"]["max_replica_lag_seconds"]["baseline"] == 0.25
    assert sorted(c["regressions"]) == ["rows_per_second", "validation_seconds"]
    md = to_markdown({"rehearsal": {"restore": {"summary": "TRUNCATE TABLE x"}, "comparison": c}})
    assert "- staging restored: TRUNCATE TABLE x" in md
    assert "**REGRESSION** in rows_per_second, validation_seconds" in md
    assert "  - rows_per_second: 700.0 vs 1000.0 (-30.0 %) REGRESSION" in md
    assert compare(now, [], 20.0)["figures"] == {}
    assert compare(now, previous, 60.0)["regressions"] == []
