"""staging_rehearsal: the zero-downtime backfill rehearsed on staging, on a schedule.

Same factory as ``zero_downtime_backfill``; staging profile, auto-approval, staging
connections; always restores staging at the end and compares itself with earlier
rehearsals. Schedule: Airflow Variable ``zdt_staging_rehearsal_schedule`` (default weekly).
See :mod:`zdt_airflow.rehearsal`.
"""

from zdt_airflow.dag_factory import build_backfill_dag
from zdt_airflow.rehearsal import STAGING_DEFAULTS, post_report, require_staging, schedule_from_variable

dag = build_backfill_dag(
    "staging_rehearsal",
    defaults=STAGING_DEFAULTS,
    schedule=schedule_from_variable(),
    tags=["backfill", "staging", "rehearsal"],
    description="Scheduled staging rehearsal of the zero-downtime backfill; restores staging at the end",
    post_report=post_report,
    pre_check=require_staging,
)
