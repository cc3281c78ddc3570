"""The run report's Markdown and files (the report itself is built from the state tables; see
tests/integration/test_run_control.py)."""

import json

from zdt_backfill.report import to_markdown, write

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
