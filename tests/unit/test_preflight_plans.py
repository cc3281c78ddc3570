"""Pre-flight's EXPLAIN verdicts on real-shaped plans (PostgreSQL JSON, MySQL tabular)."""

from zdt_backfill.lifecycle.preflight import _mysql_uses_index, _pg_uses_index

PG_INDEX = [{"Plan": {"Node Type": "ModifyTable", "Plans": [
    {"Node Type": "Index Scan", "Relation Name": "users_legacy", "Index Name": "users_legacy_pkey"}]}}]
PG_SEQ = [{"Plan": {"Node Type": "ModifyTable", "Plans": [
    {"Node Type": "Seq Scan", "Relation Name": "users_legacy"}]}}]
PG_BITMAP = [{"Plan": {"Node Type": "Bitmap Heap Scan", "Relation Name": "users_legacy", "Plans": [
    {"Node Type": "Bitmap Index Scan", "Index Name": "users_legacy_pkey"}]}}]


def test_postgres_index_scans_pass_and_sequential_scans_fail():
    assert _pg_uses_index(PG_INDEX, "users_legacy", "users_legacy_pkey")[0]
    assert _pg_uses_index(PG_BITMAP, "users_legacy", "users_legacy_pkey")[0]
    ok, detail = _pg_uses_index(PG_SEQ, "users_legacy", "users_legacy_pkey")
    assert not ok and "sequential scan" in detail
    assert not _pg_uses_index(PG_INDEX, "users_legacy", "some_other_index")[0]


def test_mysql_needs_a_range_read_on_the_key_index():
    assert _mysql_uses_index([{"table": "users_legacy", "type": "range", "key": "PRIMARY"}], "users_legacy", "PRIMARY")[0]
    ok, detail = _mysql_uses_index([{"table": "users_legacy", "type": "ALL", "key": None}], "users_legacy", "PRIMARY")
    assert not ok and "type=ALL" in detail
    assert not _mysql_uses_index([{"table": "other", "type": "range", "key": "PRIMARY"}], "users_legacy", "PRIMARY")[0]
