"""Critical load cancels the batch in flight (gh-ost's --critical-load), on real servers.

An application transaction holds a row the first batch must insert, so the batch's statement
waits (lock wait 30 s); then sessions running SLEEP/pg_sleep push the running-sessions signal
over its critical limit. The watchdog cancels the batch within about a reading, the batch and
its checkpoint roll back together, and the partition halts with CriticalLoadError.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import seed_users, users_conf
from zdt_backfill.chunker import Partition
from zdt_backfill.config import RunConfig
from zdt_backfill.copier import PartitionCopier
from zdt_backfill.preflight import run_preflight
from zdt_backfill.runstate import RunHandle
from zdt_backfill.throttler import CriticalLoadError

pytestmark = pytest.mark.integration


def test_critical_load_cancels_the_in_flight_batch_and_halts_keeping_the_checkpoint(env):
    seed_users(env, 3_000)
    signal = "active_backends" if env.engine == "postgres" else "threads_running"
    config = RunConfig.from_params(users_conf(env, batch_size=1_000, partitions=1, lock_timeout_seconds=30,
                                              statement_timeout_seconds=60, target_batch_seconds=0,
                                              critical_load={signal: 4}), run_id="critical")
    plan = run_preflight(config, env.db, [])
    app = env.db.connect()  # the application: an uncommitted insert of a key of the first batch
    env.db.execute(app, "INSERT INTO users_new (id, email_normalized) VALUES (550, 'app@example.com')")
    sleepers: list[threading.Thread] = []
    pause = "SELECT pg_sleep(3)" if env.engine == "postgres" else "SELECT SLEEP(3)"

    def sleeper():
        with env.db.session() as c:
            env.db.query(c, pause)

    def overload():
        time.sleep(1.5)  # the batch is now waiting on the application's row
        overload.at = time.monotonic()
        for _ in range(5):
            th = threading.Thread(target=sleeper)
            th.start()
            sleepers.append(th)

    trigger = threading.Thread(target=overload)
    trigger.start()
    try:
        with pytest.raises(CriticalLoadError, match="in-flight batch .* was cancelled and rolled back") as err:
            PartitionCopier(config, env.db, Partition.from_dict(plan.partitions[0]), plan.key_index).run()
        halted_after = time.monotonic() - overload.at
    finally:
        trigger.join()
        app.rollback()
        app.close()
        for th in sleepers:
            th.join()
    assert halted_after < 2.5, halted_after  # cancelled at once, not after the 30 s lock wait
    assert signal in str(err.value)
    assert env.scalar("SELECT count(*) FROM users_new") == 0  # the batch rolled back
    handle = RunHandle(env.db, config)
    events = handle.events("critical_load")
    assert events and events[-1].detail["watermark"] == plan.partitions[0]["lo"] - 1
