"""Airflow layer of the zero-downtime backfill: thin hooks, operators, sensor and trigger
over the ``zdt_backfill`` engine. Lives in ``plugins/`` because the triggerer loads
triggers from here (it does not load ``dags/``)."""
