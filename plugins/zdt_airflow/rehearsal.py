"""Scheduled staging rehearsals: the backfill DAG from the same factory, on staging, that always
puts staging back as it found it and compares itself with the previous rehearsals.

- Schedule: the Airflow Variable ``zdt_staging_rehearsal_schedule`` (a cron string, read when
  the DAG file is parsed; weekly, Sunday 03:00, when unset or unreadable; ``none`` = manual).
- Defaults: the staging profile, ``approval: auto``, ``dual_write: assumed`` (no application
  writes staging), ``legacy_action: keep``, connections ``backfill_staging`` and
  ``backfill_staging_replica``; a triggered run's conf overrides any of them.
- Staging only: the rehearsal refuses to start, and refuses to restore, unless its connection
  (``conn_id``) is marked as staging by the extra field ``{"zdt_environment": "staging"}``
  (:func:`require_staging`, read from Airflow's connection right before each). It auto-approves
  and truncates, so a conf naming a production connection must not get that far.
- At the end (the report task, a teardown that runs whatever happened) the engine's
  :func:`zdt_backfill.lifecycle.rollback.restore_staging`
  flips both routing flags back to legacy, truncates the rehearsal's own target table, restores
  its sequences / AUTO_INCREMENT to the values recorded at pre-flight, and forgets the run's
  checkpoints, so the next rehearsal starts from the same state. It touches nothing unless this
  run held the table's lock, and only the target table of this run's conf (copy mode).
- The report compares throughput, throttled time, replica lag and validation time with the
  median of the previous rehearsals on the same target (``zdt_backfill_reports``) and flags a
  regression over ``zdt_staging_rehearsal_regression_pct`` percent (Variable, default 20).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from zdt_airflow.hooks import PROJECT_EXTRAS
from zdt_backfill import report
from zdt_backfill.config import RunConfig
from zdt_backfill.db import Database
from zdt_backfill.fields import rehearsal_defaults
from zdt_backfill.lifecycle import Runner

log = logging.getLogger(__name__)

SCHEDULE_VARIABLE = "zdt_staging_rehearsal_schedule"
REGRESSION_VARIABLE = "zdt_staging_rehearsal_regression_pct"
DEFAULT_SCHEDULE = "0 3 * * 0"  # weekly, Sunday 03:00 UTC
DEFAULT_REGRESSION_PCT = 20.0
#: How many earlier rehearsals the comparison's median is taken over.
COMPARE_WITH = 5

#: The rehearsal's form values: each field's ``rehearsal`` in :data:`zdt_backfill.fields.FIELDS`.
STAGING_DEFAULTS: dict[str, Any] = rehearsal_defaults()


#: The connection extra that marks a connection as staging (one of the hooks' PROJECT_EXTRAS), and its value.
ENVIRONMENT_EXTRA = PROJECT_EXTRAS[0]
STAGING = "staging"


def require_staging(config: RunConfig) -> None:
    """Refuse unless the run's connection is marked as staging (``extra``:
    ``{"zdt_environment": "staging"}``), read from Airflow's connection right before acting.

    :raises ConfigError: the connection is not marked, or is marked as something else; nothing
        has run or been truncated.
    """
    from airflow.sdk import BaseHook

    from zdt_backfill.errors import ConfigError

    extra = BaseHook.get_connection(config.conn_id).extra_dejson or {}
    marked = extra.get(ENVIRONMENT_EXTRA)
    if marked != STAGING:
        raise ConfigError(
            f"connection {config.conn_id!r} is not marked as staging (its extra {ENVIRONMENT_EXTRA!r} is "
            f"{marked!r}): the staging rehearsal auto-approves and truncates its target, so it runs only on a "
            f'connection whose extra holds {{"{ENVIRONMENT_EXTRA}": "{STAGING}"}}. Nothing was changed.'
        )


def _variable(name: str, default: str) -> str:
    """An Airflow Variable, or ``default`` when unset or unreadable (parsing must never fail on it)."""
    env = os.environ.get(f"AIRFLOW_VAR_{name.upper()}")
    if env:
        return env
    try:
        from airflow.sdk import Variable

        return str(Variable.get(name, default=default))
    except Exception:  # no API server / metadata DB reachable at parse time
        return default


def schedule_from_variable() -> str | None:
    """The rehearsal's cron schedule (``None`` when the Variable says ``none``)."""
    value = _variable(SCHEDULE_VARIABLE, DEFAULT_SCHEDULE).strip()
    return None if value.lower() in ("", "none", "null", "manual") else value


def regression_pct() -> float:
    try:
        return float(_variable(REGRESSION_VARIABLE, str(DEFAULT_REGRESSION_PCT)))
    except ValueError:
        return DEFAULT_REGRESSION_PCT


def post_report(config: RunConfig, db: Database, r: dict[str, Any]) -> None:
    """The rehearsal's additions to its report: restore staging, then compare with earlier rehearsals.

    The restore runs first and always; its error (if any) is put in the report and raised after
    the comparison, so the report is still stored and the run fails visibly.
    """
    from zdt_airflow.flagstores import flag_store_for

    r["rehearsal"] = {}
    error: Exception | None = None
    try:
        require_staging(config)  # again, right before the truncate: the connection may have changed
        store = flag_store_for(config.flag_store, db, config.flag_store_url)
        r["rehearsal"]["restore"] = Runner(config, db, owner="rehearsal.restore", flag_store=store).restore_staging()
    except Exception as exc:
        error = exc
        r["rehearsal"]["restore"] = {"error": f"{type(exc).__name__}: {exc}"}
        log.error("staging restore failed: %s", exc)
    previous = [p for p in report.history(db, target_table=config.target_table, limit=50)
                if p.get("rehearsal") and p.get("run_id") != config.run_id and p.get("rows_written")]
    cmp_ = report.compare(r, previous[:COMPARE_WITH], regression_pct())
    r["rehearsal"]["comparison"] = cmp_
    if cmp_["regressions"]:
        log.warning("staging rehearsal REGRESSION over %s %%: %s", cmp_["regression_pct"],
                    {n: cmp_["figures"][n] for n in cmp_["regressions"]})
    if error is not None:
        raise error
