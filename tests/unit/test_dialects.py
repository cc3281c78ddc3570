"""SQL builders render the statements we expect: keyset ranges, quoting, no OFFSET."""

import pytest

from zdt_backfill.dialects import MySQLDialect, PostgresDialect, Range, dialect_for
from zdt_backfill.errors import UnsafeIdentifierError

PG, MY = PostgresDialect(), MySQLDialect()
COLS = {"email_normalized": "lower(trim(email))", "m": "id % 2"}


@pytest.mark.parametrize(
    "dialect, expected",
    [
        (PG, 'INSERT INTO "users_new" ("id", "email_normalized", "m") SELECT "id", (lower(trim(email))), (id %% 2)'
             ' FROM "users_legacy" WHERE "id" > %s AND "id" <= %s FOR SHARE ON CONFLICT ("id") DO NOTHING'),
        (MY, "INSERT INTO `users_new` (`id`, `email_normalized`, `m`) SELECT `id`, (lower(trim(email))), (id %% 2)"
             " FROM `users_legacy` FORCE INDEX (PRIMARY) WHERE `id` > %s AND `id` <= %s LOCK IN SHARE MODE"
             " ON DUPLICATE KEY UPDATE `id` = `users_new`.`id`"),
    ],
)
def test_copy_batch_is_one_insert_select_with_insert_if_absent(dialect, expected):
    assert dialect.copy_batch_sql("users_legacy", "users_new", "id", COLS) == expected


def test_mysql_never_uses_insert_ignore():
    assert "IGNORE" not in MY.copy_batch_sql("a", "b", "id", COLS).upper()


def test_mysql_forces_the_named_key_index():
    sql = MY.copy_batch_sql("a", "b", "id", COLS, key_index="ix_id")
    assert "FORCE INDEX (`ix_id`)" in sql


@pytest.mark.parametrize("dialect, q", [(PG, '"'), (MY, "`")])
def test_fill_batch_updates_only_rows_still_null(dialect, q):
    sql = dialect.fill_batch_sql("t", "id", {"a": "x + 1", "b": "y"})
    assert sql == (
        f"UPDATE {q}t{q} SET {q}a{q} = (x + 1), {q}b{q} = (y) WHERE {q}id{q} > %s AND {q}id{q} <= %s"
        f" AND {q}a{q} IS NULL AND {q}b{q} IS NULL"
    )


@pytest.mark.parametrize("dialect", [PG, MY])
def test_chunk_end_is_a_keyset_read_never_offset(dialect):
    sql = dialect.chunk_end_sql("t", "id")
    assert "OFFSET" not in sql.upper()
    assert "ORDER BY" in sql and "LIMIT %s" in sql and "> %s" in sql


def test_schema_qualified_names_are_quoted():
    assert PG.table("users", "app") == '"app"."users"'
    assert MY.table("users", "app") == "`app`.`users`"


@pytest.mark.parametrize("bad", ['users"; DROP TABLE x; --', "users`", "a b", "", "usеrs", "1abc", "x" * 64])
def test_unsafe_identifiers_are_refused_before_quoting(bad):
    with pytest.raises(UnsafeIdentifierError):
        PG.quote(bad)
    with pytest.raises(UnsafeIdentifierError):
        MY.table(bad)


def test_range_predicate_with_open_ends():
    assert PG.range_predicate("id", Range(None, None)) == ("1 = 1", ())
    assert PG.range_predicate("id", Range(5, None)) == ('"id" > %s', (5,))
    assert PG.range_predicate("id", Range(None, 9), alias="t") == ('t."id" <= %s', (9,))


@pytest.mark.parametrize("dialect", [PG, MY])
def test_checksum_reads_both_sides_in_one_statement(dialect):
    sql, params = dialect.checksum_sql("s", "t", "id", {"c": "x"}, Range(10, 20))
    assert sql.count("SELECT") == 5 and "CROSS JOIN" in sql
    assert params == (10, 20, 10, 20)


def test_diff_kinds_in_copy_and_fill_mode():
    copy_sql, _ = PG.diff_sql("s", "t", "id", {"c": "x"}, Range(None, None))
    assert "'missing'" in copy_sql and "'extra'" in copy_sql and "IS NOT DISTINCT FROM" in copy_sql
    fill_sql, _ = MY.diff_sql("s", "s", "id", {"c": "x"}, Range(None, None), copy_mode=False)
    assert "'extra'" not in fill_sql and "<=>" in fill_sql and "AS binary" in fill_sql


def test_dialect_for_rejects_unknown_engines():
    assert dialect_for("postgresql").name == "postgres"
    assert dialect_for("mariadb").name == "mysql"
    with pytest.raises(ValueError):
        dialect_for("oracle")


@pytest.mark.parametrize("dialect", [PG, MY])
def test_row_encoding_is_length_prefixed_so_values_cannot_shift(dialect):
    h = dialect.row_hash(["a", "b"])
    assert "':'" in h and "'N'" in h and "concat_ws" not in h


def test_postgres_expected_values_are_cast_to_the_target_column_type():
    sql, _ = PG.checksum_sql("s", "t", "id", {"c": "x * 100"}, Range(None, None), casts={"c": "bigint"})
    assert "CAST((x * 100) AS bigint)" in sql
    diff, _ = PG.diff_sql("s", "t", "id", {"c": "x"}, Range(None, None), casts={"c": "numeric(10,2)"})
    assert "CAST((x) AS numeric(10,2))" in diff and 'COLLATE "C"' in diff
