"""A conf without ``key`` runs on the source's primary key, read from the catalog by each task
(keys.resolve_key); a table whose primary key is missing or composite is refused by pre-flight,
naming what it found, and nothing is written. Real servers, every engine."""

from __future__ import annotations

import json

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill import cli
from zdt_backfill.config import RunConfig
from zdt_backfill.errors import PreflightError
from zdt_backfill.keys import primary_key, resolve_key
from zdt_backfill.lifecycle import Runner
from zdt_backfill.routing.flags import TableFlagStore

pytestmark = pytest.mark.integration


def control_tables(env) -> list[str]:
    """The zdt_* tables in the test database (a refused pre-flight creates none)."""
    if env.engine == "postgres":
        q = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name LIKE 'zdt%%'"
    else:
        q = "SELECT table_name FROM information_schema.tables WHERE table_schema = database() AND table_name LIKE 'zdt%%'"
    return sorted(r[0] for r in env.sql(q))


def test_a_conf_without_key_runs_on_the_primary_key_and_contracts_exact(env, tmp_path):
    seed_users(env, 4_000)
    config = RunConfig.from_params(users_conf(env, key=None, batch_size=1_000), run_id="pk-default")
    assert config.key is None
    runner = Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db))
    assert runner.config.key == "id"  # read from the catalog, before the first step
    out = runner.run(tmp_path)
    assert out["error"] is None and out["path"] == "contract", out.get("error")
    assert projection_diff(env) == 0
    assert out["report"]["rows_written"] == 4_000


def test_a_later_task_keeps_the_key_its_run_resolved_after_the_legacy_table_is_gone(env, tmp_path):
    """Each Airflow task builds its own Runner: after a legacy drop the source has no primary key
    to read, and the run's later tasks (the contract's finish) take the key from its run row."""
    seed_users(env, 1_000)
    config = RunConfig.from_params(users_conf(env, key=None, legacy_action="drop"), run_id="pk-dropped")
    out = Runner(config, env.db, owner="test", flag_store=TableFlagStore(env.db)).run(tmp_path)
    assert out["error"] is None and out["ending"]["state"] == "contracted", out.get("error")
    here = "current_schema()" if env.engine == "postgres" else "database()"
    assert env.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'users_legacy'"
                   f" AND table_schema = {here}")[0][0] == 0
    assert Runner(config, env.db, owner="finish task").config.key == "id"


def test_a_named_key_is_kept_and_costs_no_catalog_read(env):
    seed_users(env, 10)
    config = RunConfig.from_params(users_conf(env, key="id"), run_id="named")
    assert resolve_key(config, env.db) is config


@pytest.mark.parametrize("shape", ["composite", "none"])
def test_a_primary_key_that_is_not_one_column_is_refused_naming_it_and_nothing_changes(env, shape, capsys):
    pk = ", PRIMARY KEY (tenant_id, id)" if shape == "composite" else ""
    text = "text" if env.engine == "postgres" else "VARCHAR(100)"
    env.sql(f"CREATE TABLE orders_legacy (tenant_id int NOT NULL, id int NOT NULL, note {text}{pk});\n"
            f"CREATE TABLE orders_new (tenant_id int NOT NULL, id int NOT NULL, note_upper {text}{pk})")
    env.sql("INSERT INTO orders_legacy VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')")
    with env.db.session() as conn:
        assert primary_key(env.db, conn, "orders_legacy") == (["tenant_id", "id"] if pk else [])
    conf = users_conf(env, key=None, source_table="orders_legacy", target_table="orders_new",
                      columns={"note_upper": "upper(note)"})
    config = RunConfig.from_params(conf, run_id=f"pk-{shape}")
    before = control_tables(env)
    with pytest.raises(PreflightError) as err:
        Runner(config, env.db, owner="test").preflight()
    want = "primary key of orders_legacy is (tenant_id, id)" if pk else "orders_legacy has no primary key"
    assert want in str(err.value) and "name a unique, NOT NULL integer column in key" in str(err.value)
    assert control_tables(env) == before  # refused before the control tables or the lock
    assert env.sql("SELECT count(*) FROM orders_new")[0][0] == 0
    # the dry run and zdt-backfill plan refuse it the same way
    with pytest.raises(PreflightError, match=want.replace("(", r"\(").replace(")", r"\)")):
        Runner(config, env.db, owner="test").dry_run()
    assert cli.main(["plan", "--url", env.url, "--conf", json.dumps(conf)]) == 1
    assert want in capsys.readouterr().err

