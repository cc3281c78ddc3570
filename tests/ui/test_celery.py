"""Past one machine, on Airflow's own engine: the CeleryExecutor with two workers.

The scheduler, api-server, dag-processor and triggerer run as separate processes with the
CeleryExecutor, Redis (127.0.0.1:6379, which `make test` starts) as the broker and result
backend, and a PostgreSQL metadata database; two Celery workers each name themselves
(``worker1``/``worker2``) as their task instances' hostname. One run's mapped partitions
execute on both, and the copy is exact. A worker killed (SIGKILL, its whole process tree)
mid-partition: the scheduler's heartbeat timeout fails that attempt, the retry runs on the
surviving worker and resumes from the checkpoint, and the run still ends contracted.
"""

from __future__ import annotations

import time

import psutil
import pytest

import localdb
from ui.stack import AirflowStack, conn_env, seed_demo

DAG = "zero_downtime_backfill"
pytestmark = pytest.mark.ui


def _sql(pair: localdb.Pair, statement: str, database: str | None = None):
    return localdb._query(pair.primary, statement, database=database)


@pytest.fixture(scope="module")
def celery_stack(demo_pg, tmp_path_factory):
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 is needed as the Celery broker ({exc}); `make test-ui` starts it")
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
        # a dead worker's task instance fails after 20 s without a heartbeat (default 300 s)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    }
    for db in (13, 14):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    with AirflowStack(tmp_path_factory.mktemp("airflow-celery"), localdb.free_port(), env, celery_workers=2) as stack:
        yield stack


def _trigger(stack: AirflowStack, conf: dict) -> str:
    r = stack.api("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert r.status_code == 200, r.text[:500]
    return r.json()["dag_run_id"]


def test_partitions_of_one_run_execute_on_two_celery_workers(celery_stack, demo_pg):
    stack = celery_stack
    seed_demo(demo_pg, 40_000)
    # four partitions, each held to ~2.5 s by the rows/s ceiling, on workers of concurrency 1
    run_id = _trigger(stack, {"profile": "dev", "dual_write": "assumed", "batch_size": 1000, "partitions": 4,
                              "max_rows_per_second": 16_000})
    run = stack.wait_run(DAG, run_id, timeout=900)
    tis = stack.task_instances(DAG, run_id)
    assert run["state"] == "success", {(t["task_id"], t["map_index"]): t["state"] for t in tis}
    hosts = {t["rendered_map_index"]: t["hostname"] for t in tis if t["task_id"] == "backfill.copy_partition"}
    assert len(hosts) == 4, hosts
    assert set(hosts.values()) == {"worker1", "worker2"}, hosts
    assert _sql(demo_pg, "SELECT count(*) FROM users_new", database=demo_pg.primary.database)[0][0] == 40_000


def test_a_killed_worker_fails_its_attempt_and_the_retry_resumes_on_the_other(celery_stack, demo_pg):
    stack = celery_stack
    db = demo_pg.primary.database
    seed_demo(demo_pg, 60_000)
    # two partitions of 30,000 rows at 3,000 rows/s each: ~10 s of copying per partition
    run_id = _trigger(stack, {"profile": "dev", "dual_write": "assumed", "batch_size": 1000, "partitions": 2,
                              "max_rows_per_second": 6_000})
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline:
        for t in stack.task_instances(DAG, run_id):
            if t["task_id"] == "backfill.copy_partition" and t["state"] == "running" and t["hostname"] == "worker1":
                victim = t
        time.sleep(0.5)
    assert victim, "no partition started on worker1"
    # let it copy a few batches, then kill worker1 and everything under it
    time.sleep(3)
    copied_before = _sql(demo_pg, "SELECT count(*) FROM users_new", database=db)[0][0]
    worker = stack.procs[-2]  # worker1 (the workers are started last, worker1 first)
    tree = psutil.Process(worker.pid)
    for proc in [*tree.children(recursive=True), tree]:
        proc.kill()
    run = stack.wait_run(DAG, run_id, timeout=900)
    tis = [t for t in stack.task_instances(DAG, run_id) if t["task_id"] == "backfill.copy_partition"]
    assert run["state"] == "success", [(t["map_index"], t["state"], t["try_number"]) for t in tis]
    retried = [t for t in tis if t["map_index"] == victim["map_index"]][0]
    assert retried["try_number"] >= 2 and retried["hostname"] == "worker2", retried
    assert copied_before > 0
    n, distinct = _sql(demo_pg, "SELECT count(*), count(DISTINCT id) FROM users_new", database=db)[0]
    assert n == distinct == 60_000
