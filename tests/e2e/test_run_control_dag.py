"""Run control through the whole DAG (``dag.test()``) on PostgreSQL and MariaDB: the DagRun's
state tells the truth, approval waits for a human and changes nothing meanwhile, the ramp
flips reads back on a bad error rate, and the legacy action runs only after its soak."""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import projection_diff, run_dag, seed_users, source_fingerprint, users_conf

pytestmark = pytest.mark.e2e

ROWS = 5_000


def respond_when_waiting(dag_id: str, task_id: str, option: str | None, seen: dict, timeout: float = 180.0) -> threading.Thread:
    """A human answering the Required Actions page: waits until the task is awaiting input, records
    what the database looked like meanwhile (``seen["check"]()``), then answers ``option`` the way
    the API server's HITL route does. ``option=None`` answers as the scheduler's timeout sweep does
    when the deadline passes (``dag.test`` has no scheduler): the task's defaults, no user,
    ``timedout``."""

    def answer():
        from airflow._shared.timezones import timezone
        from airflow.models.hitl import HITLDetail, HITLUser
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with create_session() as session:
                ti = session.scalar(select(TI).where(TI.dag_id == dag_id, TI.task_id == task_id,
                                                     TI.state == TaskInstanceState.AWAITING_INPUT))
                if ti is not None:
                    time.sleep(1.0)  # the run really waits
                    seen["while_waiting"] = seen["check"]()
                    detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
                    detail.responded_by = HITLUser(id="dba", name="dba") if option else None
                    detail.responded_at = timezone.utcnow()
                    detail.chosen_options = [option] if option else list(detail.defaults)
                    detail.params_input = {}
                    handle_event_submit(TriggerEvent(detail.as_resume_event_payload(timedout=option is None)),
                                        task_instance=ti, session=session)
                    seen["answered"] = option
                    return
            time.sleep(0.5)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    return t


def snapshot(env):
    flags = env.sql("SELECT flag, value FROM zdt_routing_flags") if _has_table(env, "zdt_routing_flags") else []
    return {"state": env.scalar("SELECT state FROM zdt_backfill_runs"), "flags": sorted(flags),
            "target_rows": env.scalar("SELECT count(*) FROM users_new"), "legacy": source_fingerprint(env)}


def _has_table(env, name):
    q = "SELECT count(*) FROM information_schema.tables WHERE table_name = %s"
    return env.scalar(q + (" AND table_schema = database()" if env.engine == "mysql" else ""), (name,)) > 0


@pytest.mark.parametrize("answer, dag_state, final", [("contract", "success", "contracted"), ("hold", "failed", "halted")])
def test_required_approval_waits_changing_nothing_then_does_what_the_human_chose(
    env, backfill_dag, monkeypatch, answer, dag_state, final
):
    seed_users(env, ROWS)
    before = source_fingerprint(env)
    seen = {"check": lambda: snapshot(env)}
    human = respond_when_waiting("zero_downtime_backfill", "approval.review", answer, seen)
    conf = users_conf(env, approval="required", batch_size=1_000)
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    human.join(5)
    waiting = seen["while_waiting"]
    assert waiting["state"] == "awaiting_approval" and waiting["flags"] == []  # nothing flipped ...
    assert waiting["target_rows"] == ROWS and waiting["legacy"] == before  # ... or destroyed
    assert seen["answered"] == answer
    assert str(dr.state) == dag_state, states
    assert report["state"] == final and report["approvals"][-1]["user"] == "dba"
    assert report["approvals"][-1]["option"] == answer
    assert source_fingerprint(env) == before
    if answer == "contract":
        assert projection_diff(env) == 0
        assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "new"
    else:
        assert env.scalar("SELECT count(*) FROM users_new") == ROWS and not _has_table(env, "zdt_routing_flags")
        assert "held by dba" in report["reason"]


def test_a_dual_write_refusal_ends_the_run_failed_and_keeps_nothing_running(env, backfill_dag, monkeypatch):
    seed_users(env, 100)  # every row last written two days ago: nothing proves dual-write
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, users_conf(env, dual_write="check"))
    assert str(dr.state) == "failed", states
    assert states["dual_write.confirm"] == "failed" and states["report.write_report"] == "failed"
    assert report["state"] == "halted" and "cannot confirm dual-write" in report["reason"]
    # The report is stored in the target database, reachable from any worker, and tells the truth.
    stored = json.loads(env.scalar("SELECT report_json FROM zdt_backfill_reports WHERE run_id = %s", (dr.run_id,)))
    md = env.scalar("SELECT report_md FROM zdt_backfill_reports WHERE run_id = %s", (dr.run_id,))
    assert stored["state"] == "halted" and stored["validation"] is None and stored["rows_per_second"] is None
    assert "validation: not run" in md and "effective rate: n/a (no rows written)" in md
    assert env.scalar("SELECT count(*) FROM users_new") == 0
    assert env.scalar("SELECT lease_expires_at FROM zdt_backfill_runs") is None  # the lock is released


def test_the_ramp_flips_reads_back_and_halts_when_the_5xx_rate_is_over_the_limit(env, backfill_dag, monkeypatch):
    seed_users(env, 1_000)
    env.sql("CREATE TABLE app_http_stats (total int, errors_5xx int)")
    env.sql("INSERT INTO app_http_stats VALUES (1000, 5)")  # 0.5 % > 0.1 %
    conf = users_conf(env, error_signal_sql="SELECT 100.0 * errors_5xx / total FROM app_http_stats")
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    assert str(dr.state) == "failed", states
    assert states["contract.flip_routing"] == "failed" and states["contract.finish"] != "success"
    assert report["state"] == "halted" and "5xx rate" in report["reason"]
    assert env.scalar("SELECT value FROM zdt_routing_flags WHERE flag = 'users_new_read_path'") == "legacy"
    assert env.scalar("SELECT count(*) FROM users_new") == 1_000  # the copy is kept for the next try


def test_legacy_rename_runs_after_the_soak_with_its_ddl_recorded(env, backfill_dag, monkeypatch):
    seed_users(env, 1_000)
    conf = users_conf(env, legacy_action="rename", soak_minutes=0.05)  # a 3 s soak, waited in the triggerer
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    assert str(dr.state) == "success", states
    assert report["state"] == "contracted"
    stored = json.loads(env.scalar("SELECT report_json FROM zdt_backfill_reports WHERE run_id = %s", (dr.run_id,)))
    assert stored["rows_written"] == 1_000 and stored["tries"] == stored["partitions"] >= 1
    assert stored["crashes"] == 0 and 0 < stored["copy_seconds"] <= stored["wall_seconds"]
    assert _has_table(env, "users_legacy_zdt_archived") and not _has_table(env, "users_legacy")
    renames = [d for d in report["destructive"] if d["step"] == "rename"]
    assert len(renames) == 1 and "RENAME TO" in renames[0]["sql"]
    post = report["windows"]["post_backfill"]["start"]
    assert renames[0]["at"] >= post  # after the application wrote the new schema only, and the soak


def test_a_pause_through_the_airflow_variable_holds_the_copy_until_resumed(env, backfill_dag, monkeypatch):
    import json
    import os

    seed_users(env, 20_000)
    var = "AIRFLOW_VAR_ZDT_BACKFILL_CONTROL"  # Variable.get reads the environment before the metadata DB
    monkeypatch.setenv(var, json.dumps({"users_new": {"pause": True}}))
    resumed = {}

    def resume():
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # a partition is running: the run is copying, and paused
                # count(*) always returns a row: the table exists a moment before pre-flight inserts the run's row
                if _has_table(env, "zdt_backfill_runs") and env.scalar(
                        "SELECT count(*) FROM zdt_backfill_runs WHERE state = 'copying'") == 1:
                    break
                time.sleep(0.2)
            time.sleep(3.0)
            resumed["target_rows"] = env.scalar("SELECT count(*) FROM users_new")
        except Exception as exc:  # never leave the run paused: a pause has no deadline
            resumed["error"] = repr(exc)
        finally:
            os.environ[var] = json.dumps({"users_new": {"pause": False}})

    t = threading.Thread(target=resume, daemon=True)
    t.start()
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, users_conf(env, batch_size=2_000))
    t.join()
    assert str(dr.state) == "success", states
    assert "error" not in resumed, resumed
    assert resumed["target_rows"] == 0  # nothing was copied while paused
    assert report["throttled_by_reason"].get("paused", 0) >= 2.0, report["throttled_by_reason"]
    assert projection_diff(env) == 0


def test_a_dry_run_writes_nothing_and_ends_success(env, backfill_dag, monkeypatch):
    seed_users(env, 3_000)
    before = source_fingerprint(env)
    dr, states, _ = run_dag(backfill_dag, env, monkeypatch, users_conf(env, dry_run=True, batch_size=1_000))
    assert str(dr.state) == "success", states  # a dry run ends success: planned, nothing else
    assert states["preflight.check"] == "skipped" and states["backfill.copy_partition"] == "skipped"
    assert states["replica_catchup.wait_for_replicas"] == "skipped" and states["contract.finish"] == "skipped"
    assert not _has_table(env, "zdt_backfill_runs") and not _has_table(env, "zdt_heartbeat")
    assert env.scalar("SELECT count(*) FROM users_new") == 0 and source_fingerprint(env) == before


@pytest.mark.parametrize("answer", ["Reject", "timeout"])
def test_a_rejected_or_timed_out_drop_keeps_legacy_and_the_run_ends_contracted(env, backfill_dag, monkeypatch, answer):
    """Issue 22: a reject (or nobody answering in time) at the legacy drop's own approval keeps the
    legacy table, records the human's choice, and the run ends contracted with the DagRun green."""
    if answer == "timeout" and env.engine != "postgres":
        pytest.skip("the timeout path is engine-independent; one engine keeps the suite short")
    seed_users(env, 1_000)
    before = source_fingerprint(env)
    review = respond_when_waiting("zero_downtime_backfill", "approval.review", "contract", {"check": lambda: None})
    seen = {"check": lambda: snapshot(env)}
    drop = respond_when_waiting("zero_downtime_backfill", "contract.approve_drop",
                                "Reject" if answer == "Reject" else None, seen)
    conf = users_conf(env, approval="required", legacy_action="drop", soak_minutes=0.02)
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    review.join(5)
    drop.join(5)
    assert seen["while_waiting"]["state"] == "soaking"  # past the one-way door, waiting for a human
    assert str(dr.state) == "success", states
    assert states["contract.legacy_action"] == "success" and states["contract.finish"] == "success"
    assert report["state"] == "contracted"
    assert _has_table(env, "users_legacy") and source_fingerprint(env) == before  # legacy intact
    assert not [d for d in report["destructive"] if d["step"] in ("drop", "rename")]
    kept = report["legacy_kept"]
    assert kept == ("legacy drop rejected by dba" if answer == "Reject"
                    else "legacy drop: the approval timed out (no answer means no drop)"), kept
    md = env.scalar("SELECT report_md FROM zdt_backfill_reports WHERE run_id = %s", (dr.run_id,))
    assert "legacy schema kept" in md
    drops = [a for a in report["approvals"] if a.get("what") == "drop"]
    assert drops and drops[-1]["option"] == "reject"
