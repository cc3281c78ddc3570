"""`make demo`, `make demo-mysql` and `make airflow`.

demo        start an embedded PostgreSQL primary + streaming replica under .local/db,
            seed users_legacy with DEMO_ROWS rows (default 1,000,000) and an empty
            users_new (the expand step), run the zero_downtime_backfill DAG with
            `airflow dags test` on the dev profile, and print the run report.
demo-mysql  the same against a MySQL/MariaDB server already running on 127.0.0.1:3306
            (root, empty password; override with MYSQL_HOST/MYSQL_PORT/MYSQL_USER/
            MYSQL_PASSWORD), in the database zdt_demo, without a replica.
standalone  start `airflow standalone` on the same databases with the connections set,
            and print the UI address and the admin password.

The full Airflow log of a demo run goes to .local/demo-<engine>.log; the report to
$AIRFLOW_HOME/backfill_reports/<run_id>/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import localdb

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
DB_DIR = LOCAL / "db"
COLUMNS = {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"}


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def airflow_env() -> dict[str, str]:
    env = os.environ.copy()
    env.setdefault("AIRFLOW_HOME", str(LOCAL / "airflow"))
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    # `airflow standalone` starts its components as `airflow ...` from PATH: the venv's first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def airflow(*args: str, env: dict[str, str], log: Path | None = None) -> int:
    cmd = [sys.executable, "-m", "airflow", *args]
    if log is None:
        return subprocess.call(cmd, env=env)
    with open(log, "w") as fh:
        return subprocess.call(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def start_pair(start, what: str) -> localdb.Pair:
    """Start a demo server pair under .local/db (``start``: a ``localdb.start_*_pair``)."""
    say(f"starting {what} under .local/db")
    try:
        pair = start(DB_DIR)
    except localdb.MissingServerBinaries as exc:
        sys.exit(f"cannot start {what}: {exc}")
    say(f"primary 127.0.0.1:{pair.primary.port}, replica 127.0.0.1:{pair.replica.port}")
    return pair


def start_postgres() -> localdb.Pair:
    return start_pair(localdb.start_postgres_pair, "a PostgreSQL primary + streaming replica")


def postgres_conns(pair: localdb.Pair) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_BACKFILL_PG": pair.primary.airflow_conn_json(),
        "AIRFLOW_CONN_BACKFILL_PG_REPLICA": pair.replica.airflow_conn_json(),
    }


def seed_postgres(pair: localdb.Pair, rows: int) -> None:
    bindir = localdb.find_postgres_bindir()
    say(f"seeding users_legacy with {rows:,} rows and creating an empty users_new (expand)")
    t = time.monotonic()
    subprocess.run(
        [str(bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-v", f"demo_rows={rows}",
         "-h", pair.primary.host, "-p", str(pair.primary.port), "-U", pair.primary.user, "-d", pair.primary.database,
         "-f", str(ROOT / "include" / "demo" / "postgres_init.sql")],
        check=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
    )
    localdb.wait_replica_caught_up(pair, timeout=300)
    say(f"seeded in {time.monotonic() - t:.1f}s; replica caught up")


def mysql_settings() -> dict[str, object]:
    return {
        "host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "port": int(os.environ.get("MYSQL_PORT", "3306")),
        "user": os.environ.get("MYSQL_USER", "root"),
        "password": os.environ.get("MYSQL_PASSWORD", ""),
    }


def start_oracle_mysql() -> localdb.Pair:
    return start_pair(localdb.start_mysql_pair, "an Oracle MySQL 9.7 primary + GTID replica")


#: Oracle MySQL 9.7 has no MD5(): its demo hashes with SHA-256, cut to the target's 32 characters.
ORACLE_MYSQL_COLUMNS = {"email_normalized": "lower(trim(email))", "data_hash": "left(sha2(legacy_data, 256), 32)"}


def seed_mysql(rows: int, settings: dict[str, object] | None = None, oracle: bool = False) -> dict[str, str]:
    import MySQLdb

    s = settings or mysql_settings()
    try:
        conn = MySQLdb.connect(host=s["host"], port=s["port"], user=s["user"], password=s["password"])
    except MySQLdb.OperationalError as exc:
        sys.exit(f"no MySQL/MariaDB server reachable on {s['host']}:{s['port']} ({exc}). Start one, or set "
                 "MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD.")
    if rows > 1_000_000:
        sys.exit("demo-mysql seeds at most 1,000,000 rows")
    say(f"seeding zdt_demo.users_legacy on {s['host']}:{s['port']} with {rows:,} rows")
    cur = conn.cursor()
    collate = "" if oracle else " COLLATE utf8mb4_general_ci"  # MySQL: its default, utf8mb4_0900_ai_ci
    cur.execute(f"CREATE DATABASE IF NOT EXISTS zdt_demo CHARACTER SET utf8mb4{collate}")
    cur.execute("USE zdt_demo")
    sql = (ROOT / "include" / "demo" / "mysql_init.sql").read_text().replace("LIMIT 1000000", f"LIMIT {int(rows)}")
    if oracle:
        sql = sql.replace("REPEAT(MD5(n), 2)", "REPEAT(LEFT(SHA2(n, 256), 32), 2)")
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    for statement in (x.strip() for x in body.split(";")):
        if statement:
            cur.execute(statement)
            if cur.description:
                cur.fetchall()
    conn.commit()
    conn.close()
    conn_json = json.dumps({"conn_type": "mysql", "host": s["host"], "port": s["port"], "login": s["user"],
                            "password": s["password"], "schema": "zdt_demo"})
    return {"AIRFLOW_CONN_BACKFILL_MYSQL": conn_json}


def run_demo(engine: str, rows: int) -> int:
    LOCAL.mkdir(exist_ok=True)
    env = airflow_env()
    if engine == "postgres":
        pair = start_postgres()
        seed_postgres(pair, rows)
        env.update(postgres_conns(pair))
        conf = {"conn_id": "backfill_pg", "replica_conn_ids": ["backfill_pg_replica"]}
    elif engine == "mysql":
        pair = start_oracle_mysql()
        primary = {"host": pair.primary.host, "port": pair.primary.port, "user": pair.primary.user, "password": ""}
        env.update(seed_mysql(rows, primary, oracle=True))
        localdb.wait_replica_caught_up(pair, timeout=300)
        replica = json.loads(pair.replica.airflow_conn_json())
        env["AIRFLOW_CONN_BACKFILL_MYSQL_REPLICA"] = json.dumps({**replica, "schema": "zdt_demo"})
        conf = {"conn_id": "backfill_mysql", "replica_conn_ids": ["backfill_mysql_replica"]}
    else:
        env.update(seed_mysql(rows))
        conf = {"conn_id": "backfill_mysql", "replica_conn_ids": []}
    conf.update({"source_table": "users_legacy", "target_table": "users_new", "key": "id",
                 "columns": ORACLE_MYSQL_COLUMNS if engine == "mysql" else COLUMNS,
                 "profile": "dev", "dual_write": "assumed"})
    say("migrating the Airflow metadata DB (.local/airflow, SQLite)")
    if airflow("db", "migrate", env=env, log=LOCAL / "airflow-migrate.log") != 0:
        sys.exit(f"airflow db migrate failed: see {LOCAL / 'airflow-migrate.log'}")
    log = LOCAL / f"demo-{engine}.log"
    say(f"running zero_downtime_backfill with `airflow dags test` (profile dev); full log: {log.relative_to(ROOT)}")
    say(f"conf: {json.dumps(conf)}")
    t = time.monotonic()
    rc = airflow("dags", "test", "zero_downtime_backfill", "-c", json.dumps(conf), env=env, log=log)
    reports = sorted((Path(env["AIRFLOW_HOME"]) / "backfill_reports").glob("*/report.md"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not reports or reports[-1].stat().st_mtime < time.time() - (time.monotonic() - t) - 5:
        tail = "\n".join(log.read_text().splitlines()[-40:]) if log.exists() else ""
        print(tail)
        sys.exit(f"the DAG run failed (exit {rc}); see {log}")
    say(f"DAG run finished in {time.monotonic() - t:.1f}s; report: {reports[-1].parent}")
    print()
    print(reports[-1].read_text())
    return 0


def run_standalone() -> int:
    LOCAL.mkdir(exist_ok=True)
    env = airflow_env()
    env.update(postgres_conns(start_postgres()))
    import MySQLdb

    s = mysql_settings()
    try:
        MySQLdb.connect(host=s["host"], port=s["port"], user=s["user"], password=s["password"]).close()
        env["AIRFLOW_CONN_BACKFILL_MYSQL"] = json.dumps({"conn_type": "mysql", "host": s["host"], "port": s["port"],
                                                         "login": s["user"], "password": s["password"],
                                                         "schema": "zdt_demo"})
    except MySQLdb.OperationalError:
        say("no MySQL/MariaDB on 127.0.0.1:3306: only the PostgreSQL connections are set")
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
    env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "30"
    home = Path(env["AIRFLOW_HOME"])
    say("migrating the metadata DB, parsing the DAGs and unpausing zero_downtime_backfill")
    for args in (("db", "migrate"), ("dags", "reserialize"), ("dags", "unpause", "zero_downtime_backfill")):
        if airflow(*args, env=env, log=LOCAL / "airflow-setup.log") != 0:
            sys.exit(f"`airflow {' '.join(args)}` failed: see {LOCAL / 'airflow-setup.log'}")
    passwords = home / "simple_auth_manager_passwords.json.generated"
    say("starting `airflow standalone` (api-server, scheduler, dag-processor, triggerer); Ctrl-C stops it")
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env)
    for _ in range(180):
        if passwords.exists() or proc.poll() is not None:
            break
        time.sleep(1)
    if passwords.exists():
        creds = json.loads(passwords.read_text())
        user, password = next(iter(creds.items()))
        say(f"Airflow UI: http://localhost:8080  user: {user}  password: {password}")
        say("open DAG zero_downtime_backfill, press Trigger, fill the form (defaults target the demo PostgreSQL)")
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["demo", "standalone"])
    ap.add_argument("--engine", choices=["postgres", "mysql", "mysql-server"], default="postgres",
                    help="postgres / mysql: an embedded primary + replica (Oracle MySQL 9.7 for mysql); "
                         "mysql-server: a MySQL/MariaDB already running on 127.0.0.1:3306")
    ap.add_argument("--rows", type=int, default=int(os.environ.get("DEMO_ROWS", "1000000")))
    a = ap.parse_args()
    if a.command == "standalone":
        return run_standalone()
    return run_demo(a.engine, a.rows)


if __name__ == "__main__":
    sys.exit(main())
