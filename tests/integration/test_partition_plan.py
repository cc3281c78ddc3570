"""Partitions balanced by rows (key quantiles), on real PostgreSQL and MariaDB."""

from __future__ import annotations

import logging
import re

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.lifecycle.preflight import run_preflight

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
    # each partition carries its estimated rows: exact where the walk cut it, the rest for the last
    assert [p["rows"] for p in plan.partitions[:-1]] == counts[:-1]
    assert abs(plan.partitions[-1]["rows"] - counts[-1]) <= 0.2 * counts[-1], (plan.partitions, counts)
    for p in plan.partitions:
        PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index).run()
    assert projection_diff(env) == 0


def test_progress_counts_rows_where_a_partition_jumps_over_a_key_gap(env, caplog):
    seed_users(env, 30_000)
    # the top third of the keys moves past 10^12: p1 holds 5,000 dense keys, then 10,000 far ones
    env.sql("UPDATE users_legacy SET id = id + 1000000000000 WHERE id > 20000")
    env.sql("ANALYZE users_legacy" if env.engine == "postgres" else "ANALYZE TABLE users_legacy")
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=2, target_batch_seconds=0),
                                   run_id="gap")
    plan = run_preflight(config, env.db, [])
    p1 = plan.partitions[1]
    # about 15,000 rows: 5,000 dense keys, then 10,000 past 10^12 (InnoDB's sampled statistics move the cut)
    rows = rows_in(env, p1)
    assert abs(rows - 15_000) < 1_500 and p1["hi"] == 10**12 + 30_000 and abs(p1["rows"] - rows) < 0.1 * rows, (p1, rows)
    caplog.set_level(logging.INFO, logger="zdt_backfill.copying.copier")
    PartitionCopier(config, env.db, Partition.from_dict(p1), plan.key_index).run()
    done = [float(m.group(1)) for r in caplog.records
            if (m := re.search(re.escape(p1["label"]) + r" batch \d+: .*?; ([\d.]+)% done", r.getMessage()))]
    # by rows, batches of 1,000 go 6.7, 13.3, ... 100 % (within the estimate's error, at most 10 %
    # here); by key span the first five read 0.0 % and the rest 100.0 % (an ETA of hours, then none)
    assert len(done) == -(-rows // 1_000) and done[-1] == 100.0, done
    assert all(abs(d - 100.0 * (i + 1) * 1_000 / rows) < 12 for i, d in enumerate(done[:-1])), done


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_tiny_tables_still_plan(env, rows):
    seed_users(env, rows)
    config = RunConfig.from_params(users_conf(env, batch_size=1, partitions=8), run_id=f"tiny{rows}")
    plan = run_preflight(config, env.db, [])
    assert len(plan.partitions) == rows
    assert sum(rows_in(env, p) for p in plan.partitions) == rows
