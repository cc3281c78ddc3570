"""Deferrable replica catch-up sensor."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from zdt_airflow.triggers import ReplicaLagTrigger, caught_up, measure_lag
from zdt_backfill.config import RunConfig


class ReplicaLagSensor(BaseSensorOperator):
    """Waits until every replica's lag is under the forward threshold (seed: < 2 s).

    Replicas and threshold come from the run's params (``replica_conn_ids``,
    ``forward_max_lag_seconds``). With ``deferrable=True`` (the default) it frees its
    worker slot and waits in the triggerer (:class:`~zdt_airflow.triggers.ReplicaLagTrigger`);
    otherwise it pokes. An unreachable replica never counts as caught up. Times out
    after ``replica_wait_timeout_seconds``.
    """

    def __init__(self, *, deferrable: bool = True, poll_interval: float = 1.0, **kwargs: Any) -> None:
        super().__init__(poke_interval=poll_interval, **kwargs)
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def _config(self, context: Context) -> RunConfig:
        return RunConfig.from_params(context["params"], run_id=context["run_id"])

    def poke(self, context: Context) -> bool:
        c = self._config(context)
        readings = measure_lag(list(c.replica_conn_ids))
        self.log.info("replica lag: %s (gate %ss)", readings, c.thresholds.forward_max_lag_seconds)
        return caught_up(readings, c.thresholds.forward_max_lag_seconds)

    def execute(self, context: Context) -> Any:
        c = self._config(context)
        if not c.replica_conn_ids:
            self.log.info("no replicas configured: nothing to wait for")
            return {"readings": {}}
        if not self.deferrable:
            return super().execute(context)
        readings = measure_lag(list(c.replica_conn_ids))
        if caught_up(readings, c.thresholds.forward_max_lag_seconds):
            self.log.info("replicas already caught up: %s", readings)
            return {"readings": readings}
        self.defer(
            trigger=ReplicaLagTrigger(list(c.replica_conn_ids), c.thresholds.forward_max_lag_seconds, self.poll_interval),
            method_name="execute_complete",
            timeout=timedelta(seconds=c.replica_wait_timeout_seconds),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if not event or event.get("status") != "caught_up":
            raise AirflowFailException(f"replicas did not catch up: {event}")
        self.log.info("replicas caught up: %s", event.get("readings"))
        return {"readings": event.get("readings")}
