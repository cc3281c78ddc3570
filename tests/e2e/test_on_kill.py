"""Operators that stop when told (issue 22): SIGTERM to a real task runner (``dag.test`` in its own
process, as ``airflow dags test`` runs it: Airflow's SIGTERM handler calls ``on_kill``), once in
the middle of a throttle hold and once in the middle of a batch stalled by a slow trigger. The
attempt ends within seconds, the checkpoint stays where the last committed batch put it, and the
task's retry (the same ``dag.test`` process, as a supervisor would start it) resumes from exactly
there and the run ends exact.

Before ``on_kill`` existed, a partition held by its throttle query was still running 26 minutes
after a SIGTERM; a batch in flight ran to its end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import projection_diff, seed_users, users_conf

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ROWS = 20_000
SLOW_KEY = 6_500
STALL_SECONDS = 90
#: What "within seconds" means here: the process's whole exit, the rest of the DagRun included
#: (the downstream tasks are skipped as upstream-failed, the report task runs).
EXIT_SECONDS = 45

SCRIPT = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["zero_downtime_backfill"]
dr = dag.test(run_conf=json.loads(sys.argv[2]))
print("DAGRUN", dr.run_id, dr.state, flush=True)
"""


def watermark(env) -> int | None:
    here = "current_schema()" if env.engine == "postgres" else "database()"
    if not env.sql("SELECT 1 FROM information_schema.tables WHERE table_name = 'zdt_backfill_checkpoints'"
                   f" AND table_schema = {here}"):
        return None
    return env.scalar("SELECT max(watermark) FROM zdt_backfill_checkpoints")


def stalled(env) -> bool:
    if env.engine == "postgres":
        return env.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") > 0
    return env.scalar("SELECT count(*) FROM information_schema.processlist WHERE state = 'User sleep'") > 0


def slow_trigger(env) -> None:
    if env.engine == "postgres":
        env.sql("CREATE FUNCTION zdt_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.id = {SLOW_KEY} THEN PERFORM pg_sleep({STALL_SECONDS}); END IF; RETURN NEW; END $$")
        env.sql("CREATE TRIGGER zdt_test_slow BEFORE INSERT ON users_new FOR EACH ROW EXECUTE FUNCTION zdt_test_slow()")
    else:
        env.sql(f"CREATE TRIGGER zdt_test_slow BEFORE INSERT ON users_new FOR EACH ROW BEGIN"
                f" IF NEW.id = {SLOW_KEY} THEN DO SLEEP({STALL_SECONDS}); END IF; END")


def wait_for(what, timeout: float, proc) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def attempts(env) -> tuple[list[dict], list[dict]]:
    """The partition's attempt starts and ends, in order (the state table's events)."""
    rows = env.sql("SELECT kind, detail FROM zdt_backfill_events WHERE kind IN ('attempt', 'attempt_end') ORDER BY id")
    return ([json.loads(d) for k, d in rows if k == "attempt"], [json.loads(d) for k, d in rows if k == "attempt_end"])


@pytest.mark.parametrize("where", ["throttle_hold", "batch"])
def test_sigterm_stops_the_attempt_and_the_retry_resumes_exactly(env, airflow_db, where):
    seed_users(env, ROWS)
    env.sql("CREATE TABLE app_throttle (v int)")
    env.sql("INSERT INTO app_throttle VALUES (0)")
    conf = users_conf(env, partitions=1, batch_size=500, max_rows_per_second=20_000,
                      throttle_query="SELECT v FROM app_throttle", throttle_query_max=10)
    if where == "batch":
        slow_trigger(env)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ROOT / "dags"), json.dumps(conf)],
                            env={**os.environ, **env.conn_env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        if where == "throttle_hold":
            wait_for(lambda: (watermark(env) or 0) >= 3_000, 180, proc)
            env.sql("UPDATE app_throttle SET v = 100")  # the application says: hold
            time.sleep(3.0)
            held_at = watermark(env)
            time.sleep(2.0)
            assert watermark(env) == held_at  # the copy is held
        else:
            wait_for(lambda: stalled(env), 180, proc)
            held_at = watermark(env)
            assert held_at < SLOW_KEY
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: len(attempts(env)[1]) == 1, EXIT_SECONDS, proc)
        took = time.monotonic() - t0
        # the attempt ended where the last committed batch put the checkpoint, and the target holds those rows only
        assert attempts(env)[1][0]["outcome"] == "cancelled"
        assert watermark(env) == held_at and env.scalar("SELECT count(*) FROM users_new") == held_at
        # the application no longer holds, the trigger is gone: the task's retry resumes from there
        env.sql("UPDATE app_throttle SET v = 0")
        if where == "batch":
            env.sql("DROP TRIGGER zdt_test_slow" + (" ON users_new" if env.engine == "postgres" else ""))
        out, _ = proc.communicate(timeout=600)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        print(proc.communicate()[0][-6000:])  # the task log, shown with the failure
        raise
    assert took < EXIT_SECONDS, f"the attempt took {took:.0f}s to end after SIGTERM"
    assert "on_kill: stopping" in out and "CancelledError" in out, out[-6000:]
    assert "DAGRUN" in out and out.rstrip().endswith("success"), out[-6000:]
    starts, ends = attempts(env)
    assert [e["outcome"] for e in ends] == ["cancelled", "done"]
    assert not starts[0]["resumed"] and starts[1]["resumed"] and starts[1]["watermark"] == held_at, starts
    assert env.scalar("SELECT count(*) FROM users_new") == ROWS and projection_diff(env) == 0
