"""The deferrable replica-lag sensor and its trigger, against a real replica whose replay is paused."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import localdb
from conftest import seed_users, users_conf

pytestmark = pytest.mark.integration


def lagging(env):
    """Pause replay and make the replica fall behind (time passes, then a write)."""
    localdb.wait_replica_caught_up(env.pair)
    localdb.pause_replay(env.pair)
    time.sleep(2.5)
    env.sql("UPDATE users_legacy SET email = 'lag' WHERE id = 1")


def test_trigger_fires_only_once_the_replica_catches_up(env, monkeypatch):
    from zdt_airflow.triggers import ReplicaLagTrigger

    for k, v in env.conn_env.items():
        monkeypatch.setenv(k, v)
    seed_users(env, 100)
    trigger = ReplicaLagTrigger([env.replica_conn_id], max_lag_seconds=2.0, poll_interval=0.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "zdt_airflow.triggers.ReplicaLagTrigger" and ReplicaLagTrigger(**kwargs).max_lag_seconds == 2.0
    lagging(env)
    timer = threading.Timer(3.0, localdb.resume_replay, args=(env.pair,))
    started = time.monotonic()
    timer.start()
    try:
        event = asyncio.run(asyncio.wait_for(trigger.run().__anext__(), timeout=60))
    finally:
        timer.join()
    assert time.monotonic() - started >= 2.5  # it waited while the replica lagged
    assert event.payload["status"] == "caught_up"
    assert event.payload["readings"][env.replica_conn_id] < 2.0


def test_sensor_defers_while_lagging_and_returns_at_once_when_caught_up(env, monkeypatch):
    from airflow.sdk.exceptions import TaskDeferred

    from zdt_airflow.sensors import ReplicaLagSensor
    from zdt_airflow.triggers import ReplicaLagTrigger

    for k, v in env.conn_env.items():
        monkeypatch.setenv(k, v)
    from types import SimpleNamespace

    from zdt_backfill.config import RunConfig
    from zdt_backfill.lifecycle.preflight import run_preflight

    seed_users(env, 100)
    sensor = ReplicaLagSensor(task_id="wait_for_replicas")
    params = users_conf(env, replica_conn_ids=[env.replica_conn_id])
    run_preflight(RunConfig.from_params(params, run_id="sensor-test"), env.db, [])  # the run holds the lock
    context = {"params": params, "run_id": "sensor-test", "ti": SimpleNamespace(task_id="wait_for_replicas")}
    localdb.wait_replica_caught_up(env.pair)
    assert sensor.execute(context)["readings"][env.replica_conn_id] < 2.0  # no deferral needed
    lagging(env)
    try:
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(context)
    finally:
        localdb.resume_replay(env.pair)
    assert isinstance(deferred.value.trigger, ReplicaLagTrigger)
    assert deferred.value.trigger.heartbeat.endswith(".users_new")  # it keeps the heartbeat beating meanwhile
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() == 600
    assert sensor.execute_complete(context, {"status": "caught_up", "readings": {"r": 0.1}}) == {"readings": {"r": 0.1}}
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException):
        sensor.execute_complete(context, {"status": "timeout"})
