"""The project as a Python package, and the set-up script a fresh machine runs first.

- pyproject.toml's dependency ranges and requirements.txt's pins name the same distributions,
  and every pin satisfies its range (requirements.txt is one tested set inside the ranges);
- the installed ``zdt-backfill`` console script resolves to an importable callable, at the
  version pyproject declares;
- ``scripts/bootstrap.sh build-deps`` on a machine whose pkg-config finds no MySQL headers:
  as root it runs ``apt-get update`` then ``apt-get install ... default-libmysqlclient-dev
  pkg-config`` (a recorder stands in for apt-get); as an unprivileged user without
  passwordless sudo it prints the one ``sudo apt-get`` command to run, exits 1, and runs
  nothing.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DISTRIBUTION = PYPROJECT["project"]["name"]
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def declared() -> dict[str, Requirement]:
    """pyproject's [project].dependencies and the dev extra, by canonical name."""
    project = PYPROJECT["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    reqs = {}
    for spec in specs:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name not in reqs, f"{req.name} is declared twice in pyproject.toml"
        reqs[name] = req
    return reqs


def pinned() -> dict[str, Requirement]:
    """requirements.txt, by canonical name."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            assert name not in pins, f"{req.name} is pinned twice in requirements.txt"
            pins[name] = req
    return pins


# ---------------------------------------------------------------------- dependencies
def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = pinned()
    assert declared(), "pyproject.toml declares no dependencies"
    for name, req in declared().items():
        assert name in pins, f"pyproject.toml declares {req}, requirements.txt does not pin {req.name}"
        pin = pins[name]
        (spec,) = pin.specifier  # exactly one specifier ...
        assert spec.operator == "==", f"requirements.txt: {pin} is not pinned with =="  # ... and a pin
        assert req.specifier.contains(spec.version, prereleases=True), (
            f"requirements.txt pins {pin}, outside pyproject.toml's {req}"
        )
        assert pin.extras == req.extras, f"extras differ: {pin} vs {req}"
        assert pin.marker == req.marker, f"markers differ: {pin} vs {req}"


def test_every_pin_is_declared_in_pyproject():
    names = set(declared())
    extra = sorted(str(pin) for name, pin in pinned().items() if name not in names)
    assert not extra, f"requirements.txt pins {extra}, which pyproject.toml does not declare"


def test_dependency_checks_catch_a_pin_outside_the_range():
    # The comparison the two tests above rely on, on a known-bad pair.
    req, pin = Requirement("pyrate-limiter>=4.5,<5"), Requirement("pyrate-limiter==5.0.1")
    assert not req.specifier.contains(next(iter(pin.specifier)).version)
    assert Requirement("psycopg[binary]>=3.2").extras != Requirement("psycopg==3.3.9").extras


# ---------------------------------------------------------------------- console script
def test_console_script_resolves_to_the_cli():
    (script_target,) = [v for k, v in PYPROJECT["project"]["scripts"].items() if k == "zdt-backfill"]
    eps = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "zdt-backfill"]
    assert len(eps) == 1, f"zdt-backfill is not installed once: {eps} (run `make venv`)"
    ep = eps[0]
    assert ep.value == script_target
    assert canonicalize_name(ep.dist.name) == canonicalize_name(DISTRIBUTION)
    main = ep.load()
    assert callable(main)
    from zdt_backfill import __version__, cli

    assert main is cli.main
    assert importlib.metadata.version(DISTRIBUTION) == PYPROJECT["project"]["version"] == __version__


def test_installed_script_runs():
    script = Path(sys.executable).parent / "zdt-backfill"
    if not script.exists():
        pytest.skip(f"{script} not installed next to {sys.executable} (not running from the venv)")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"zdt-backfill {PYPROJECT['project']['version']}"


# ---------------------------------------------------------------------- bootstrap.sh build-deps
@pytest.fixture
def sandbox():
    """A world-readable folder holding a copy of scripts/bootstrap.sh, an empty pkg-config
    search path, a recorder standing in for apt-get, and its (world-writable) log.

    World-readable, unlike pytest's tmp_path, so an unprivileged user can run the script."""
    d = Path(tempfile.mkdtemp(prefix="zdt-bootstrap-"))
    try:
        os.chmod(d, 0o755)
        (d / "scripts").mkdir(mode=0o755)
        shutil.copy(BOOTSTRAP, d / "scripts" / "bootstrap.sh")
        os.chmod(d / "scripts" / "bootstrap.sh", 0o755)
        (d / "pkgconfig-empty").mkdir(mode=0o755)
        log = d / "apt-get.log"
        log.touch()
        os.chmod(log, 0o666)
        recorder = d / "apt-get"
        recorder.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\nexit 0\n")
        os.chmod(recorder, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bootstrap_env(sandbox: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": SYSTEM_PATH,
        "HOME": str(sandbox),
        "LANG": "C.UTF-8",
        # pkg-config searches only this (empty) folder: the MySQL headers look absent.
        "PKG_CONFIG_LIBDIR": str(sandbox / "pkgconfig-empty"),
        "ZDT_APT_GET": str(sandbox / "apt-get"),
    }
    env.update(extra)
    return env


def build_deps_cmd(sandbox: Path) -> list[str]:
    # PYTHON: the system one when present (readable by any user); VENV: a folder that does not
    # exist, so the script cannot skip because mysqlclient already imports there.
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else "python3"
    return ["bash", str(sandbox / "scripts" / "bootstrap.sh"), "build-deps", python, str(sandbox / "no-venv")]


def apt_calls(sandbox: Path) -> list[list[str]]:
    return [line.split() for line in (sandbox / "apt-get.log").read_text().splitlines()]


def needs_debian():
    if not Path("/etc/debian_version").is_file():
        pytest.skip("not a Debian/Ubuntu machine: bootstrap.sh only prints the packages to install there")


def test_build_deps_as_root_installs_the_missing_headers(sandbox):
    needs_debian()
    if os.geteuid() != 0:
        pytest.skip("needs root (the container-like fresh state)")
    r = subprocess.run(build_deps_cmd(sandbox), env=bootstrap_env(sandbox), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = apt_calls(sandbox)
    assert len(calls) == 2, calls
    update, install = calls
    assert update[0] == "update"
    assert install[0] == "install" and "-y" in install
    packages = [a for a in install[1:] if not a.startswith("-")]
    assert "default-libmysqlclient-dev" in packages and "pkg-config" in packages, install
    assert "installing system packages" in r.stdout


def test_build_deps_installs_nothing_when_the_headers_are_found(sandbox):
    needs_debian()
    if os.geteuid() != 0:
        pytest.skip("needs root")
    found = subprocess.run(["sh", "-c", "pkg-config --exists mysqlclient || pkg-config --exists libmariadb"],
                           env={"PATH": SYSTEM_PATH}, capture_output=True)
    if found.returncode != 0 or not shutil.which("cc", path=SYSTEM_PATH):
        pytest.skip("this machine lacks the MySQL headers or a compiler itself")
    env = bootstrap_env(sandbox)
    del env["PKG_CONFIG_LIBDIR"]
    r = subprocess.run(build_deps_cmd(sandbox), env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # Only the Python packages could be missing (a system Python without its -dev/-venv parts).
    for call in apt_calls(sandbox):
        assert call[0] == "update" or not {"default-libmysqlclient-dev", "build-essential"} & set(call), call


def _as_unprivileged_user() -> list[str] | None:
    """A command prefix that runs as uid/gid 65534 (nobody), or None."""
    candidates = [
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
        ["runuser", "-u", "nobody", "--"],
    ]
    for prefix in candidates:
        if not shutil.which(prefix[0], path=SYSTEM_PATH):
            continue
        try:
            r = subprocess.run([*prefix, "id", "-u"], capture_output=True, text=True, timeout=30,
                               env={"PATH": SYSTEM_PATH})
        except OSError:
            continue
        if r.returncode == 0 and r.stdout.strip() == "65534":
            return prefix
    return None


def test_build_deps_without_root_prints_one_command_and_installs_nothing(sandbox):
    needs_debian()
    if os.geteuid() == 0:
        prefix = _as_unprivileged_user()
        if prefix is None:
            pytest.skip("cannot switch to an unprivileged user (no setpriv or runuser)")
    else:
        prefix = []
    sudo_ok = subprocess.run([*prefix, "sh", "-c", "command -v sudo >/dev/null && sudo -n true"],
                             env={"PATH": SYSTEM_PATH}, capture_output=True, timeout=30)
    if sudo_ok.returncode == 0:
        pytest.skip("this user has passwordless sudo: the script would install")
    r = subprocess.run([*prefix, *build_deps_cmd(sandbox)], env=bootstrap_env(sandbox), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    commands = [line.strip() for line in r.stderr.splitlines() if "apt-get" in line]
    assert len(commands) == 1, r.stderr
    assert re.fullmatch(
        r"sudo apt-get update && sudo apt-get install -y (\S+ )*default-libmysqlclient-dev( \S+)*", commands[0]
    ), commands[0]
    assert "pkg-config" in commands[0].split()
    assert apt_calls(sandbox) == [], "the recorder (apt-get) was run without root"
