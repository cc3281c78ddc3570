"""The dry run's pure parts on EXPLAIN JSON captured from the test servers (PostgreSQL 15,
MariaDB 10.11; see ``ZDT_CAPTURE_EXPLAIN`` in tests/integration/test_dry_run.py) and on a
MySQL 8 document of the documented shape: full-scan flagging, access summary, cost, the
statement without ``FORCE INDEX``, and the duration estimate."""

from __future__ import annotations

import json

import pytest

from zdt_backfill.dialects import dialect_for
from zdt_backfill.lifecycle import dryrun


def flag_full_scan(engine: str, plan, table: str) -> bool:
    return bool(dialect_for(engine).full_scans(plan, table))


def _pg(scan: dict, cost: float) -> list:
    return [{"Plan": {"Node Type": "ModifyTable", "Operation": "Insert", "Relation Name": "users_new",
                      "Total Cost": cost, "Conflict Arbiter Indexes": ["users_new_pkey"], "Plans": [
                          {"Node Type": "Subquery Scan", "Alias": "*SELECT*", "Total Cost": cost, "Plans": [
                              {"Node Type": "LockRows", "Total Cost": cost - 1, "Plans": [scan]}]}]}}]


PG_RANGE = _pg({"Node Type": "Index Scan", "Scan Direction": "Forward", "Index Name": "users_legacy_pkey",
                "Relation Name": "users_legacy", "Alias": "users_legacy", "Total Cost": 12.03, "Plan Rows": 100,
                "Index Cond": "((id > '0'::smallint) AND (id <= '100'::smallint))"}, 14.03)
PG_FULL = _pg({"Node Type": "Seq Scan", "Relation Name": "users_legacy", "Alias": "users_legacy",
               "Total Cost": 79.0, "Plan Rows": 2000,
               "Filter": "((id > '0'::smallint) AND (id <= '2000'::smallint))"}, 119.0)
MARIADB_RANGE = {"query_block": {"select_id": 1, "nested_loop": [{"table": {
    "table_name": "users_legacy", "access_type": "range", "possible_keys": ["PRIMARY"], "key": "PRIMARY",
    "key_length": "8", "used_key_parts": ["id"], "rows": 100, "filtered": 100,
    "attached_condition": "users_legacy.`id` > 0 and users_legacy.`id` <= 100"}}]}}
MARIADB_FULL = {"query_block": {"select_id": 1, "nested_loop": [{"table": {
    "table_name": "users_legacy", "access_type": "ALL", "rows": 2000, "filtered": 100,
    "attached_condition": "users_legacy.`id` > 0 and users_legacy.`id` <= 2000"}}]}}
MYSQL8_FULL = {"query_block": {"select_id": 1, "cost_info": {"query_cost": "205.25"}, "table": {
    "table_name": "users_legacy", "access_type": "ALL", "rows_examined_per_scan": 2000,
    "filtered": "11.11", "cost_info": {"read_cost": "183.03", "eval_cost": "22.22"}}}}


@pytest.mark.parametrize(
    "engine, doc, full",
    [("postgres", PG_RANGE, False), ("postgres", PG_FULL, True), ("mysql", MARIADB_RANGE, False),
     ("mysql", MARIADB_FULL, True), ("mysql", MYSQL8_FULL, True)],
)
def test_full_scan_flag(engine, doc, full):
    assert flag_full_scan(engine, doc, "users_legacy") is full
    assert flag_full_scan(engine, json.loads(json.dumps(doc)), "other_table") is False


def test_only_the_source_counts():
    # a Seq Scan of another relation (the target, a lookup) is not a full scan of the source
    other = _pg({"Node Type": "Seq Scan", "Relation Name": "users_new", "Total Cost": 5.0}, 6.0)
    assert dialect_for("postgres").full_scans(other, "users_legacy") == []
    assert len(dialect_for("postgres").full_scans(PG_FULL, "users_legacy")) == 1
    assert len(dialect_for("mysql").full_scans(MARIADB_FULL, "users_legacy")) == 1


def test_access_summary():
    assert dialect_for("postgres").access_summary(PG_RANGE, "users_legacy") == "Index Scan using users_legacy_pkey"
    assert dialect_for("postgres").access_summary(PG_FULL, "users_legacy") == "Seq Scan"
    assert dialect_for("mysql").access_summary(MARIADB_RANGE, "users_legacy") == "access_type=range key=PRIMARY"
    assert dialect_for("mysql").access_summary(MARIADB_FULL, "users_legacy") == "access_type=ALL key=None"
    assert "no access" in dialect_for("mysql").access_summary(MARIADB_FULL, "nope")


def test_explain_cost():
    assert dialect_for("postgres").plan_cost(PG_RANGE) == 14.03
    assert dialect_for("mysql").plan_cost(MYSQL8_FULL) == 205.25
    assert dialect_for("mysql").plan_cost(MARIADB_RANGE) is None  # MariaDB 10.x reports no cost
    assert dialect_for("postgres").plan_cost({}) is None


def test_without_force_index_is_the_unhinted_batch():
    d = dialect_for("mysql")
    stmt = d.copy_batch_sql("users_legacy", "users_new", "id", {"data_hash": "md5(legacy_data)"}, None, "uk_id")
    assert "FORCE INDEX (`uk_id`)" in stmt
    bare = dialect_for("mysql").without_index_hint(stmt)
    assert "FORCE INDEX" not in bare
    assert bare == stmt.replace(" FORCE INDEX (`uk_id`)", "")
    assert dialect_for("mysql").without_index_hint(bare) == bare


def test_estimate_at_the_profile_rate():
    est = dryrun.estimate_duration(1_000_000, 1_000, 500.0, 14.03)
    assert est["seconds"] == 2000.0 and est["batches_estimate"] == 1000
    assert est["text"] == "~33.3 min at 500 rows/s"
    assert est["explain_cost_total"] == pytest.approx(14030.0)


def test_estimate_unthrottled_gives_only_the_cost():
    est = dryrun.estimate_duration(2_500, 1_000, None, 10.0)
    assert est["seconds"] is None and est["rate"] == "unthrottled"
    assert est["batches_estimate"] == 3 and est["explain_cost_total"] == 30.0
    assert dryrun.estimate_duration(0, 1_000, None, None)["batches_estimate"] == 0
