"""The ``zdt-backfill`` CLI without a database: version, help, and argument and conf errors.

Exit codes: 2 for bad arguments or an invalid conf (one line on stderr, no traceback), 1 when
the database cannot be reached. ``plan`` against real servers is in tests/integration/test_cli_plan.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from zdt_backfill import cli

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
CONF = {"source_table": "users_legacy", "target_table": "users_new", "key": "id",
        "columns": {"email_normalized": "lower(trim(email))"}, "allow_unwatched_ramp": True}


@pytest.fixture(autouse=True)
def no_url_in_env(monkeypatch):
    monkeypatch.delenv(cli.URL_ENV, raising=False)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"zdt-backfill {VERSION}"


def test_python_dash_m_runs_the_same_cli():
    r = subprocess.run([sys.executable, "-m", "zdt_backfill", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"zdt-backfill {VERSION}"


def test_help_names_plan_and_the_commands_to_come(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "plan" in out and "read-only" in out
    assert "dry-run" in out and "diagnose" in out and "later issues" not in out
    assert re.search(r"^\s+dry-run\s+EXPLAIN", out, re.M), out  # listed as a command


def test_no_command_prints_usage_and_exits_2(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: zdt-backfill" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["plan", "--url", "postgresql://u@h/d"], "the following arguments are required: --conf"),
        (["plan", "--conf", "{}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argparse_errors_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


@pytest.mark.parametrize(
    "conf, message",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps({**CONF, "source_table": "users; DROP TABLE x"}), "not a plain SQL identifier"),
        (json.dumps({**CONF, "batch_size": 0}), "batch_size must be a whole number"),
        (json.dumps({**CONF, "no_such_field": 1}), "unknown conf field(s): no_such_field"),
    ],
)
def test_bad_conf_is_one_line_and_exit_2(capsys, conf, message):
    code, out, err = run(capsys, "plan", "--url", "postgresql://u@127.0.0.1:1/d", "--conf", conf)
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_conf_from_a_file_and_from_stdin(capsys, tmp_path, monkeypatch):
    bad = {**CONF, "profile": "nope"}
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(bad))
    code, _, err = run(capsys, "plan", "--url", "postgresql://u@127.0.0.1:1/d", "--conf", str(path))
    assert code == 2 and "profile must be one of" in err  # the file was read and validated
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(json.dumps(bad)))
    code, _, err = run(capsys, "plan", "--url", "postgresql://u@127.0.0.1:1/d", "--conf", "-")
    assert code == 2 and "profile must be one of" in err
    code, _, err = run(capsys, "plan", "--url", "postgresql://u@127.0.0.1:1/d", "--conf", str(tmp_path / "missing"))
    assert code == 2 and "cannot read --conf" in err


def test_url_is_required_and_must_be_postgres_or_mysql(capsys, monkeypatch):
    code, _, err = run(capsys, "plan", "--conf", json.dumps(CONF))
    assert code == 2 and "--url is required" in err
    code, _, err = run(capsys, "plan", "--url", "sqlite:///x.db", "--conf", json.dumps(CONF))
    assert code == 2 and "postgresql:// or mysql://" in err
    monkeypatch.setenv(cli.URL_ENV, "oracle://u@h/d")  # the default of --url
    code, _, err = run(capsys, "plan", "--conf", json.dumps(CONF))
    assert code == 2 and "oracle://" in err


def test_unreachable_database_is_exit_1_with_the_password_masked(capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run(capsys, "plan", "--url", f"postgresql://u:s3cret@127.0.0.1:{port}/d", "--conf",
                         json.dumps(CONF))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "error:" in err
    assert "s3cret" not in err


def test_mask_url():
    assert cli.mask_url("mysql://root:pw@h:3306/db") == "mysql://root:***@h:3306/db"
    assert cli.mask_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["parity", "--production-url", "postgresql://u@h/d", "--table", "t"],
         "the following arguments are required: --staging-url"),
        (["parity", "--staging-url", "postgresql://u@h/d", "--production-url", "postgresql://u@h/e"],
         "the following arguments are required: --table"),
        (["parity", "--staging-url", "sqlite:///x", "--production-url", "postgresql://u@h/e", "--table", "t"],
         "--staging-url must start with postgresql:// or mysql://"),
        (["parity", "--staging-url", "postgresql://u@h/d", "--production-url", "oracle://u@h/e", "--table", "t"],
         "--production-url must start with postgresql:// or mysql://"),
        (["parity", "--staging-url", "postgresql://u@h/d", "--production-url", "postgresql://u@h/e",
          "--table", "t; DROP TABLE x"], "not a plain SQL identifier"),
    ],
)
def test_parity_argument_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_parity_unreachable_is_exit_1_with_passwords_masked(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run(capsys, "parity", "--staging-url", f"postgresql://u:s3cret@127.0.0.1:{port}/d",
                         "--production-url", f"postgresql://u:s3cret@127.0.0.1:{port}/e", "--table", "t")
    assert code == 1 and out == "" and "error:" in err and "s3cret" not in err
