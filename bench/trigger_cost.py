"""`make bench`, issue 21: what ``dual_write: trigger`` costs the application.

The fixed-rate application load of :mod:`oltp` (a point read and an update of ``users_legacy``
by random id, ``BENCH_OLTP_RATE`` transactions/s for ``BENCH_OLTP_SECONDS``) runs twice against a
filled ``users_new`` (the steady state of a copy: the trigger's upsert updates an existing row):
without triggers, then with the run's up triggers installed by a real pre-flight. It reports
p50 / p99 latency from the scheduled start and the transactions not done (errors and misses) of
each, and their ratio. The triggers are then removed and the control tables dropped.
"""

from __future__ import annotations

from typing import Any

import common
import oltp
import stats

import localdb
from zdt_backfill.db import Database
from zdt_backfill.lifecycle import Runner
from zdt_backfill.lifecycle import triggers as trigger_mod


def trigger_cost(pair: localdb.Pair, db: Database) -> dict[str, Any]:
    common.reset_target(db)
    common.monolithic(db)  # the target already holds every row, as during and after the copy
    localdb.wait_replica_caught_up(pair, timeout=600)
    plain = oltp.start(pair.primary, common.ROWS, common.OLTP_RATE, common.OLTP_SECONDS).result()
    cfg = common.engine_config(db, "dev", "bench-triggers", dual_write="trigger", max_replica_lag_seconds=0)
    runner = Runner(cfg, db, owner="bench")
    runner.preflight()  # installs the up triggers (after its checks and the lock)
    names = trigger_mod.installed(runner.config, db)
    try:
        localdb.wait_replica_caught_up(pair, timeout=600)
        fired = oltp.start(pair.primary, common.ROWS, common.OLTP_RATE, common.OLTP_SECONDS).result()
    finally:
        trigger_mod.remove(runner.config, db, runner.handle, "bench")
        common.reset_target(db)
    return {
        "trigger_names": names,
        "oltp_write_p50_ms_no_triggers": plain["p50_ms"], "oltp_write_p99_ms_no_triggers": plain["p99_ms"],
        "oltp_write_p50_ms_triggers": fired["p50_ms"], "oltp_write_p99_ms_triggers": fired["p99_ms"],
        "oltp_not_done_no_triggers": plain["not_done"], "oltp_not_done_triggers": fired["not_done"],
        "oltp_transactions_triggers": fired["transactions"],
        "oltp_p99_triggers_vs_none": stats.ratio(fired["p99_ms"], plain["p99_ms"]),
        "oltp_p50_triggers_vs_none": stats.ratio(fired["p50_ms"], plain["p50_ms"]),
    }
