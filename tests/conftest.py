"""Shared fixtures.

Database servers: each session starts its own PostgreSQL and MariaDB primary +
streaming replica pairs on spare ports (``scripts/localdb.py``), under a temporary
folder; each test gets a fresh database on them (pgroll's pattern). When server
binaries are missing the tests that need them skip with the reason, unless
``CI=true``, where a missing server is a failure.

Airflow: ``AIRFLOW_HOME`` points at a session temp folder, set before Airflow is
imported anywhere, and its metadata DB is migrated once (SQLite). It overrides the
Makefile's ``.local/airflow``: the tests never see what ``make demo`` left there
(Variables, runs, reports).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="zdt-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")

import localdb  # noqa: E402  (scripts/, on pythonpath)

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Skip on a user's machine, fail in CI: CI must run every test."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def servers_dir():
    d = Path(tempfile.mkdtemp(prefix="zdt-servers-"))
    os.chmod(d, 0o755)
    yield d
    for sub in ("pg", "mariadb", "mysql"):
        localdb.stop(d / sub)
    shutil.rmtree(d, ignore_errors=True)


def _start_pair(start, folder, what: str):
    """A server pair of the session (``start``: a ``localdb.start_*_pair``); missing binaries skip,
    or fail in CI."""
    try:
        return start(folder)
    except localdb.MissingServerBinaries as exc:
        missing(f"{what} not found: {exc}")


@pytest.fixture(scope="session")
def pg_pair(servers_dir):
    return _start_pair(localdb.start_postgres_pair, servers_dir / "pg", "PostgreSQL server binaries")


@pytest.fixture(scope="session")
def mariadb_pair(servers_dir):
    return _start_pair(localdb.start_mariadb_pair, servers_dir / "mariadb", "MariaDB server binaries")


@pytest.fixture(scope="session")
def mysql_pair(servers_dir):
    return _start_pair(localdb.start_mysql_pair, servers_dir / "mysql", "Oracle MySQL server")


#: Each engine flavour the suite runs on, and its pair's fixture. ``env.engine`` is the family
#: (``postgres`` | ``mysql``: the SQL a test writes), ``env.flavour`` the server.
FLAVOURS = {"postgres": "pg_pair", "mariadb": "mariadb_pair", "mysql": "mysql_pair"}


def _pg_url(server, database):
    return f"postgresql://{server.user}@{server.host}:{server.port}/{database}"


def _mysql_url(server, database):
    return f"mysql://{server.user}@{server.host}:{server.port}/{database}"


class Env:
    """A fresh database on a primary + replica pair, for one test.

    :ivar engine: ``postgres`` or ``mysql`` (the family: MariaDB and Oracle MySQL).
    :ivar flavour: ``postgres``, ``mariadb`` or ``mysql`` (Oracle MySQL).
    :ivar db: engine :class:`~zdt_backfill.db.Database` on the primary.
    :ivar replica_db: the same database on the replica.
    :ivar conn_env: ``AIRFLOW_CONN_*`` variables naming ``backfill_<engine>`` and ``..._replica``.
    """

    def __init__(self, flavour, pair, database):
        from zdt_backfill.db import Database

        self.flavour = flavour
        engine = self.engine = "postgres" if flavour == "postgres" else "mysql"
        self.pair = pair
        self.database = database
        url = _pg_url if engine == "postgres" else _mysql_url
        self.url = url(pair.primary, database)
        self.replica_url = url(pair.replica, database)
        self.db = Database.from_url(self.url)
        self.replica_db = Database.from_url(self.replica_url)
        self.conn_id = f"backfill_{'pg' if flavour == 'postgres' else flavour}"
        self.replica_conn_id = f"{self.conn_id}_replica"
        conn_type = "postgres" if engine == "postgres" else "mysql"
        import json

        self.conn_env = {
            f"AIRFLOW_CONN_{self.conn_id.upper()}": json.dumps(
                {"conn_type": conn_type, "host": pair.primary.host, "port": pair.primary.port,
                 "login": pair.primary.user, "password": "", "schema": database}
            ),
            f"AIRFLOW_CONN_{self.replica_conn_id.upper()}": json.dumps(
                {"conn_type": conn_type, "host": pair.replica.host, "port": pair.replica.port,
                 "login": pair.replica.user, "password": "", "schema": database}
            ),
        }

    def sql(self, statement, params=()):
        """Run statements (separated by ``;\\n``) on the primary and commit; returns the last
        one's rows. ``params`` go to every statement: pass them with a single statement."""
        with self.db.session() as conn:
            rows = []
            for s in [x for x in statement.split(";\n") if x.strip()]:
                rows = self.db.query(conn, s, params)
            conn.commit()
            return rows

    def scalar(self, statement, params=()):
        return self.sql(statement, params)[0][0]


def _create_database(flavour, pair, name):
    import MySQLdb
    import psycopg

    if flavour == "postgres":
        with psycopg.connect(host=pair.primary.host, port=pair.primary.port, user=pair.primary.user,
                             dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    else:
        c = MySQLdb.connect(host=pair.primary.host, port=pair.primary.port, user=pair.primary.user, password="")
        # MariaDB: its PAD SPACE utf8mb4_general_ci; Oracle MySQL: the server's default,
        # utf8mb4_0900_ai_ci (NO PAD), which the byte-exact oracles must see through too.
        collate = " COLLATE utf8mb4_general_ci" if flavour == "mariadb" else ""
        c.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4{collate}")
        if flavour == "mysql":
            # Oracle MySQL 9.7 (Debian's build) has no MD5(): the suite's users projection and its
            # oracles say md5(...), so each test database gets one (a stored function: the engine's
            # own checksums use SHA2 there, never this).
            c.cursor().execute(f"CREATE FUNCTION `{name}`.md5(s LONGTEXT) RETURNS CHAR(32) CHARSET ascii"
                               " DETERMINISTIC NO SQL RETURN LEFT(SHA2(s, 256), 32)")
        c.close()
    localdb.wait_replica_caught_up(pair)


@pytest.fixture(params=list(FLAVOURS))
def env(request):
    """A fresh database on each engine's pair (the test runs once per flavour: postgres, mariadb, mysql)."""
    return _fresh_env(request.param, request.getfixturevalue(FLAVOURS[request.param]))


def _fresh_env(flavour, pair):
    name = f"t_{uuid.uuid4().hex[:10]}"
    _create_database(flavour, pair, name)
    return Env(flavour, pair, name)


@pytest.fixture
def pg_env(pg_pair):
    """A fresh database on the PostgreSQL pair only, for PostgreSQL-specific behaviour."""
    return _fresh_env("postgres", pg_pair)


@pytest.fixture(params=["mariadb", "mysql"])
def mysql_env(request):
    """A fresh database on each MySQL-family pair (MariaDB, Oracle MySQL), for MySQL-specific behaviour."""
    return _fresh_env(request.param, request.getfixturevalue(FLAVOURS[request.param]))


@pytest.fixture
def mariadb_env(mariadb_pair):
    """A fresh database on the MariaDB pair only, for MariaDB-only behaviour (its replication SQL)."""
    return _fresh_env("mariadb", mariadb_pair)


def seq(env, rows: int) -> str:
    """A row source of ``seq`` = 1..rows on the MySQL family (MariaDB's SEQUENCE engine; on MySQL a
    recursive CTE, whose depth limit the caller lifts with :func:`cte_depth`)."""
    if env.flavour == "mariadb":
        return f"seq_1_to_{int(rows)}"
    return f"(WITH RECURSIVE s (seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < {int(rows)}) SELECT seq FROM s) AS q"


def cte_depth(env) -> str:
    """The statement to run before one that reads :func:`seq` (Oracle MySQL's recursion limit is
    1,000; MariaDB's SEQUENCE engine needs none, and MariaDB has no such variable)."""
    return "SET SESSION cte_max_recursion_depth = 100000000;\n" if env.flavour == "mysql" else ""


def seed_users(env, rows: int, sparse_step: int = 1) -> None:
    """Create users_legacy (``rows`` rows, keys 1, 1+step, ...) and an empty users_new, like the demo."""
    if env.engine == "postgres":
        env.sql(
            "CREATE TABLE users_legacy (id bigint PRIMARY KEY, email text NOT NULL, legacy_data text,"
            " updated_at timestamptz NOT NULL DEFAULT now());\n"
            "CREATE TABLE users_new (id bigint PRIMARY KEY, email_normalized text, data_hash text)"
        )
        env.sql(
            "INSERT INTO users_legacy SELECT 1 + (g - 1) * %s, '  User' || g || '@Example.COM ', repeat(md5(g::text), 2),"
            " now() - interval '2 days' FROM generate_series(1, %s) g",
            (sparse_step, rows),
        )
        env.sql("ANALYZE users_legacy")
    else:
        env.sql(
            "CREATE TABLE users_legacy (id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(255) NOT NULL, legacy_data TEXT,"
            " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));\n"
            "CREATE TABLE users_new (id BIGINT NOT NULL PRIMARY KEY, email_normalized VARCHAR(255) NULL,"
            " data_hash CHAR(32) NULL)",
        )
        if rows > 0:  # seq_1_to_0 would count down (1, 0)
            env.sql(
                cte_depth(env) + f"INSERT INTO users_legacy SELECT 1 + (seq - 1) * {int(sparse_step)}, CONCAT('  User',"
                " seq, '@Example.COM '), REPEAT(MD5(seq), 2), CURRENT_TIMESTAMP(6) - INTERVAL 2 DAY FROM " + seq(env, rows)
            )
        env.sql("ANALYZE TABLE users_legacy")


USERS_COLUMNS = {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"}


def users_conf(env, **overrides):
    """Conf for the users_legacy -> users_new copy on ``env`` (no replicas unless given)."""
    conf = {
        "conn_id": env.conn_id,
        "replica_conn_ids": [],
        "source_table": "users_legacy",
        "target_table": "users_new",
        "key": "id",
        "columns": dict(USERS_COLUMNS),
        "profile": "dev",
        "dual_write": "assumed",
    }
    conf.update(overrides)
    return conf


def projection_diff(env) -> int:
    """Rows where users_new differs from the transformed users_legacy, both ways (exact, every key).

    Byte-exact: values compare as their UTF-8 bytes (PostgreSQL ``convert_to``, a bytea; MySQL
    ``CAST(CONVERT(x USING utf8mb4) AS BINARY)``), never under a collation, so a copy that lost
    ``lower()`` or ``trim()`` fails it even where the column's collation is case-insensitive and
    PAD SPACE (MariaDB's utf8mb4_general_ci) or nondeterministic (a PostgreSQL ICU collation)."""
    if env.engine == "postgres":
        src = "SELECT id, convert_to(lower(trim(email)), 'UTF8'), convert_to(md5(legacy_data), 'UTF8') FROM users_legacy"
        tgt = "SELECT id, convert_to(email_normalized, 'UTF8'), convert_to(data_hash, 'UTF8') FROM users_new"
        q = f"SELECT count(*) FROM (({src} EXCEPT {tgt}) UNION ALL ({tgt} EXCEPT {src})) d"
    else:
        def b(x):
            return f"CAST(CONVERT({x} USING utf8mb4) AS BINARY)"

        q = (
            "SELECT (SELECT count(*) FROM users_legacy s LEFT JOIN users_new t ON t.id = s.id"
            f" WHERE t.id IS NULL OR NOT ({b('t.email_normalized')} <=> {b('lower(trim(s.email))')}"
            f" AND {b('t.data_hash')} <=> {b('md5(s.legacy_data)')}))"
            " + (SELECT count(*) FROM users_new t LEFT JOIN users_legacy s ON s.id = t.id WHERE s.id IS NULL)"
        )
    return int(env.scalar(q))


def source_fingerprint(env) -> tuple:
    """(count, checksum) of users_legacy, to prove the legacy data was not touched."""
    if env.engine == "postgres":
        return tuple(env.sql("SELECT count(*), md5(string_agg(id::text || email || coalesce(legacy_data, ''), ',' ORDER BY id)) FROM users_legacy")[0])
    return tuple(env.sql("SELECT count(*), sum(crc32(concat_ws('#', id, email, legacy_data))) FROM users_legacy")[0])


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the session's Airflow metadata DB (SQLite) once."""
    r = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture
def backfill_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["zero_downtime_backfill"]


def run_dag(dag, env, monkeypatch, conf, conn_extra=None):
    """``dag.test`` with ``env``'s connections; ``conn_extra`` is merged into the primary's extra."""
    for k, v in env.conn_env.items():
        if conn_extra and k == f"AIRFLOW_CONN_{env.conn_id.upper()}":
            v = json.dumps({**json.loads(v), "extra": conn_extra})
        monkeypatch.setenv(k, v)
    dr = dag.test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    report_dir = Path(os.environ["AIRFLOW_HOME"]) / "backfill_reports"
    reports = sorted(report_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    report = json.loads(reports[-1].read_text()) if reports else None
    return dr, states, report


class JsonHandler(BaseHTTPRequestHandler):
    """A test HTTP endpoint (a flag service, a metrics endpoint): quiet, and ``reply`` sends JSON."""

    def log_message(self, *args):
        pass

    def reply(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
