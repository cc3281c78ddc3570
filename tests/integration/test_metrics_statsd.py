"""Backfill metrics reach a StatsD listener through Airflow's own metrics: a local UDP socket
stands in for StatsD, ``[metrics] statsd_on`` points at it, and a small throttled copy runs
through the DAG (``dag.test``) on PostgreSQL."""

from __future__ import annotations

import socket
from collections import defaultdict

import pytest

from conftest import run_dag, seed_users, users_conf

ROWS = 3_000


@pytest.fixture
def statsd(monkeypatch):
    """A UDP listener as the StatsD server, and Airflow's stats pointed at it the way the task
    runner does at its start (``dag.test`` runs the tasks in this process)."""
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)

    def read() -> dict[str, list[tuple[float, str]]]:
        got: dict[str, list[tuple[float, str]]] = defaultdict(list)
        while True:
            try:
                data = sock.recv(65535).decode()
            except socket.timeout:
                return got
            for line in data.splitlines():  # name:value|type
                name, rest = line.split(":", 1)
                value, kind = rest.split("|")[:2]
                got[name].append((float(value), kind))

    yield read
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    sock.close()


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_a_throttled_copy_emits_rows_batches_throttle_lag_and_validation_metrics(env, backfill_dag, statsd,
                                                                                 monkeypatch):
    seed_users(env, ROWS)
    conf = users_conf(env, replica_conn_ids=[env.replica_conn_id], batch_size=500, partitions=2,
                      max_rows_per_second=3_000, target_batch_seconds=0)
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    assert str(dr.state) == "success", states
    m = statsd()
    rows = m["airflow.zdt_backfill.rows_copied"]
    assert rows and all(kind == "c" for _, kind in rows) and sum(v for v, _ in rows) == ROWS
    assert sum(v for v, _ in m["airflow.zdt_backfill.batches"]) == report["batches"] >= ROWS // 500
    assert len(m["airflow.zdt_backfill.batch_seconds"]) == report["batches"]
    assert m["airflow.zdt_backfill.batch_seconds"][0][1] == "ms"
    throttled = sum(v for v, _ in m["airflow.zdt_backfill.throttled_seconds.rate"])
    assert throttled > 0 and throttled == pytest.approx(report["throttled_by_reason"]["rate"], abs=0.01)
    lag = m["airflow.zdt_backfill.replica_lag_seconds"]
    assert len(lag) == 2 and all(kind == "g" and v >= 0 for v, kind in lag)  # one per partition
    assert m["airflow.zdt_backfill.mismatches"] == [(0.0, "g")]
    assert m["airflow.zdt_backfill.rows_per_second"][0][0] == report["rows_per_second"] > 0
