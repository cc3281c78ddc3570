"""Pre-flight's EXPLAIN verdicts on real-shaped JSON plans (PostgreSQL ``EXPLAIN (FORMAT JSON)``,
MySQL/MariaDB ``EXPLAIN FORMAT=JSON``), read by the dialects' explain role."""

from zdt_backfill.dialects import MySQLDialect, PostgresDialect

PG_INDEX = [{"Plan": {"Node Type": "ModifyTable", "Plans": [
    {"Node Type": "Index Scan", "Relation Name": "users_legacy", "Index Name": "users_legacy_pkey"}]}}]
PG_SEQ = [{"Plan": {"Node Type": "ModifyTable", "Plans": [
    {"Node Type": "Seq Scan", "Relation Name": "users_legacy"}]}}]
PG_BITMAP = [{"Plan": {"Node Type": "Bitmap Heap Scan", "Relation Name": "users_legacy", "Plans": [
    {"Node Type": "Bitmap Index Scan", "Index Name": "users_legacy_pkey"}]}}]


def my_plan(table: str, access: str, key: str | None) -> dict:
    """The shape of MySQL's and MariaDB's JSON plan of an INSERT ... SELECT (the read side's table access)."""
    return {"query_block": {"select_id": 1, "table": {"insert": True, "table_name": "users_new", "access_type": "ALL"},
                            "nested_loop": [{"table": {"table_name": table, "access_type": access, "key": key}}]}}


def test_postgres_index_scans_pass_and_sequential_scans_fail():
    d = PostgresDialect()
    assert d.index_range_scan(PG_INDEX, "users_legacy", "users_legacy_pkey")[0]
    assert d.index_range_scan(PG_BITMAP, "users_legacy", "users_legacy_pkey")[0]
    ok, detail = d.index_range_scan(PG_SEQ, "users_legacy", "users_legacy_pkey")
    assert not ok and "sequential scan" in detail
    assert not d.index_range_scan(PG_INDEX, "users_legacy", "some_other_index")[0]


def test_mysql_needs_a_range_read_on_the_key_index():
    d = MySQLDialect()
    assert d.index_range_scan(my_plan("users_legacy", "range", "PRIMARY"), "users_legacy", "PRIMARY")[0]
    ok, detail = d.index_range_scan(my_plan("users_legacy", "ALL", None), "users_legacy", "PRIMARY")
    assert not ok and "type=ALL" in detail
    ok, detail = d.index_range_scan(my_plan("other", "range", "PRIMARY"), "users_legacy", "PRIMARY")
    assert not ok and "no access to users_legacy" in detail
