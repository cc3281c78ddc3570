"""Past one machine, on Airflow's own engine: the CeleryExecutor with two workers.

The scheduler, api-server, dag-processor and triggerer run as separate processes with the
CeleryExecutor, Redis (127.0.0.1:6379, which `make test` starts) as the broker and result
backend, and a PostgreSQL metadata database; two Celery workers each name themselves
(``worker1``/``worker2``) as their task instances' hostname. One run's mapped partitions
execute on both, and the copy is exact.
"""

from __future__ import annotations

import pytest

import localdb
from stack import AirflowStack, conn_env, seed_demo

DAG = "zero_downtime_backfill"
pytestmark = pytest.mark.ui


def _sql(pair: localdb.Pair, statement: str, database: str | None = None):
    return localdb._query(pair.primary, statement, database=database)


def test_partitions_of_one_run_execute_on_two_celery_workers(demo_pg, tmp_path_factory):
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 is needed as the Celery broker ({exc}); `make test-ui` starts it")
    seed_demo(demo_pg, 40_000)
    p = demo_pg.primary
    meta = "airflow_meta"
    if not _sql(demo_pg, f"SELECT 1 FROM pg_database WHERE datname = '{meta}'"):
        _sql(demo_pg, f"CREATE DATABASE {meta}")
    env = {
        **conn_env(demo_pg),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://{p.user}@{p.host}:{p.port}/{meta}",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/13",
        "AIRFLOW__CELERY__RESULT_BACKEND": "redis://127.0.0.1:6379/14",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
    }
    redis.Redis(host="127.0.0.1", port=6379, db=13).flushdb()
    with AirflowStack(tmp_path_factory.mktemp("airflow-celery"), localdb.free_port(), env, celery_workers=2) as stack:
        # four partitions, each held to ~2.5 s by the rows/s ceiling, on workers of concurrency 1
        conf = {"profile": "dev", "dual_write": "assumed", "batch_size": 1000, "partitions": 4,
                "max_rows_per_second": 16_000}
        r = stack.api("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
        assert r.status_code == 200, r.text[:500]
        run_id = r.json()["dag_run_id"]
        run = stack.wait_run(DAG, run_id, timeout=900)
        tis = stack.task_instances(DAG, run_id)
        assert run["state"] == "success", {(t["task_id"], t["map_index"]): t["state"] for t in tis}
        hosts = {t["rendered_map_index"]: t["hostname"] for t in tis if t["task_id"] == "backfill.copy_partition"}
        assert len(hosts) == 4, hosts
        assert set(hosts.values()) == {"worker1", "worker2"}, hosts
    assert _sql(demo_pg, "SELECT count(*) FROM users_new", database=p.database)[0][0] == 40_000
