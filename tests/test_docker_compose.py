"""Static checks of docker-compose.yaml. No Docker engine is needed.

The file is parsed with PyYAML (which resolves the x-airflow-common anchors and `<<` merge
keys), and what the compose file promises is checked against the repository: services, shared
Airflow settings, connections, bind-mounted paths, helper scripts and the image pin. If a
`docker compose` (v2) client is installed, `docker compose config -q` validates the file
against the Compose specification too; that only parses, so it also works without an engine.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
COMPOSE_DIR = COMPOSE_FILE.parent
REQUIREMENTS = REPO_ROOT / "requirements.txt"

AIRFLOW_COMPONENTS = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-init",
)
METADATA_DB = "postgres"
DEMO_SERVICES = ("demo-pg", "demo-pg-replica", "demo-mysql", "demo-mysql-replica")
EXPECTED_SERVICES = (*AIRFLOW_COMPONENTS, METADATA_DB, *DEMO_SERVICES)

# conn id env var -> (conn_type, compose service it must point at)
EXPECTED_CONNECTIONS = {
    "AIRFLOW_CONN_BACKFILL_PG": ("postgres", "demo-pg"),
    "AIRFLOW_CONN_BACKFILL_PG_REPLICA": ("postgres", "demo-pg-replica"),
    "AIRFLOW_CONN_BACKFILL_MYSQL": ("mysql", "demo-mysql"),
    "AIRFLOW_CONN_BACKFILL_MYSQL_REPLICA": ("mysql", "demo-mysql-replica"),
}

PROJECT_MOUNTS = {
    "./dags": "/opt/airflow/dags",
    "./plugins": "/opt/airflow/plugins",
    "./include": "/opt/airflow/include",
    "./requirements.txt": "/opt/airflow/requirements.txt",
}

JWT_SECRET = "AIRFLOW__API_AUTH__JWT_SECRET"

_VAR = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def interpolate_defaults(value: str) -> str:
    """Compose-style interpolation with every variable unset, so the file's defaults win.

    ``${VAR:-default}`` / ``${VAR-default}`` give ``default``; ``${VAR}`` gives ''; ``$$`` is a
    literal ``$``. The host environment is ignored on purpose: the checks are about the file.
    """
    placeholder = "\0"
    value = value.replace("$$", placeholder)
    value = _VAR.sub(
        lambda m: m.group("arg") if m.group("op") in (":-", "-") else "", value
    )
    return value.replace(placeholder, "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"missing {COMPOSE_FILE}"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "compose file must be a mapping"
    assert isinstance(data.get("services"), dict) and data["services"], "no services"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...] form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    assert isinstance(env, dict)
    return env


def airflow_services(services: dict) -> dict:
    """Services running the Airflow image (interpolated defaults)."""
    return {
        name: svc
        for name, svc in services.items()
        if interpolate_defaults(str(svc.get("image", ""))).startswith("apache/airflow:")
    }


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts; named volumes are skipped."""
    mounts = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") != "bind":
                continue
            host, target = vol["source"], vol["target"]
        else:
            parts = interpolate_defaults(vol).split(":")
            if len(parts) < 2:
                continue  # anonymous volume
            host, target = parts[0], parts[1]
            if not host.startswith((".", "/", "~")):
                continue  # named volume
        mounts.append((interpolate_defaults(host), interpolate_defaults(target)))
    return mounts


def host_path(host: str) -> Path:
    return (COMPOSE_DIR / host).resolve()


def command_tokens(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(interpolate_defaults(value))
    # List form: each item is one argument (a `bash -c` script stays a single token).
    return [interpolate_defaults(str(item)) for item in value]


def repo_scripts_referenced(name: str, service: dict) -> list[Path]:
    """Repo files that the service's entrypoint/command runs through a bind mount."""
    mounts = bind_mounts(service)
    found = []
    for token in command_tokens(service.get("entrypoint")) + command_tokens(
        service.get("command")
    ):
        if "\n" in token or not token.startswith("/"):
            continue
        token_path = PurePosixPath(token)
        for host, target in mounts:
            target_path = PurePosixPath(target)
            if token_path == target_path or target_path in token_path.parents:
                found.append(host_path(host) / token_path.relative_to(target_path))
    return found


def bash_syntax_ok(path: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, f"bash -n {path}: {result.stderr}"


# --------------------------------------------------------------------------------------------


def test_expected_services_exist(services):
    missing = [name for name in EXPECTED_SERVICES if name not in services]
    assert not missing, f"services missing from docker-compose.yaml: {missing}"
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert "8080:8080" in services["airflow-apiserver"].get("ports", [])


def test_airflow_components_found(services):
    found = airflow_services(services)
    missing = [name for name in AIRFLOW_COMPONENTS if name not in found]
    assert not missing, f"not running the apache/airflow image: {missing}"


def test_airflow_components_share_jwt_secret(services):
    components = airflow_services(services)
    assert len(components) >= len(AIRFLOW_COMPONENTS)
    secrets = {name: env_of(svc).get(JWT_SECRET) for name, svc in components.items()}
    without = [name for name, value in secrets.items() if not value]
    assert not without, f"{JWT_SECRET} not set for {without}"
    assert len(set(secrets.values())) == 1, (
        f"components disagree on {JWT_SECRET}: {secrets}"
    )
    assert interpolate_defaults(next(iter(secrets.values()))), (
        "JWT secret default is empty"
    )


def test_airflow_components_common_settings(services):
    components = airflow_services(services)
    assert components
    for name, svc in components.items():
        env = env_of(svc)
        assert env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL") == (
            "http://airflow-apiserver:8080/execution/"
        ), name
        assert env.get("AIRFLOW__CORE__LOAD_EXAMPLES") == "false", name
        assert env.get("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION") == "true", name
        pythonpath = str(env.get("PYTHONPATH", "")).split(":")
        assert "/opt/airflow/include" in pythonpath, (
            f"{name}: zdt_backfill not importable"
        )
        assert "/opt/airflow/plugins" in pythonpath, (
            f"{name}: zdt_airflow not importable"
        )


def test_airflow_connections(services):
    components = airflow_services(services)
    assert components
    for name, svc in components.items():
        env = env_of(svc)
        for var, (conn_type, target_service) in EXPECTED_CONNECTIONS.items():
            assert var in env, f"{name}: {var} missing"
            conn = json.loads(env[var])
            assert conn["conn_type"] == conn_type, f"{name}: {var} conn_type"
            assert conn["host"] == target_service, f"{name}: {var} host"
            assert target_service in services, (
                f"{var} points at unknown service {target_service}"
            )
            assert conn["schema"] == "backfill", f"{name}: {var} schema"
            assert isinstance(conn["port"], int), f"{name}: {var} port"


def test_connection_credentials_match_demo_databases(services):
    env = env_of(services["airflow-scheduler"])
    pg_env = env_of(services["demo-pg"])
    mysql_env = env_of(services["demo-mysql"])
    assert pg_env.get("POSTGRES_DB") == "backfill"
    assert mysql_env.get("MYSQL_DATABASE") == "backfill"
    for var in ("AIRFLOW_CONN_BACKFILL_PG", "AIRFLOW_CONN_BACKFILL_PG_REPLICA"):
        conn = json.loads(env[var])
        assert conn["port"] == 5432
        assert conn["login"] == pg_env.get("POSTGRES_USER", "postgres"), var
        assert conn["password"] == pg_env["POSTGRES_PASSWORD"], var
    root_password = mysql_env.get("MYSQL_ROOT_PASSWORD", "")
    if not root_password:
        assert str(mysql_env.get("MYSQL_ALLOW_EMPTY_PASSWORD", "")).lower() in (
            "yes",
            "true",
            "1",
        )
    for var in ("AIRFLOW_CONN_BACKFILL_MYSQL", "AIRFLOW_CONN_BACKFILL_MYSQL_REPLICA"):
        conn = json.loads(env[var])
        assert conn["port"] == 3306
        assert conn["login"] == "root", var
        assert conn["password"] == root_password, var


def test_project_is_mounted_into_airflow_components(services):
    components = airflow_services(services)
    assert components
    for name, svc in components.items():
        mounts = dict(bind_mounts(svc))
        for host, target in PROJECT_MOUNTS.items():
            assert mounts.get(host) == target, f"{name}: {host}:{target} not mounted"


def test_every_bind_mounted_host_path_exists(services):
    all_mounts = [
        (name, host) for name, svc in services.items() for host, _ in bind_mounts(svc)
    ]
    assert all_mounts, "no bind mounts found"
    not_relative = sorted(
        {f"{name}: {host}" for name, host in all_mounts if not host.startswith("./")}
    )
    assert not not_relative, f"bind mounts not relative to the repo: {not_relative}"
    missing = sorted({host for _, host in all_mounts if not host_path(host).exists()})
    assert not missing, f"bind-mounted paths missing from the repo: {missing}"


def test_demo_primaries_are_seeded_with_project_sql(services):
    pg_mounts = dict(bind_mounts(services["demo-pg"]))
    mysql_mounts = dict(bind_mounts(services["demo-mysql"]))
    pg_seed = pg_mounts.get("./include/demo/postgres_init.sql", "")
    mysql_seed = mysql_mounts.get("./include/demo/mysql_init.sql", "")
    assert pg_seed.startswith("/docker-entrypoint-initdb.d/") and pg_seed.endswith(
        ".sql"
    )
    assert mysql_seed.startswith(
        "/docker-entrypoint-initdb.d/"
    ) and mysql_seed.endswith(".sql")
    assert services["demo-pg"]["image"] == "postgres:15"
    assert services["demo-pg-replica"]["image"] == "postgres:15"
    assert services["demo-mysql"]["image"] == "mysql:8.4"
    assert services["demo-mysql-replica"]["image"] == "mysql:8.4"


def test_entrypoint_scripts_exist_and_parse(services):
    referenced = {
        name: repo_scripts_referenced(name, svc) for name, svc in services.items()
    }
    scripts = [path for paths in referenced.values() for path in paths]
    assert scripts, "no entrypoint/command refers to a script in the repo"
    # The replica wiring depends on these two; make sure they are the ones found.
    assert any(
        p.name == "pg-replica-entrypoint.sh" for p in referenced["demo-pg-replica"]
    )
    mysql_setup = [svc for svc in services if "mysql" in svc and "setup" in svc]
    assert mysql_setup, "no one-shot MySQL replica setup service"
    assert any(p.name.endswith(".sh") for svc in mysql_setup for p in referenced[svc])
    for path in scripts:
        assert path.is_file(), f"referenced script {path} does not exist"
        if path.suffix == ".sh":
            bash_syntax_ok(path)


def test_every_mounted_shell_script_parses(services):
    scripts = set()
    for svc in services.values():
        for host, _ in bind_mounts(svc):
            path = host_path(host)
            if path.is_file() and path.suffix == ".sh":
                scripts.add(path)
            elif path.is_dir() and path.name == "compose":
                scripts.update(path.glob("*.sh"))
    assert scripts, "no shell scripts are mounted"
    for path in sorted(scripts):
        bash_syntax_ok(path)


def test_replication_wiring(services):
    pg_replica = services["demo-pg-replica"]
    assert pg_replica["depends_on"]["demo-pg"]["condition"] == "service_healthy"
    entrypoint = next(
        p
        for p in repo_scripts_referenced("demo-pg-replica", pg_replica)
        if p.suffix == ".sh"
    ).read_text()
    assert "pg_basebackup" in entrypoint
    assert "--write-recovery-conf" in entrypoint or re.search(
        r"pg_basebackup[^\n]*\s-R\b", entrypoint
    )
    assert "exec docker-entrypoint.sh" in entrypoint

    primary_cmd = command_tokens(services["demo-mysql"]["command"])
    replica_cmd = command_tokens(services["demo-mysql-replica"]["command"])
    for cmd in (primary_cmd, replica_cmd):
        assert "--gtid-mode=ON" in cmd
        assert "--enforce-gtid-consistency=ON" in cmd
    server_ids = {t for t in primary_cmd + replica_cmd if t.startswith("--server-id=")}
    assert len(server_ids) == 2, (
        f"primary and replica need distinct server ids: {server_ids}"
    )

    setup_name = next(svc for svc in services if "mysql" in svc and "setup" in svc)
    setup = services[setup_name]
    assert setup["depends_on"]["demo-mysql"]["condition"] == "service_healthy"
    assert setup["depends_on"]["demo-mysql-replica"]["condition"] == "service_healthy"
    sql = "\n".join(p.read_text() for p in repo_scripts_referenced(setup_name, setup))
    assert re.search(r"CHANGE REPLICATION SOURCE TO", sql)
    assert re.search(r"SOURCE_AUTO_POSITION\s*=\s*1", sql)
    assert "START REPLICA" in sql
    # Something that runs tasks must wait for the MySQL replica to be configured.
    waiters = [
        name
        for name, svc in services.items()
        if isinstance(svc.get("depends_on"), dict)
        and svc["depends_on"].get(setup_name, {}).get("condition")
        == "service_completed_successfully"
    ]
    assert "airflow-scheduler" in waiters


def test_healthchecks_and_dependency_conditions(services):
    edges = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), (
            f"{name}: depends_on must use the long form with conditions"
        )
        for dep, spec in deps.items():
            edges.append((name, dep, spec.get("condition")))
    assert edges, "no depends_on anywhere"
    for name, dep, condition in edges:
        assert dep in services, f"{name} depends on unknown service {dep}"
        assert condition in ("service_healthy", "service_completed_successfully"), (
            name,
            dep,
        )
        if condition == "service_healthy":
            assert "healthcheck" in services[dep], (
                f"{name} waits for {dep}, which has no healthcheck"
            )
    # Long-running services all have a healthcheck (one-shot jobs and the debug CLI need none).
    one_shot = {"airflow-init", "airflow-cli"} | {
        s for s in services if s.endswith("-setup")
    }
    long_running = [name for name in services if name not in one_shot]
    assert set(EXPECTED_SERVICES) - {"airflow-init"} <= set(long_running)
    for name in long_running:
        assert "test" in (services[name].get("healthcheck") or {}), (
            f"{name} has no healthcheck"
        )
    for name in AIRFLOW_COMPONENTS:
        if name == "airflow-init":
            continue
        deps = services[name]["depends_on"]
        assert deps[METADATA_DB]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", (
            name
        )


def test_airflow_image_matches_requirements_pin(services):
    match = re.search(
        r"^apache-airflow==([^\s;#]+)", REQUIREMENTS.read_text(), re.MULTILINE
    )
    assert match, "requirements.txt does not pin apache-airflow==X"
    version = match.group(1)
    images = {
        interpolate_defaults(svc["image"])
        for svc in airflow_services(services).values()
    }
    assert images, "no Airflow image found"
    for image in images:
        repo, _, tag = image.partition(":")
        assert repo == "apache/airflow"
        assert tag == version or tag.startswith(f"{version}-python"), (
            f"Airflow image {image} does not match apache-airflow=={version} in requirements.txt"
        )


def test_interpolate_defaults():
    assert interpolate_defaults("${X:-apache/airflow:1.2.3}") == "apache/airflow:1.2.3"
    assert interpolate_defaults("${X-a}/b ${Y}") == "a/b "
    assert interpolate_defaults("$${HOSTNAME}") == "${HOSTNAME}"


def _compose_command() -> list[str] | None:
    """A working Compose v2 client: the docker CLI plugin, else a standalone docker-compose."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        try:
            out = subprocess.run(
                [*cmd, "version"],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"v?2\.\d+", out.stdout):
            return cmd
    return None


def test_docker_compose_config_validates():
    if not shutil.which("docker") and not shutil.which("docker-compose"):
        pytest.skip("no docker binary")
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("docker is installed but the Compose v2 plugin is not")
    # `config` only parses and validates; it does not talk to the Docker engine.
    result = subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "config", "-q"],
        check=False,
        capture_output=True,
        text=True,
        cwd=COMPOSE_DIR,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
