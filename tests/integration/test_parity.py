"""Environment parity on real servers (issue 7, item 7).

Staging and production are two databases on the same primary for schema differences (and,
on PostgreSQL, a per-database setting); on MariaDB the setting difference is the replica
server against the primary (``SET GLOBAL`` on the replica, restored afterwards), since the
replica replicates DDL and cannot hold a schema difference.
"""

from __future__ import annotations

import pytest

from conftest import _fresh_env, seed_users
from zdt_backfill.db import Database
from zdt_backfill.errors import PreflightError
from zdt_backfill.verify import parity

TABLES = ["users_legacy", "users_new"]


def _seed(e):
    seed_users(e, 20)
    e.sql("CREATE INDEX users_legacy_email ON users_legacy (email)")


def _zdt_tables(e):
    col = "table_schema" if e.engine == "postgres" else "TABLE_SCHEMA"
    where = "current_schema()" if e.engine == "postgres" else "database()"
    return e.scalar(f"SELECT count(*) FROM information_schema.tables WHERE {col} = {where}"
                    " AND table_name LIKE 'zdt%%'")


@pytest.fixture
def two(env):
    """(staging, production): two databases with the same schema on the same primary."""
    other = _fresh_env(env.flavour, env.pair)
    _seed(env)
    _seed(other)
    return env, other


def by_name(report):
    return {(d.kind, d.name): d for d in report.differences}


def test_identical_environments_have_no_difference(two):
    staging, production = two
    report = parity.compare(staging.db, production.db, TABLES)
    assert report.differences == [], [d.line() for d in report.differences]
    assert report.ok
    report.raise_if_fatal()  # does not raise
    assert report.to_dict()["ok"] is True and report.to_dict()["differences"] == []


def test_missing_index_is_fatal_and_named(two):
    staging, production = two
    production.sql("DROP INDEX users_legacy_email" + ("" if production.engine == "postgres" else " ON users_legacy"))
    report = parity.compare(staging.db, production.db, TABLES)
    d = by_name(report)[("index", "users_legacy.users_legacy_email")]
    assert d.severity == "fatal" and d.production is None
    assert "(email)" in d.staging
    assert not report.ok
    with pytest.raises(PreflightError, match="users_legacy.users_legacy_email"):
        report.raise_if_fatal()
    assert _zdt_tables(staging) == 0 and _zdt_tables(production) == 0  # nothing written


def test_column_type_nullability_and_unique_differences(two):
    staging, production = two
    if production.engine == "postgres":
        production.sql("ALTER TABLE users_new ALTER COLUMN data_hash TYPE varchar(40);\n"
                       "ALTER TABLE users_new ALTER COLUMN email_normalized SET NOT NULL;\n"
                       "DROP INDEX users_legacy_email;\n"
                       "CREATE UNIQUE INDEX users_legacy_email ON users_legacy (email) WHERE id > 0")
    else:
        production.sql("ALTER TABLE users_new MODIFY data_hash CHAR(40) NULL;\n"
                       "ALTER TABLE users_new MODIFY email_normalized VARCHAR(255) NOT NULL;\n"
                       "DROP INDEX users_legacy_email ON users_legacy;\n"
                       "CREATE UNIQUE INDEX users_legacy_email ON users_legacy (email)")
    report = parity.compare(staging.db, production.db, TABLES)
    got = by_name(report)
    t = got[("column_type", "users_new.data_hash")]
    assert t.severity == "fatal" and t.staging != t.production
    n = got[("column_nullable", "users_new.email_normalized")]
    assert (n.staging, n.production, n.severity) == ("NULL", "NOT NULL", "fatal")
    i = got[("index", "users_legacy.users_legacy_email")]
    assert i.severity == "fatal" and i.production.startswith("UNIQUE") and not i.staging.startswith("UNIQUE")
    if production.engine == "postgres":
        assert "WHERE" in i.production
    message = str(pytest.raises(PreflightError, report.raise_if_fatal).value)
    for name in ("users_new.data_hash", "users_new.email_normalized", "users_legacy.users_legacy_email"):
        assert name in message


def test_missing_table_is_fatal(two):
    staging, production = two
    production.sql("DROP TABLE users_new")
    d = by_name(parity.compare(staging.db, production.db, TABLES))[("table", "users_new")]
    assert (d.staging, d.production, d.severity) == ("present", None, "fatal")


def test_pg_per_database_setting_is_reported(pg_env):
    staging = pg_env
    production = _fresh_env("postgres", pg_env.pair)
    _seed(staging)
    _seed(production)
    production.sql(f'ALTER DATABASE "{production.database}" SET lock_timeout = \'5s\'')
    with Database.from_url(production.url).session() as conn:  # a fresh session sees it
        assert Database.query(conn, "SHOW lock_timeout")[0][0] == "5s"
    report = parity.compare(staging.db, production.db, TABLES)
    d = by_name(report)[("setting", "lock_timeout")]
    assert (d.staging, d.production, d.severity) == ("0", "5s", "warn")
    assert report.ok and [x.name for x in report.differences] == ["lock_timeout"]
    report.raise_if_fatal()  # a timeout is a warning, not a refusal
    assert _zdt_tables(staging) == 0 and _zdt_tables(production) == 0


def test_mariadb_replica_global_setting_is_reported(mariadb_env):
    e = mariadb_env
    _seed(e)
    import localdb

    localdb.wait_replica_caught_up(e.pair)
    before = {(d.kind, d.name) for d in parity.compare(e.replica_db, e.db, TABLES).differences}
    with e.replica_db.session() as conn:
        original = Database.query(conn, "SELECT @@GLOBAL.innodb_lock_wait_timeout")[0][0]
    assert str(original) != "7"
    try:
        with e.replica_db.session() as conn:
            Database.execute(conn, "SET GLOBAL innodb_lock_wait_timeout = 7")
        report = parity.compare(e.replica_db, e.db, TABLES)  # replica as "staging"
    finally:
        with e.replica_db.session() as conn:
            Database.execute(conn, "SET GLOBAL innodb_lock_wait_timeout = %s", (int(original),))
    assert ("setting", "innodb_lock_wait_timeout") not in before
    got = by_name(report)
    d = got[("setting", "innodb_lock_wait_timeout")]
    assert (d.staging, d.production, d.severity) == ("7", str(original), "warn")
    assert set(got) - before == {("setting", "innodb_lock_wait_timeout")}
    assert not any(k[0] in ("index", "column", "column_type", "column_nullable", "table") for k in got)
    assert _zdt_tables(e) == 0


def test_cli_parity_exit_codes(two, capsys):
    import json

    from zdt_backfill import cli

    staging, production = two
    argv = ["parity", "--staging-url", staging.url, "--production-url", production.url,
            "--table", "users_legacy", "--table", "users_new"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "no difference" in out
    production.sql("DROP INDEX users_legacy_email" + ("" if production.engine == "postgres" else " ON users_legacy"))
    assert cli.main([*argv, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [d["name"] for d in doc["differences"]] == ["users_legacy.users_legacy_email"]


def test_preflight_fails_on_a_fatal_parity_difference_before_writing_anything(two):
    from conftest import users_conf
    from zdt_backfill.config import RunConfig
    from zdt_backfill.lifecycle.preflight import run_preflight

    staging, production = two
    production.sql("DROP INDEX users_legacy_email" + ("" if production.engine == "postgres" else " ON users_legacy"))
    config = RunConfig.from_params(users_conf(production, parity_conn_id="staging"), run_id="parity")
    with pytest.raises(PreflightError, match="users_legacy.users_legacy_email"):
        run_preflight(config, production.db, [], parity_db=staging.db)
    assert _zdt_tables(production) == 0 and production.scalar("SELECT count(*) FROM users_new") == 0
    same = RunConfig.from_params(users_conf(staging, parity_conn_id="prod"), run_id="parity-ok")
    twin = _fresh_env(staging.flavour, staging.pair)  # an identical production: pre-flight passes
    _seed(twin)
    assert run_preflight(same, twin.db, [], parity_db=staging.db).partitions
