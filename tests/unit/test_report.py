"""The run report: built from crafted run-state and checkpoint rows (:func:`from_rows`), its
Markdown, summary line and files (the database side: tests/integration/test_run_control.py and
tests/e2e/test_run_control_dag.py)."""

import json
from datetime import datetime, timedelta, timezone

from zdt_backfill.report import from_rows, summary, to_markdown, write
from zdt_backfill.state.checkpoint import PartitionProgress
from zdt_backfill.state.runstate import Event

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONFIG = {"run_id": "r1", "mode": "copy", "source_table": "a", "target_table": "b", "profile": "prod"}
ENDED = {"state": "contracted", "reason": "contract complete", "success": True}


def ev(n, at_s, kind, **detail):
    return Event(n, "r1", T0 + timedelta(seconds=at_s), kind, None, None, f"{kind} {n}", detail)


def part(no, rows, keys=None, **kw):
    return PartitionProgress(no, no * 1000 + 1, (no + 1) * 1000, (no + 1) * 1000, rows_written=rows,
                             keys_scanned=keys if keys is not None else rows, batches=max(1, rows // 100),
                             status="done", **kw)


def crashed_run_events():
    """p0: an attempt whose worker died (no end), then a resumed attempt that finished; p1: one clean attempt."""
    return [
        ev(1, 0, "transition"),
        ev(2, 1, "attempt", partition=0, phase="copy", watermark=0, resumed=False),
        ev(3, 1, "attempt", partition=1, phase="copy", watermark=1000, resumed=False),
        ev(4, 30, "attempt_end", partition=1, phase="copy", outcome="done"),
        ev(5, 40, "attempt", partition=0, phase="copy", watermark=450, resumed=True),
        ev(6, 70, "attempt_end", partition=0, phase="copy", outcome="done"),
        ev(7, 70, "throttle", partition=0, seconds={"rate": 12.5, "replica_lag": 2.0}),
        ev(8, 71, "throttle", partition=1, seconds={"rate": 3.25}),
        ev(9, 90, "validation", mismatched=0, source_rows=2000, target_rows=2000, missing=0, different=0,
           extra=0, seconds=4.5),
        ev(10, 100, "transition"),
    ]

REPORT = {
    "run_id": "manual__2026-01-01T00:00:00+00:00", "engine": "postgres", "mode": "copy", "source_table": "a",
    "target_table": "b", "profile": "prod", "state": "rolled_back", "reason": "rollback complete", "success": False,
    "decision": {"decision": {"branch": "rollback", "reasons": ["error rate 0.5000% > 0.01%"]}},
    "rows_written": 980, "keys_scanned": 1000, "batches": 10, "yields": 3, "data_errors": 0, "partitions": 2,
    "backfill_seconds": 4.0, "rows_per_second": 250.0, "throttled_seconds": 1.25,
    "validation": {"mismatched": 5, "source_rows": 1000, "target_rows": 1000, "missing": 0, "different": 5,
                   "extra": 0, "sample_keys": {"different": [1, 2]}, "after_repair": True},
    "approvals": [{"what": "decision", "option": "roll back", "user": "admin"}],
    "transitions": [{"to": "planned"}, {"to": "copying"}, {"to": "rolling_back"}, {"to": "rolled_back"}],
    "destructive": [{"step": "truncate", "at": "2026-01-01T00:00:01", "sql": 'TRUNCATE TABLE "b"', "reason": "r"}],
    "windows": {"pre_backfill": {"start": "t0", "end": "t1"}},
}


def test_markdown_says_how_the_run_ended_and_every_destructive_step():
    md = to_markdown(REPORT)
    assert "ended: **rolled_back** (rollback complete) - the Airflow run is marked failed" in md
    assert "decision: rollback (error rate 0.5000% > 0.01%)" in md
    assert "transient yields (retried, not errors): 3; data errors: 0" in md
    assert "validation: MISMATCH" in md and "(after repair)" in md
    assert "approval (decision): roll back by admin" in md
    assert "states: planned -> copying -> rolling_back -> rolled_back" in md
    assert 'destructive [truncate] at 2026-01-01T00:00:01: `TRUNCATE TABLE "b"`' in md
    assert "window pre_backfill: t0 -> t1" in md


def test_a_run_without_validation_says_not_run():
    md = to_markdown({**REPORT, "validation": None, "decision": None})
    assert "validation: not run" in md and "decision: none (no decision taken)" in md


def test_write_uses_a_filesystem_safe_folder(tmp_path):
    out = write(REPORT, tmp_path)
    assert out.name == "manual__2026-01-01T00_00_00_00_00"
    assert json.loads((out / "report.json").read_text())["state"] == "rolled_back"
    assert "rolled_back" in (out / "report.md").read_text()


def test_a_crashed_attempt_and_its_resume_are_reported():
    r = from_rows(CONFIG, "postgres", crashed_run_events(), [part(0, 1000), part(1, 1000)], 69.0, ENDED)
    assert (r["tries"], r["crashes"], r["resumes"], r["failed_attempts"]) == (3, 1, 1, 0)
    p0, p1 = r["partition_detail"]
    assert (p0["tries"], p0["crashes"], p0["resumes"]) == (2, 1, 1)
    assert (p1["tries"], p1["crashes"], p1["resumes"]) == (1, 0, 0)
    assert r["throttled_by_reason"] == {"rate": 15.75, "replica_lag": 2.0}
    md = to_markdown(r)
    assert "partition attempts: 3; crashed (worker died, no end recorded): 1; failed: 0; resumed from a checkpoint: 1" in md
    assert "throttled: 0.0 s summed over partitions (rate ceiling 15.8 s, replica_lag 2.0 s)" in md
    assert "| p0 | 1..1000 | 1,000 | 1,000 | 10 | 2 | 1 | 1 |" in md
    assert "1 crashed attempt(s) resumed" in summary(r)


def test_an_attempt_still_open_at_report_time_crashed():
    events = [ev(1, 0, "attempt", partition=0, phase="copy", resumed=False), ev(2, 5, "transition")]
    assert from_rows(CONFIG, "postgres", events, [part(0, 10)], 5.0, ENDED)["crashes"] == 1


def test_rate_is_rows_written_over_the_copy_wall_time_and_never_longer_than_the_run():
    # The checkpoint span (adopted rows, clock skew) may exceed the run's events: it is clipped.
    r = from_rows(CONFIG, "postgres", crashed_run_events(), [part(0, 1000), part(1, 1000)], 153.0, ENDED)
    assert r["wall_seconds"] == 100.0 and r["copy_seconds"] == 100.0 <= r["wall_seconds"]
    assert r["rows_per_second"] == 20.0
    r = from_rows(CONFIG, "postgres", crashed_run_events(), [part(0, 1000), part(1, 1000)], 50.0, ENDED)
    assert r["copy_seconds"] == 50.0 and r["rows_per_second"] == 40.0
    assert r["validation_seconds"] == 4.5


def test_zero_rows_written_gives_no_rate_even_with_keys_scanned():
    r = from_rows(CONFIG, "postgres", crashed_run_events(), [part(0, 0, keys=5000)], 10.0, ENDED)
    assert r["rows_per_second"] is None
    md = to_markdown(r)
    assert "effective rate: n/a (no rows written)" in md and "rows/s" not in summary(r)


def test_no_checksum_means_validation_not_run_in_report_markdown_and_summary():
    events = [e for e in crashed_run_events() if e.kind != "validation"]
    r = from_rows(CONFIG, "postgres", events, [part(0, 10)], 5.0, {"state": "halted", "reason": "dual-write refused"})
    assert r["validation"] is None and r["validation_seconds"] == 0
    md = to_markdown(r)
    assert "validation: not run" in md and "MISMATCH" not in md and "None%" not in md
    assert summary(r) == "halted: dual-write refused; 10 rows written at 2.0 rows/s, 1 crashed attempt(s) resumed; validation not run"


def test_the_validation_checklist_is_rendered_when_present():
    v = {"mismatched": 0, "source_rows": 3, "target_rows": 3, "missing": 0, "different": 0, "extra": 0,
         "checklist": [{"name": "row counts", "status": "pass", "detail": "3 = 3"},
                       {"name": "null keys", "status": "fail", "detail": "1 NULL"}]}
    md = to_markdown({**REPORT, "validation": v})
    assert "  - [x] row counts - pass: 3 = 3" in md and "  - [ ] null keys - fail: 1 NULL" in md


def test_a_takeover_of_a_dead_run_is_reported_with_its_adopted_checkpoints():
    events = [ev(1, 0, "lock", mode="takeover", previous_run="old", previous_state="copying",
                 adopted_partitions=[{"partition_no": 0}, {"partition_no": 1}]),
              ev(2, 1, "attempt", partition=0, phase="copy", resumed=True),
              ev(3, 2, "attempt_end", partition=0, phase="copy", outcome="done")]
    r = from_rows(CONFIG, "postgres", events, [part(0, 10)], 1.0, ENDED)
    assert r["takeover"] == {"previous_run": "old", "previous_state": "copying", "adopted_partitions": 2}
    assert r["resumes"] == 1 and r["crashes"] == 0
    assert "took over run `old` (stopped in copying, its lease expired or released) and resumed its 2" in to_markdown(r)
    assert from_rows(CONFIG, "postgres", crashed_run_events(), [], 0.0, ENDED)["takeover"] is None


def test_a_sampled_validation_states_its_size_confidence_method_and_where_it_read():
    v = {"mismatched": 0, "source_rows": 69_000, "target_rows": 69_000, "missing": 0, "different": 0, "extra": 0,
         "mode": "sampled", "source": "replica", "chunks_checked": 70, "subchunks_checked": 0, "chunk_rows_max": 1000,
         "cleared_by_recheck": 0,
         "sampling": {"sample_rows": 69_075, "confidence": 0.999, "detect_pct": 0.01,
                      "method": "70 keyset chunk(s) of 1000 source rows from keys drawn uniformly"}}
    md = to_markdown({**REPORT, "validation": v})
    assert "sampled validation read on the replica in 70 chunk(s)" in md
    assert "sample: 69,075 rows for 99.9 % confidence of seeing a 0.01 % mismatch rate; 70 keyset chunk(s)" in md
