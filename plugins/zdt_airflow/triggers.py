"""Trigger for the deferrable replica-lag sensor. Runs in the triggerer's event loop:
every database call goes through ``asgiref.sync.sync_to_async`` (as common-sql's own
trigger does), so the loop is never blocked. While it waits it keeps the primary's
heartbeat beating (a background thread), so replicas are measured by heartbeat lag."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async


def measure_lag(conn_ids: list[str], schema: str | None = None, heartbeat: str | None = None) -> dict[str, float | None]:
    """Lag (s) of each replica connection; ``None`` when unreachable, unknown, or not a replica."""
    from zdt_airflow.hooks import BackfillHook
    from zdt_backfill.signals.lag import PROBE_TIMEOUT_SECONDS, ReplicaLagProbe

    readings: dict[str, float | None] = {}
    for conn_id in conn_ids:
        probe = ReplicaLagProbe(BackfillHook(conn_id, schema).get_probe_database(PROBE_TIMEOUT_SECONDS), heartbeat)
        try:
            readings[conn_id] = probe.measure()
        except ValueError:  # not a replica: never "caught up"
            readings[conn_id] = None
        finally:
            probe.close()
    return readings


def caught_up(readings: dict[str, float | None], max_lag_seconds: float) -> bool:
    """Every replica reachable and under ``max_lag_seconds`` (an unknown lag never counts as caught up)."""
    return all(v is not None and v < max_lag_seconds for v in readings.values())


def heartbeat_writer(primary_conn_id: str | None, schema: str | None, heartbeat: str | None, run_id: str) -> Any:
    """A :class:`~zdt_backfill.signals.heartbeat.HeartbeatWriter` on the primary, or ``None`` without a heartbeat row."""
    if not (primary_conn_id and heartbeat):
        return None
    from zdt_airflow.hooks import BackfillHook
    from zdt_backfill.signals.heartbeat import HeartbeatWriter

    return HeartbeatWriter(BackfillHook(primary_conn_id, schema).get_database(), heartbeat, run_id)


class ReplicaLagTrigger(BaseTrigger):
    """Fires when every replica's lag is below ``max_lag_seconds``.

    :param replica_conn_ids: replica connection ids.
    :param max_lag_seconds: the lag (s) each replica must be under.
    :param poll_interval: seconds between readings.
    :param primary_conn_id: the primary, whose heartbeat is written while waiting.
    :param schema: schema of the heartbeat table.
    :param heartbeat: the heartbeat row (the run's lock key).
    :param run_id: written beside the heartbeat.
    """

    def __init__(self, replica_conn_ids: list[str], max_lag_seconds: float, poll_interval: float = 1.0,
                 primary_conn_id: str | None = None, schema: str | None = None, heartbeat: str | None = None,
                 run_id: str = "") -> None:
        super().__init__()
        self.replica_conn_ids = list(replica_conn_ids)
        self.max_lag_seconds = max_lag_seconds
        self.poll_interval = poll_interval
        self.primary_conn_id = primary_conn_id
        self.schema = schema
        self.heartbeat = heartbeat
        self.run_id = run_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "zdt_airflow.triggers.ReplicaLagTrigger",
            {
                "replica_conn_ids": self.replica_conn_ids,
                "max_lag_seconds": self.max_lag_seconds,
                "poll_interval": self.poll_interval,
                "primary_conn_id": self.primary_conn_id,
                "schema": self.schema,
                "heartbeat": self.heartbeat,
                "run_id": self.run_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        writer = await sync_to_async(heartbeat_writer)(self.primary_conn_id, self.schema, self.heartbeat, self.run_id)
        if writer is not None:
            writer.__enter__()
        try:
            while True:
                readings = await sync_to_async(measure_lag)(self.replica_conn_ids, self.schema, self.heartbeat)
                if caught_up(readings, self.max_lag_seconds):
                    yield TriggerEvent({"status": "caught_up", "readings": readings})
                    return
                self.log.info("replicas not caught up (gate %ss): %s", self.max_lag_seconds, readings)
                await asyncio.sleep(self.poll_interval)
        finally:
            if writer is not None:
                await sync_to_async(writer.__exit__)(None, None, None)
