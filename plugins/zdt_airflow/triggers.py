"""Trigger for the deferrable replica-lag sensor. Runs in the triggerer's event loop:
every database call goes through ``asgiref.sync.sync_to_async`` (as common-sql's own
trigger does), so the loop is never blocked."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async


def measure_lag(conn_ids: list[str]) -> dict[str, float | None]:
    """Lag (s) of each replica connection; ``None`` when unreachable or unknown."""
    from zdt_airflow.hooks import BackfillHook
    from zdt_backfill.lag import ReplicaStatusProbe

    readings: dict[str, float | None] = {}
    for conn_id in conn_ids:
        probe = ReplicaStatusProbe(BackfillHook(conn_id).get_database())
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


class ReplicaLagTrigger(BaseTrigger):
    """Fires when every replica's lag is below ``max_lag_seconds``.

    :param replica_conn_ids: replica connection ids.
    :param max_lag_seconds: the lag (s) each replica must be under.
    :param poll_interval: seconds between readings.
    """

    def __init__(self, replica_conn_ids: list[str], max_lag_seconds: float, poll_interval: float = 1.0) -> None:
        super().__init__()
        self.replica_conn_ids = list(replica_conn_ids)
        self.max_lag_seconds = max_lag_seconds
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "zdt_airflow.triggers.ReplicaLagTrigger",
            {
                "replica_conn_ids": self.replica_conn_ids,
                "max_lag_seconds": self.max_lag_seconds,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            readings = await sync_to_async(measure_lag)(self.replica_conn_ids)
            if caught_up(readings, self.max_lag_seconds):
                yield TriggerEvent({"status": "caught_up", "readings": readings})
                return
            self.log.info("replicas not caught up (gate %ss): %s", self.max_lag_seconds, readings)
            await asyncio.sleep(self.poll_interval)
