"""``zdt-backfill plan`` against real PostgreSQL and MariaDB: it prints every check and the
planned partitions, and writes nothing (no control table, target still empty, source intact)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import seed_users, source_fingerprint, users_conf
from zdt_backfill import cli

pytestmark = pytest.mark.integration


def zdt_tables(env) -> list[str]:
    """Every table named zdt* in the test database (the control tables pre-flight would create)."""
    if env.engine == "postgres":
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'zdt%%'")
    else:
        rows = env.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = database() AND table_name LIKE 'zdt%%'"
        )
    return sorted(r[0] for r in rows)


def plan(capsys, env, conf: dict, *extra: str) -> tuple[int, str, str]:
    code = cli.main(["plan", "--url", env.url, "--conf", json.dumps(conf), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_prints_checks_and_partitions_and_writes_nothing(env, capsys, tmp_path):
    seed_users(env, 1_000)
    before = source_fingerprint(env)
    conf_file = tmp_path / "conf.json"
    conf_file.write_text(json.dumps(users_conf(env, partitions=4, batch_size=100)))

    code = cli.main(["plan", "--url", env.url, "--conf", str(conf_file)])
    out, err = capsys.readouterr()

    assert code == 0, err
    assert f"pre-flight of users_legacy -> users_new on {env.url}" in out
    for check in ("source_table", "target_table", "key_indexed", "target_is_fresh", "explain", "load"):
        assert re.search(rf"^  ok    {check}\b", out, re.M), f"{check} not reported ok:\n{out}"
    assert "FAIL" not in out
    assert f"plan: {env.engine}, key index " in out and "keys 1..1000" in out
    assert "partitions: 4" in out
    ranges = [tuple(map(int, m)) for m in re.findall(r"^  p\d+  \[(\d+)\.\.(\d+)\]", out, re.M)]
    assert len(ranges) == 4 and ranges[0][0] == 1 and ranges[-1][1] == 1_000
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False)), ranges  # contiguous

    assert zdt_tables(env) == []  # no control table: pre-flight's first write never happened
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert source_fingerprint(env) == before


def test_plan_json_is_the_engine_plan(env, capsys):
    seed_users(env, 100)
    code, out, err = plan(capsys, env, users_conf(env, partitions=2, batch_size=10), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["plan"]["engine"] == env.engine
    assert [(p["lo"], p["hi"]) for p in doc["plan"]["partitions"]] == [(1, 50), (51, 100)]
    assert all(c["ok"] for c in doc["plan"]["checks"] if c["fatal"])
    assert doc["config"]["source_table"] == "users_legacy"
    assert zdt_tables(env) == []


def test_a_failed_check_exits_1_and_writes_nothing(env, capsys):
    seed_users(env, 100)
    code, out, err = plan(capsys, env, users_conf(env, key="email"))
    assert code == 1
    assert out == ""
    assert "pre-flight failed: key_type" in err and "only integer keys" in err
    assert len(err.strip().splitlines()) == 1
    assert zdt_tables(env) == []


def test_console_script_with_url_from_the_environment(env):
    """The installed entry point, as a user runs it: the URL (and its password) from the environment."""
    script = Path(sys.executable).parent / "zdt-backfill"
    if not script.exists():
        pytest.skip(f"{script} not installed (run `make venv`)")
    seed_users(env, 10)
    r = subprocess.run(
        [str(script), "plan", "--conf", "-"],
        input=json.dumps(users_conf(env, partitions=1)),
        env={**os.environ, cli.URL_ENV: env.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "partitions: 1" in r.stdout and re.search(r"^  p0  \[1\.\.10\]", r.stdout, re.M)
    assert zdt_tables(env) == []
