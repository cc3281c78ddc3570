"""Live control through an Airflow Variable, gh-ost's socket commands for Airflow users.

``airflow variables set zdt_backfill_control '{"users_new": {"pause": true}}'`` pauses every
run on ``users_new`` at its next batch; ``{"users_new": {"pause": false}}`` resumes;
``{"users_new": {"max_rows_per_second": 200, "target_batch_seconds": 0.2}}`` changes the
ceiling and the batch time target live; ``{"users_new": {"stop": true}}`` halts the run
(nothing destroyed). The key ``"*"`` applies to every table. The same keys can be set in
SQL, in ``zdt_backfill_runs.control`` (see :meth:`zdt_backfill.state.runstate.RunHandle.control`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

VARIABLE = "zdt_backfill_control"
#: Seconds a Variable reading is reused (each read is a call to the API server).
CACHE_SECONDS = 0.5


def variable_control(table: str, clock: Callable[[], float] = time.monotonic) -> Callable[[], dict[str, Any]]:
    """A live-control reader for ``table`` from the Airflow Variable :data:`VARIABLE`."""
    cache: dict[str, Any] = {"at": float("-inf"), "value": {}}

    def read() -> dict[str, Any]:
        if clock() - cache["at"] < CACHE_SECONDS:
            return cache["value"]
        from airflow.sdk import Variable

        try:
            raw = Variable.get(VARIABLE, default=None)
            doc = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
            value = {**(doc.get("*") or {}), **(doc.get(table) or {})} if isinstance(doc, dict) else {}
        except Exception as exc:  # a malformed Variable must not stop the copy; say so
            log.warning("Variable %s unreadable, ignored: %s", VARIABLE, exc)
            value = {}
        if value != cache["value"]:
            log.info("live control (Variable %s) for %s: %s", VARIABLE, table, value or "cleared")
        cache.update(at=clock(), value={**value, "source": f"Variable {VARIABLE}"} if value else {})
        return cache["value"]

    return read
