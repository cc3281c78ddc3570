"""Pre-flight that validation can trust (issue 7, item 8), on real PostgreSQL and MariaDB.

- a NULL-able key (a unique index allows NULLs, whose rows are neither copied nor validated)
  is refused;
- each class of impure column expression (a subquery, ``now()``, ``random()``/``rand()``,
  ``pg_sleep``/``sleep``, a column of another table) is refused with a message naming it, and
  the database is left as it was: no ``zdt_*`` control table, the target and the source untouched;
- a view as the source is refused as a view, not for a missing unique index;
- a non-integer key that is also listed in ``columns`` is refused for its type first;
- pure expressions (``lower(trim(email))``, ``md5(x)``, ``CASE``, ``CAST``, arithmetic) pass.
"""

from __future__ import annotations

import dataclasses

import pytest

import localdb
from conftest import seed_users, source_fingerprint, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.errors import PreflightError
from zdt_backfill.lifecycle.preflight import inspect, run_preflight

pytestmark = pytest.mark.integration


def control_tables(env) -> list[str]:
    if env.engine == "postgres":
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'zdt%%'")
    else:
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = database()"
                       " AND table_name LIKE 'zdt%%'")
    return sorted(r[0] for r in rows)


def refused(env, config, match: str) -> str:
    """Pre-flight refuses ``config`` with ``match`` in its message and writes nothing."""
    before_source = source_fingerprint(env) if config.source_table == "users_legacy" else None
    before_target = env.sql("SELECT id, email_normalized FROM users_new ORDER BY id")
    with pytest.raises(PreflightError, match=match) as err:
        run_preflight(config, env.db, [])
    assert control_tables(env) == []
    assert env.sql("SELECT id, email_normalized FROM users_new ORDER BY id") == before_target
    if before_source is not None:
        assert source_fingerprint(env) == before_source
    return str(err.value)


def test_a_null_able_key_is_refused(env):
    if env.engine == "postgres":
        env.sql("CREATE TABLE s (id bigint NULL, v text);\nCREATE UNIQUE INDEX s_id ON s (id)")
        env.sql("CREATE TABLE users_new (id bigint PRIMARY KEY, email_normalized text)")
    else:
        env.sql("CREATE TABLE s (id BIGINT NULL, v TEXT, UNIQUE KEY s_id (id))")
        env.sql("CREATE TABLE users_new (id BIGINT NOT NULL PRIMARY KEY, email_normalized VARCHAR(255))")
    env.sql("INSERT INTO s VALUES (1, 'a'), (NULL, 'never copied'), (NULL, 'never validated')")
    env.sql("INSERT INTO users_new VALUES (1, 'kept')")
    config = RunConfig.from_params(
        {"conn_id": env.conn_id, "source_table": "s", "target_table": "users_new", "key": "id",
         "columns": {"email_normalized": "v"}, "dual_write": "assumed", "profile": "dev"}, run_id="nullkey")
    message = refused(env, config, "NULL-able")
    assert "key column 'id' of s is NULL-able" in message


def expressions(engine):
    """(class, expression, words the refusal names) per engine."""
    return [
        ("subquery", "(SELECT max(email_normalized) FROM users_new)", "subquery"),
        ("now", "now()", "now() is not deterministic"),
        ("random", "random()" if engine == "postgres" else "rand()", "is not deterministic"),
        ("sleep", "pg_sleep(1)" if engine == "postgres" else "sleep(1)", "has side effects"),
        ("another table", "users_new.email_normalized", "qualified with another table"),
    ]


@pytest.mark.parametrize("kind", ["subquery", "now", "random", "sleep", "another table"])
def test_impure_expressions_are_refused_and_the_database_is_unchanged(env, kind):
    seed_users(env, 100)
    env.sql("INSERT INTO users_new (id, email_normalized) VALUES (1, 'kept')")
    (_, sql, words), = [e for e in expressions(env.engine) if e[0] == kind]
    config = RunConfig.from_params(users_conf(env, columns={"email_normalized": sql, "data_hash": "md5(legacy_data)"}),
                                   run_id="impure")
    message = refused(env, config, "expressions")
    assert f"expression for 'email_normalized' ({sql})" in message and words in message


def test_a_view_as_source_is_refused_as_a_view(env):
    seed_users(env, 10)
    env.sql("CREATE VIEW orders_v AS SELECT * FROM users_legacy")
    config = RunConfig.from_params(users_conf(env, source_table="orders_v"), run_id="view")
    message = refused(env, config, "orders_v is a view, not a table")
    assert "unique index" not in message


def test_a_view_as_target_is_refused_as_a_view(env):
    seed_users(env, 10)
    env.sql("CREATE VIEW users_new_v AS SELECT * FROM users_new")
    config = RunConfig.from_params(users_conf(env, target_table="users_new_v"), run_id="view")
    refused(env, config, "users_new_v is a view, not a table")


def test_the_key_type_is_checked_before_the_columns(env):
    """A non-integer key also listed in columns: refused for the key's type (config.py refuses the
    listing before pre-flight today, so the config is built past it here)."""
    seed_users(env, 10)
    config = RunConfig.from_params(users_conf(env), run_id="keytype")
    config = dataclasses.replace(config, key="email", columns={**config.columns, "email": "email"})
    message = refused(env, config, "only integer keys")
    assert "do not list it in columns" not in message and "missing in target" not in message


def test_pure_expressions_pass(env):
    seed_users(env, 100)
    as_text = "text" if env.engine == "postgres" else "CHAR"
    accepted = [
        {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"},
        {"email_normalized": "CASE WHEN id % 2 = 0 THEN 'even' ELSE lower(email) END", "data_hash": "md5(email)"},
        {"email_normalized": f"CAST(id * 2 + 1 AS {as_text})", "data_hash": f"CAST(length(email) AS {as_text})"},
        {"email_normalized": "concat(upper(substr(email, 1, 3)), '-', users_legacy.id)", "data_hash": "NULL"},
    ]
    for columns in accepted:
        config = RunConfig.from_params(users_conf(env, columns=columns), run_id="pure")
        with env.db.session() as conn:
            plan = inspect(config, env.db, conn, [])
        assert {c.name: c.ok for c in plan.checks}["expressions"] is True, columns
    assert control_tables(env) == []


def test_a_function_shadowing_a_builtin_on_the_search_path_is_refused(pg_env):
    """A schema ahead of pg_catalog on the search path defines its own lower(): an unqualified
    lower(trim(email)) would run it. Pre-flight reads the resolved search path and refuses."""
    env = pg_env
    seed_users(env, 30)
    name = env.scalar("SELECT current_database()")
    env.sql("CREATE SCHEMA evil")
    env.sql("CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'pwned'::text $$")
    env.sql(f'ALTER DATABASE "{name}" SET search_path = public, evil, pg_catalog')
    try:
        assert env.scalar("SELECT lower('ABC')") == "pwned"  # what an unqualified call runs now
        before = source_fingerprint(env)
        config = RunConfig.from_params(users_conf(env), run_id="shadow")
        message = refused(env, config, "functions_unshadowed")
        assert "lower() would run evil.lower" in message
        assert source_fingerprint(env) == before
    finally:
        env.sql(f'ALTER DATABASE "{name}" RESET search_path')
        env.sql("DROP SCHEMA evil CASCADE")
    # with the default search path (pg_catalog implicitly first) the same run passes pre-flight
    config = RunConfig.from_params(users_conf(env), run_id="shadow-ok")
    with env.db.session() as conn:
        plan = inspect(config, env.db, conn, [])
    assert {c.name: c.ok for c in plan.checks}["functions_unshadowed"] is True


def test_a_writable_replica_is_reported(env):
    """Pre-flight reads each replica's own read-only setting: on every server the suite's replicas
    refuse client writes (PostgreSQL in recovery, MySQL super_read_only, MariaDB read_only); a MySQL
    replica opened to writes is named in a warning, and the run still plans (a health signal never
    destroys, and this one does not even hold)."""
    from zdt_backfill.signals.lag import ReplicaLagProbe

    seed_users(env, 30)
    localdb.wait_replica_caught_up(env.pair)
    config = RunConfig.from_params(users_conf(env), run_id="ro")
    probe = ReplicaLagProbe(env.replica_db)
    try:
        with env.db.session() as conn:
            checks = {c.name: c for c in inspect(config, env.db, conn, [probe]).checks}
        assert checks["replicas_read_only"].ok, checks["replicas_read_only"].detail
        if env.engine == "mysql":
            variable = "super_read_only" if env.flavour == "mysql" else "read_only"
            replica = env.pair.replica
            localdb._query(replica, f"SET GLOBAL {variable} = 0", database="mysql")
            try:
                with env.db.session() as conn:
                    checks = {c.name: c for c in inspect(config, env.db, conn, [probe]).checks}
            finally:
                localdb._query(replica, f"SET GLOBAL {variable} = 1", database="mysql")
            item = checks["replicas_read_only"]
            assert not item.ok and not item.fatal and "take client writes" in item.detail, item
    finally:
        probe.close()
