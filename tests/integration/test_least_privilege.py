"""The README's least database privileges are enough, and the surprising ones are needed.

The grants are read from the README ("Deploying into an existing Airflow": one ```sql block per
engine, one more per engine for rollback) and run as they are on the real test servers, with
only the placeholders replaced: the database ``appdb`` by the test's database and
``backfill_user`` by a fresh user name. Optional grants are comment lines of the form
``-- <label>: GRANT ...;`` (``sequence``, ``auto_increment``, ``fill mode``), applied when the
test's tables call for them. Then, as that user and through the engine's lifecycle (the calls
the DAG's tasks make): pre-flight, the copy, validation, repair of injected differences, the
decision and contract, with the replica probed as that user; or a rollback. A missing
privilege fails with the server's "permission denied". Each engine's non-obvious grants are
also weakened once, to show they are really needed.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

import localdb
from conftest import USERS_COLUMNS, projection_diff, seed_users, source_fingerprint, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.db import Database
from zdt_backfill.lifecycle import Runner
from zdt_backfill.routing.flags import TableFlagStore
from zdt_backfill.signals.lag import ReplicaStatusProbe
from zdt_backfill.state.runstate import RunHandle

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Deploying into an existing Airflow"
PASSWORD = "change-me"
OWNER = "least-privilege-test"
CONTRACT_STEPS = ("flip_routing", "legacy_action", "reclaim_storage", "finish")
ROLLBACK_STEPS = ("stop", "flip_routing", "empty_target", "restore_sequences", "clear_caches", "finish")


# ---------------------------------------------------------------------- the README's grants
def readme_block(engine: str, rollback: bool = False) -> str:
    """One ```sql block of the README section; its first line names the engine (and rollback)."""
    text = README.read_text()
    assert SECTION in text, f"README has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    name = "-- PostgreSQL" if engine == "postgres" else "-- MySQL"
    blocks = [
        b for b in re.findall(r"```sql\n(.*?)```", section, re.S)
        if b.startswith(name) and ("rollback" in b.splitlines()[0]) == rollback
    ]
    assert len(blocks) == 1, f"expected one ```sql block starting with {name!r} (rollback={rollback}) in the README"
    return blocks[0]


def statements(block: str) -> list[str]:
    """The block's statements: comment lines dropped, split at ';'."""
    code = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
    return [" ".join(s.split()) for s in code.split(";") if s.strip()]


def engine_statements(env, block: str) -> list[str]:
    """The block's statements for ``env``'s server: MariaDB takes its own replica-status grant."""
    sqls = statements(block)
    if env.flavour == "mariadb":
        sqls = [optional(block, "mariadb") if s.startswith("GRANT REPLICATION CLIENT ") else s for s in sqls]
    if env.flavour == "mysql":  # the suite's md5() (conftest: Oracle MySQL 9.7 has none), not a documented grant
        sqls.append("GRANT EXECUTE ON FUNCTION appdb.md5 TO 'backfill_user'@'%'")
    return sqls


def optional(block: str, label: str) -> str:
    """The grant of a ``-- <label>...: GRANT ...;`` comment line."""
    lines = [x for x in block.splitlines() if x.startswith(f"-- {label}")]
    assert len(lines) == 1, f"no single '-- {label}' line in the README block"
    return lines[0].split(": ", 1)[1].strip().rstrip(";")


def localize(sql: str, env, user: str) -> str:
    return re.sub(r"\bbackfill_user\b", user, re.sub(r"\bappdb\b", env.database, sql))


def grant(env, user: str, sqls: list[str]) -> None:
    """Run the grants as the servers' superuser, then wait until the replica has them."""
    with env.db.session() as conn:
        if env.engine == "postgres":
            conn.autocommit = True
        for sql in sqls:  # executed with an empty params tuple: a literal % is written %%
            env.db.execute(conn, localize(sql, env, user).replace("%", "%%"))
        conn.commit()
    localdb.wait_replica_caught_up(env.pair)


# ---------------------------------------------------------------------- the user and the run
def as_user(env, server, user: str) -> Database:
    scheme = "postgresql" if env.engine == "postgres" else "mysql"
    return Database.from_url(f"{scheme}://{user}:{quote(PASSWORD)}@{server.host}:{server.port}/{env.database}")


@pytest.fixture
def user(env):
    name = f"zdt_lp_{uuid.uuid4().hex[:8]}"
    yield name
    try:  # the servers live for the whole session: leave no user behind
        with env.db.session() as conn:
            if env.engine == "postgres":
                conn.autocommit = True
                env.db.execute(conn, f"DROP OWNED BY {name}")
                env.db.execute(conn, f"DROP ROLE IF EXISTS {name}")
            else:
                env.db.execute(conn, f"DROP USER IF EXISTS '{name}'@'%%'")
            conn.commit()
    except Exception:  # the user does not exist when the test failed early
        pass


def key_with_sequence(env) -> None:
    """Give users_new's key a sequence (PostgreSQL identity) or AUTO_INCREMENT, as many targets have."""
    if env.engine == "postgres":
        env.sql("ALTER TABLE users_new ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
        env.sql("SELECT setval('users_new_id_seq', 41)")  # where the application had it
    else:
        env.sql("ALTER TABLE users_new MODIFY id BIGINT NOT NULL AUTO_INCREMENT")
        env.sql("ALTER TABLE users_new AUTO_INCREMENT = 1000")


def key_sequence_position(env) -> int:
    if env.engine == "postgres":
        return int(env.scalar("SELECT last_value FROM users_new_id_seq"))
    return int(env.scalar("SELECT auto_increment FROM information_schema.tables WHERE table_schema = database()"
                          " AND table_name = 'users_new'"))


def sequence_grant(env, block: str) -> str:
    return optional(block, "sequence" if env.engine == "postgres" else "auto_increment")


class Run:
    """The engine's lifecycle as the DAG's tasks call it, as ``user``, the replica probed as ``user``."""

    def __init__(self, env, user: str, **conf) -> None:
        self.env = env
        self.db = as_user(env, env.pair.primary, user)
        self.probe = ReplicaStatusProbe(as_user(env, env.pair.replica, user))
        self.config = RunConfig.from_params(users_conf(env, partitions=2, batch_size=100, **conf), run_id="least-priv")

    def copy(self) -> dict:
        plan = Runner(self.config, self.db, owner=OWNER, probes=[self.probe]).preflight()
        for p in plan["partitions"]:
            Runner(self.config, self.db, owner=OWNER, probes=[self.probe]).copy_partition(p)
        Runner(self.config, self.db, owner=OWNER).start_catchup()
        return plan

    def validate(self) -> dict:
        return Runner(self.config, self.db, owner=OWNER).validate()

    def close(self) -> None:
        self.probe.close()


def zdt_tables(env) -> set[str]:
    if env.engine == "postgres":
        rows = env.sql("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'zdt%%'")
    else:
        rows = env.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = database() AND table_name LIKE 'zdt%%'"
        )
    return {r[0] for r in rows}


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("with_sequence", [False, True], ids=["plain-key", "key-sequence"])
def test_documented_grants_suffice_for_a_whole_run_to_contract(env, user, with_sequence):
    block = readme_block(env.engine)
    seed_users(env, 500)  # created by the superuser, the tables' owner, as in production
    if with_sequence:
        key_with_sequence(env)
    grant(env, user, engine_statements(env, block) + ([sequence_grant(env, block)] if with_sequence else []))
    run = Run(env, user)
    try:
        plan = run.copy()
        assert {c["name"] for c in plan["checks"] if c["ok"]} >= {"replica_lag", "explain", "target_is_fresh"}
        # Differences a repair has to fix: a changed row, a missing row, an extra row.
        env.sql("UPDATE users_new SET email_normalized = 'tampered' WHERE id = 7;\n"
                "DELETE FROM users_new WHERE id = 8;\n"
                "INSERT INTO users_new (id, email_normalized) VALUES (5000, 'extra')")
        first = run.validate()
        assert (first["different"], first["missing"], first["extra"]) == (1, 1, 1)
        repaired = Runner(run.config, run.db, owner=OWNER, probes=[run.probe]).repair()
        assert repaired["validation"]["mismatched"] == 0
        decision = Runner(run.config, run.db, owner=OWNER, probes=[run.probe]).decide()
        assert decision["next"] == "contract", decision
        store = TableFlagStore(run.db)
        for step in CONTRACT_STEPS:
            Runner(run.config, run.db, owner=OWNER, flag_store=store).contract_step(step)
        ended = Runner(run.config, run.db, owner=OWNER).finish()
        assert ended["success"] and ended["state"] == "contracted", ended
        assert run.probe.measure() is not None  # the replica's status, read as this user
    finally:
        run.close()
    assert projection_diff(env) == 0
    assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "new"
    if with_sequence:  # contract moved the key's sequence past max(id)
        assert key_sequence_position(env) >= 500
    if env.engine == "mysql":  # each control table needs its own grant there
        granted = set(re.findall(r"ON appdb\.(zdt_\w+) ", " ".join(engine_statements(env, block)) + " "))
        assert zdt_tables(env) <= granted, f"control tables without a documented grant: {zdt_tables(env) - granted}"


def test_documented_rollback_grants_suffice(env, user):
    block = readme_block(env.engine)
    seed_users(env, 500)
    key_with_sequence(env)
    before_seq = key_sequence_position(env)
    grant(env, user, engine_statements(env, block) + [sequence_grant(env, block)] + statements(readme_block(env.engine, True)))
    run = Run(env, user)
    try:
        run.copy()
        run.validate()
        before = source_fingerprint(env)
        assert env.scalar("SELECT count(*) FROM users_new") == 500
        store = TableFlagStore(run.db)
        for step in ROLLBACK_STEPS:
            Runner(run.config, run.db, owner=OWNER, probes=[run.probe], flag_store=store).rollback_step(step)
        ended = Runner(run.config, run.db, owner=OWNER).finish()
    finally:
        run.close()
    assert ended["rolled_back"], ended
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert source_fingerprint(env) == before
    assert key_sequence_position(env) == before_seq  # restored to where pre-flight found it
    assert RunHandle(env.db, run.config).row().state == "rolled_back"


def test_documented_fill_mode_grants_suffice(env, user):
    block = readme_block(env.engine)
    seed_users(env, 500)
    env.sql("ALTER TABLE users_legacy ADD COLUMN email_normalized varchar(255) NULL")
    table_grants = [s for s in engine_statements(env, block) if re.search(r"\busers_(legacy|new)\b", s)]
    assert len(table_grants) == 2, table_grants
    grant(env, user, [s for s in engine_statements(env, block) if s not in table_grants] + [optional(block, "fill mode")])
    run = Run(env, user, mode="fill", target_table=None, columns={"email_normalized": USERS_COLUMNS["email_normalized"]})
    try:
        run.copy()
        validation = run.validate()
    finally:
        run.close()
    assert validation["mismatched"] == 0 and validation["source_rows"] == 500
    assert env.scalar("SELECT count(*) FROM users_legacy WHERE email_normalized = lower(trim(email))") == 500


# Each engine's grants that look like more than a copy needs: without them, the run is refused.
NEEDED = {
    "postgres": [
        # FOR SHARE on the source needs UPDATE on one of its columns (pre-flight's EXPLAIN finds out)
        (r"GRANT SELECT, UPDATE \(id\) ON users_legacy", "GRANT SELECT ON users_legacy", "permission denied"),
        # the control tables are created by pre-flight
        (r"GRANT USAGE, CREATE ON SCHEMA", "GRANT USAGE ON SCHEMA", "permission denied for schema"),
    ],
    "mariadb": [
        # INSERT ... ON DUPLICATE KEY UPDATE needs UPDATE on the target
        (r"GRANT SELECT, INSERT, UPDATE, DELETE ON appdb\.users_new", "GRANT SELECT, INSERT, DELETE ON appdb.users_new",
         "UPDATE command denied"),
        # SHOW SLAVE STATUS on MariaDB: REPLICATION CLIENT (BINLOG MONITOR) is not enough; pre-flight
        # refuses, whichever way the probe words it (status unreadable, empty, or replica unreachable)
        (r"GRANT SLAVE MONITOR ON", "GRANT REPLICATION CLIENT ON",
         r"replica status|SHOW SLAVE STATUS|replica_lag: \S+=unreachable"),
    ],
    "mysql": [
        (r"GRANT SELECT, INSERT, UPDATE, DELETE ON appdb\.users_new", "GRANT SELECT, INSERT, DELETE ON appdb.users_new",
         "UPDATE command denied"),
        # SHOW REPLICA STATUS on Oracle MySQL needs REPLICATION CLIENT (or SUPER)
        (r"GRANT REPLICATION CLIENT ON", "GRANT USAGE ON",
         r"replica status|SHOW REPLICA STATUS|replica_lag: \S+=unreachable"),
    ],
}


@pytest.mark.parametrize("case", [0, 1])
def test_each_surprising_grant_is_needed(env, user, case):
    pattern, weaker, error = NEEDED[env.flavour][case]
    sqls = engine_statements(env, readme_block(env.engine))
    assert len([s for s in sqls if re.match(pattern, s)]) == 1, f"the README no longer has {pattern!r}: update NEEDED"
    seed_users(env, 500)
    grant(env, user, [re.sub(pattern, weaker, s) for s in sqls])
    run = Run(env, user)
    try:
        with pytest.raises(Exception, match=error):
            run.copy()
    finally:
        run.close()
