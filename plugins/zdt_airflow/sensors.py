"""Deferrable replica catch-up sensor."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from zdt_airflow.triggers import ReplicaLagTrigger, caught_up, heartbeat_writer, measure_lag
from zdt_backfill.config import RunConfig
from zdt_backfill.errors import PermanentError


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

    def _measure(self, c: RunConfig, heartbeat: str) -> dict[str, float | None]:
        """Replica lag with the primary's heartbeat beating meanwhile (a beat or two first)."""
        import time

        from zdt_backfill.signals.heartbeat import HEARTBEAT_INTERVAL_SECONDS

        with heartbeat_writer(c.conn_id, c.schema, heartbeat, c.run_id):
            time.sleep(2 * HEARTBEAT_INTERVAL_SECONDS)
            return measure_lag(list(c.replica_conn_ids), c.schema, heartbeat)

    def poke(self, context: Context) -> bool:
        c = self._config(context)
        readings = self._measure(c, self._heartbeat)
        self.log.info("replica lag: %s (gate %ss)", readings, c.thresholds.forward_max_lag_seconds)
        return caught_up(readings, c.thresholds.forward_max_lag_seconds)

    def execute(self, context: Context) -> Any:
        c = self._config(context)
        if c.dry_run:  # pre-flight was skipped: a dry run writes nothing and waits for nothing
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("dry run")
        from zdt_airflow.hooks import BackfillHook
        from zdt_backfill.lifecycle import Runner

        runner = Runner(c, BackfillHook(c.conn_id, c.schema).get_database(), owner=context["ti"].task_id)
        try:
            runner.start_catchup()
        except PermanentError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        self._heartbeat = runner.heartbeat_name
        if not c.replica_conn_ids:
            self.log.info("no replicas configured: nothing to wait for")
            return {"readings": {}}
        if not self.deferrable:
            return super().execute(context)
        readings = self._measure(c, self._heartbeat)
        if caught_up(readings, c.thresholds.forward_max_lag_seconds):
            self.log.info("replicas already caught up: %s", readings)
            return {"readings": readings}
        self.defer(
            trigger=ReplicaLagTrigger(list(c.replica_conn_ids), c.thresholds.forward_max_lag_seconds, self.poll_interval,
                                      primary_conn_id=c.conn_id, schema=c.schema, heartbeat=self._heartbeat,
                                      run_id=c.run_id),
            method_name="execute_complete",
            timeout=timedelta(seconds=c.replica_wait_timeout_seconds),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if not event or event.get("status") != "caught_up":
            raise AirflowFailException(f"replicas did not catch up: {event}")
        self.log.info("replicas caught up: %s", event.get("readings"))
        return {"readings": event.get("readings")}
