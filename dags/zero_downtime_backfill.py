"""zero_downtime_backfill: backfill a large table through the expand/contract windows.

Trigger it from the UI ("Trigger DAG" shows the form) or with conf JSON; see the
README's conf reference. The DAG is built by :func:`zdt_airflow.dag_factory.build_backfill_dag`.
"""

from zdt_airflow.dag_factory import build_backfill_dag

dag = build_backfill_dag("zero_downtime_backfill")
