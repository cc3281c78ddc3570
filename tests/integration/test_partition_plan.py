"""Partitions balanced by rows (key quantiles), on real PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill.chunker import Partition
from zdt_backfill.config import RunConfig
from zdt_backfill.copier import PartitionCopier
from zdt_backfill.preflight import run_preflight

pytestmark = pytest.mark.integration


def rows_in(env, p: dict) -> int:
    return env.scalar("SELECT count(*) FROM users_legacy WHERE id BETWEEN %s AND %s", (p["lo"], p["hi"]))


def test_skewed_keys_give_partitions_within_20_percent_in_rows(env):
    seed_users(env, 20_000)  # keys 1..20,000, dense
    # then 20,000 keys spread up to 10^12: equal key widths would put every dense key in p0
    env.sql("INSERT INTO users_legacy (id, email, legacy_data) SELECT id * 50000000, email, legacy_data FROM users_legacy")
    env.sql("ANALYZE users_legacy" if env.engine == "postgres" else "ANALYZE TABLE users_legacy")
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=4), run_id="skew")
    plan = run_preflight(config, env.db, [])
    assert len(plan.partitions) == 4
    counts = [rows_in(env, p) for p in plan.partitions]
    assert sum(counts) == 40_000
    assert max(counts) <= 1.2 * min(counts), counts
    for p in plan.partitions:
        PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index).run()
    assert projection_diff(env) == 0


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_tiny_tables_still_plan(env, rows):
    seed_users(env, rows)
    config = RunConfig.from_params(users_conf(env, batch_size=1, partitions=8), run_id=f"tiny{rows}")
    plan = run_preflight(config, env.db, [])
    assert len(plan.partitions) == rows
    assert sum(rows_in(env, p) for p in plan.partitions) == rows
