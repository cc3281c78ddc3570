"""An Airflow 3 stack in subprocesses for the browser and Celery tests.

``AirflowStack`` starts either ``airflow standalone`` (LocalExecutor) or, with
``celery_workers=N``, the components one by one (api-server, scheduler, dag-processor,
triggerer) plus N Celery workers whose task instances record distinct hostnames. Each
stack has its own ``AIRFLOW_HOME`` and port, so it never touches the developer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import localdb
from localdb import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_ROWS = int(os.environ.get("UI_DEMO_ROWS", "20000"))


def airflow_env(home: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of every component: own home and port, this project's DAGs and plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__API_AUTH__JWT_SECRET": "zdt-test-secret-not-for-production",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    })
    env.update(extra or {})
    return env


class AirflowStack:
    """Context manager: the running stack; ``.url``, ``.token()``, ``.api(...)``."""

    def __init__(self, home: Path, port: int, env: dict[str, str] | None = None, celery_workers: int = 0) -> None:
        self.home, self.port = Path(home), port
        self.url = f"http://localhost:{port}"
        # The admin's password is set before start (the simple auth manager keeps an existing
        # one), so the report task can set the DAG run's note through the REST API
        # (zdt_airflow.notes, connection zdt_airflow_api).
        self._password = secrets.token_urlsafe(12)
        api_conn = json.dumps({"conn_type": "http", "host": "localhost", "port": port, "schema": "http",
                               "login": "admin", "password": self._password})
        self.env = airflow_env(self.home, port, {"AIRFLOW_CONN_ZDT_AIRFLOW_API": api_conn, **(env or {})})
        self.celery_workers = celery_workers
        self.procs: list[subprocess.Popen] = []
        self.logs = self.home / "logs-stack"

    def _airflow(self, *args: str, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env or self.env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def __enter__(self) -> "AirflowStack":
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": self._password}))
        for args in (("db", "migrate"), ("dags", "reserialize")):
            subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=300)
        if self.celery_workers:
            for comp in ("api-server", "scheduler", "dag-processor", "triggerer"):
                self._airflow(comp, name=comp)
            for i in range(self.celery_workers):
                # Two workers on one machine: each records its own name as the task instances'
                # hostname (tests/ui/worker_hostname.py) and serves its logs on its own port.
                name = f"worker{i + 1}"
                env = {**self.env, "ZDT_WORKER_HOSTNAME": name,
                       "PYTHONPATH": str(Path(__file__).parent),
                       "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_hostname.worker_hostname",
                       "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
                self._airflow("celery", "worker", "--concurrency", "1", "--celery-hostname", f"{name}@%h",
                              name=name, env=env)
        else:
            self._airflow("standalone", name="standalone")
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"an Airflow component exited ({p.args}); logs in {self.logs}")
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    self.token()
                    return
            except (httpx.HTTPError, RuntimeError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow did not come up on {self.url} in {timeout:.0f}s; logs in {self.logs}")

    def token(self) -> str:
        r = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password()}, timeout=10)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"no token: HTTP {r.status_code} {r.text[:200]}")
        return r.json()["access_token"]

    def password(self) -> str:
        return self._password

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
            if run.get("state") in ("success", "failed"):
                return run
            time.sleep(2)
        raise TimeoutError(f"run {run_id} still {run.get('state')} after {timeout:.0f}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200}).json()[
            "task_instances"]

    def __exit__(self, *exc: Any) -> None:
        # Every component's whole process tree: standalone's and the workers' children (api-server
        # workers, task runners) may start sessions of their own, out of reach of killpg.
        import psutil

        tree: list[psutil.Process] = []
        for p in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(p.pid)
                tree += [*parent.children(recursive=True), parent]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=30)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


def seed_demo(pair: localdb.Pair, rows: int = DEMO_ROWS) -> None:
    """The demo's expand step: users_legacy with ``rows`` rows and an empty users_new."""
    bindir = localdb.find_postgres_bindir()
    subprocess.run(
        [str(bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-v", f"demo_rows={rows}",
         "-h", pair.primary.host, "-p", str(pair.primary.port), "-U", pair.primary.user,
         "-d", pair.primary.database, "-f", str(ROOT / "include" / "demo" / "postgres_init.sql")],
        check=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
    )
    localdb.wait_replica_caught_up(pair, timeout=120)


def conn_env(pair: localdb.Pair) -> dict[str, str]:
    """The connections the trigger form's defaults name (backfill_pg, backfill_pg_replica)."""
    return {"AIRFLOW_CONN_BACKFILL_PG": pair.primary.airflow_conn_json(),
            "AIRFLOW_CONN_BACKFILL_PG_REPLICA": pair.replica.airflow_conn_json()}
