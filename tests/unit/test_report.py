"""The run report: stable keys, throughput from the backfill span, readable outcomes, files written."""

import json

from zdt_backfill.checkpoint import PartitionProgress
from zdt_backfill.report import summarize, to_markdown, write

PARTS = [
    PartitionProgress(0, 1, 500, 500, rows_written=480, keys_scanned=500, batches=5, retries=1, seconds=2.0),
    PartitionProgress(1, 501, 1000, 1000, rows_written=500, keys_scanned=500, batches=5, retries=0, seconds=2.5),
]


def make(outcome, decision=None):
    return summarize(
        config={"run_id": "manual__2026-01-01T00:00:00+00:00", "mode": "copy", "source_table": "a", "target_table": "b",
                "profile": "prod"},
        plan={"engine": "postgres", "checks": []}, partitions=PARTS, dual_write={"mode": "assumed", "detail": "x"},
        validation={"mismatched": 0, "match_pct": 100.0, "source_rows": 1000, "target_rows": 1000},
        decision=decision or {"branch": "contract", "reasons": ["ok"]}, outcome=outcome, wall_seconds=9.0,
        throttled={"rate": 1.25}, max_lag_seconds=0.4, backfill_seconds=4.0,
    )


def test_totals_and_throughput():
    r = make({"state": "contracted"})
    assert (r["rows_written"], r["keys_scanned"], r["batches"], r["retries"]) == (980, 1000, 10, 1)
    assert r["rows_per_second"] == 250.0  # 1,000 keys over the 4.0 s backfill span
    for key in ("run_id", "branch", "checksum", "throttled_seconds", "max_replica_lag_seconds", "partition_detail",
                "dual_write", "wall_seconds", "outcome", "config"):
        assert key in r


def test_markdown_says_what_happened():
    contracted = make({"state": "contracted", "contract": {
        "flip_routing": {"flag": "b_read_path", "to": "new"}, "drop_legacy": {"dropped": []},
        "reclaim_storage": {"statement": 'VACUUM (ANALYZE) "b"'}}})
    md = to_markdown(contracted)
    assert "branch taken: **contract**" in md and "checksum: MATCH" in md
    assert "routing flag b_read_path -> new; legacy schema kept; VACUUM (ANALYZE)" in md
    rolled = make({"state": "rolled_back", "rollback": {
        "flip_routing": {"flag": "b_read_path", "to": "legacy"}, "empty_target": {"statement": "TRUNCATE TABLE b"},
        "reset_sequences": {"sequences": []}, "clear_caches": {"cleared": 3}}},
        decision={"branch": "rollback", "reasons": ["checksum match 99.5% < 99.99%"]})
    md = to_markdown(rolled)
    assert "**rollback** (checksum match 99.5% < 99.99%)" in md
    assert "rolled back: routing flag b_read_path -> legacy; TRUNCATE TABLE b" in md and "cleared: 3" in md


def test_write_uses_a_filesystem_safe_folder(tmp_path):
    out = write(make({"state": "failed", "hint": "clear the failed partitions"}), tmp_path)
    assert out.name == "manual__2026-01-01T00_00_00_00_00"
    assert json.loads((out / "report.json").read_text())["outcome"]["state"] == "failed"
    assert "failed: clear the failed partitions" in (out / "report.md").read_text()
