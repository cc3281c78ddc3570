"""SQL builders render the statements we expect: keyset ranges, quoting, no OFFSET, typed encodings."""

import re

import pytest

from zdt_backfill.dialects import ColumnType, MariaDBDialect, MySQLDialect, PostgresDialect, Range, dialect_for
from zdt_backfill.errors import UnsafeIdentifierError

PG, MY, MARIA = PostgresDialect(), MySQLDialect(), MariaDBDialect()
COLS = {"email_normalized": "lower(trim(email))", "m": "id % 2"}


@pytest.mark.parametrize(
    "dialect, expected",
    [
        (PG, 'INSERT INTO "users_new" ("id", "email_normalized", "m") SELECT "id", (lower(trim(email))), (id %% 2)'
             ' FROM "users_legacy" WHERE "id" > %s AND "id" <= %s FOR SHARE ON CONFLICT ("id") DO NOTHING'),
        (MY, "INSERT INTO `users_new` (`id`, `email_normalized`, `m`) SELECT `id`, (lower(trim(email))), (id %% 2)"
             " FROM `users_legacy` FORCE INDEX (PRIMARY) WHERE `id` > %s AND `id` <= %s FOR SHARE NOWAIT"
             " ON DUPLICATE KEY UPDATE `id` = `users_new`.`id`"),
        (MARIA, "INSERT INTO `users_new` (`id`, `email_normalized`, `m`) SELECT `id`, (lower(trim(email))), (id %% 2)"
                " FROM `users_legacy` FORCE INDEX (PRIMARY) WHERE `id` > %s AND `id` <= %s LOCK IN SHARE MODE NOWAIT"
                " ON DUPLICATE KEY UPDATE `id` = `users_new`.`id`"),
    ],
    ids=["postgres", "mysql", "mariadb"],
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
    assert "'extra'" not in fill_sql and "<=>" in fill_sql and "AS BINARY" in fill_sql


def test_dialect_for_rejects_unknown_engines():
    assert dialect_for("postgresql").name == "postgres"
    assert dialect_for("mariadb").name == "mysql"
    with pytest.raises(ValueError):
        dialect_for("oracle")


@pytest.mark.parametrize("dialect", [PG, MY])
def test_row_encoding_is_hex_fields_so_values_cannot_shift(dialect):
    h = dialect.row_hash(["a", "b"])
    assert "':'" in h and "'N'" in h and "concat_ws" not in h
    # every field hex (no ':' or 'N' inside one), each expression evaluated once
    assert len(re.findall(r"\ba\b", h)) == 1 and len(re.findall(r"\bb\b", h)) == 1


def test_postgres_expected_values_are_cast_to_the_target_column_type():
    sql, _ = PG.checksum_sql("s", "t", "id", {"c": "x * 100"}, Range(None, None), casts={"c": "bigint"})
    assert "CAST((x * 100) AS bigint)" in sql
    diff, _ = PG.diff_sql("s", "t", "id", {"c": "x"}, Range(None, None), casts={"c": "numeric(10,2)"})
    assert "CAST((x) AS numeric(10,2))" in diff and 'COLLATE "C"' in diff


# ---------------------------------------------------------------------- typed, binary-safe encodings
def test_postgres_column_types_from_the_catalog():
    assert PG.column_type("character varying(255)", "varchar", "S") == ColumnType(
        "character varying(255)", "character varying", "text")  # an explicit cast never truncates
    assert PG.column_type("character(4)", "bpchar", "S").cast == "bpchar"
    assert PG.column_type("character varying(5)[]", "_varchar", "A") == ColumnType(
        "character varying(5)[]", "character varying[]", "value")
    assert PG.column_type("numeric(16,0)", "numeric", "N") == ColumnType("numeric(16,0)", "numeric(16,0)", "value")
    assert PG.column_type("bytea", "bytea", "U").kind == "binary"
    assert PG.column_type("dom_email", "varchar", "S") == ColumnType("dom_email", "dom_email", "text")  # a domain
    assert PG.column_type("timestamp(3) with time zone", "timestamptz", "D").cast == "timestamp(3) with time zone"
    assert PG.parse_type("text").kind == "text" and PG.parse_type("bigint").kind == "value"


@pytest.mark.parametrize(
    "row, expected",
    [
        (("decimal", "decimal(16,0)", 16, 0, None, None, None), ColumnType("decimal(16,0)", "DECIMAL(16,0)", "value")),
        (("datetime", "datetime(6)", None, None, 6, None, None), ColumnType("datetime(6)", "DATETIME(6)", "value")),
        (("timestamp", "timestamp", None, None, 0, None, None), ColumnType("timestamp", "DATETIME(0)", "value")),
        (("time", "time(3)", None, None, 3, None, None), ColumnType("time(3)", "TIME(3)", "value")),
        (("bigint", "bigint(20) unsigned", 20, 0, None, None, None), ColumnType("bigint(20) unsigned", "DECIMAL(20,0)", "value")),
        (("double", "double", 22, None, None, None, None), ColumnType("double", "DOUBLE", "value")),
        (("varchar", "varchar(255)", None, None, None, "latin1", 255), ColumnType("varchar(255)", None, "text")),
        (("char", "char(32)", None, None, None, "utf8mb4", 32), ColumnType("char(32)", None, "char")),
        (("enum", "enum('a','b')", None, None, None, "utf8mb4", 1), ColumnType("enum('a','b')", None, "text")),
        (("varbinary", "varbinary(64)", None, None, None, None, 64), ColumnType("varbinary(64)", "BINARY", "binary")),
        (("binary", "binary(4)", None, None, None, None, 4), ColumnType("binary(4)", "BINARY(4)", "binary")),
        (("blob", "blob", None, None, None, None, 65535), ColumnType("blob", "BINARY", "binary")),
        (("json", "json", None, None, None, None, None), ColumnType("json", "JSON", "json")),
        (("bit", "bit(8)", 8, None, None, None, None), ColumnType("bit(8)", None, "bit")),
        ((b"decimal", b"decimal(5,2)", 5, 2, None, None, None), ColumnType("decimal(5,2)", "DECIMAL(5,2)", "value")),
    ],
)
def test_mysql_column_types_from_information_schema(row, expected):
    assert MY.column_type(*row) == expected


def test_mysql_type_names_parse_like_the_catalog():
    assert MY.parse_type("decimal(16,0)").cast == "DECIMAL(16,0)"
    assert MY.parse_type("DATETIME(6)").cast == "DATETIME(6)"
    assert MY.parse_type("varbinary(16)").kind == "binary"
    assert MY.parse_type("int unsigned").cast == "DECIMAL(20,0)"
    assert MY.parse_type("varchar(10)").kind == "text"


def test_typed_projection_casts_each_expression_to_its_target_column_type():
    cols = {"cents": "balance * 100", "ts": "ts", "email": "lower(trim(email))", "code": "code", "raw": "raw",
            "keep": "x % 2"}
    my_types = {"cents": "decimal(16,0)", "ts": "datetime(6)", "email": "varchar(255)", "code": "char(3)",
                "raw": "varbinary(8)"}
    assert MY.typed_projection(cols, my_types) == [
        "CAST((balance * 100) AS DECIMAL(16,0))",
        "CAST((ts) AS DATETIME(6))",
        "CONVERT((lower(trim(email))) USING utf8mb4)",
        "TRIM(TRAILING ' ' FROM CONVERT((code) USING utf8mb4))",  # CHAR drops trailing spaces
        "CAST((raw) AS BINARY)",
        "(x %% 2)",  # no type known: the expression as is
    ]
    pg_types = {"cents": "numeric(16,0)", "ts": "timestamp with time zone", "email": "character varying(255)",
                "code": "character(3)", "raw": "bytea"}
    assert PG.typed_projection(cols, pg_types) == [
        "CAST((balance * 100) AS numeric(16,0))",
        "CAST((ts) AS timestamp with time zone)",
        "CAST((lower(trim(email))) AS character varying)",
        "CAST((code) AS bpchar)",
        "CAST((raw) AS bytea)",
        "(x %% 2)",
    ]


@pytest.mark.parametrize(
    "dialect, type_name, expected",
    [
        (PG, "text", "encode(convert_to((v)::text, 'UTF8'), 'hex')"),
        (PG, "bytea", "encode(v, 'hex')"),
        (PG, "numeric(16,0)", "(v)::text"),
        (PG, "timestamp with time zone", "(v)::text"),
        (MY, "varchar(10)", "HEX(CONVERT(v USING utf8mb4))"),
        (MY, "char(10)", "HEX(CONVERT(v USING utf8mb4))"),
        (MY, "varbinary(10)", "HEX(v)"),
        (MY, "decimal(16,0)", "CAST(v AS CHAR CHARACTER SET utf8mb4)"),
        (MY, "datetime(6)", "CAST(v AS CHAR CHARACTER SET utf8mb4)"),
        (MY, "bit(8)", "CAST(CAST(v AS UNSIGNED) AS CHAR CHARACTER SET utf8mb4)"),
        (MY, "json", "HEX(CAST(v AS CHAR CHARACTER SET utf8mb4))"),
    ],
)
def test_values_are_encoded_by_type_hex_for_bytes_canonical_text_for_numbers_and_times(dialect, type_name, expected):
    assert dialect.encode_value("v", dialect.parse_type(type_name)) == expected


def test_mysql_encodings_never_depend_on_the_connection_charset():
    sql, _ = MY.checksum_sql("s", "t", "id", {"a": "x", "b": "y", "c": "z"}, Range(None, None),
                             casts={"a": "varchar(10)", "b": "decimal(16,0)", "c": "varbinary(4)"})
    # every text conversion names utf8mb4; no bare CAST(... AS CHAR) in the connection's charset
    assert not re.search(r"(?i)AS CHAR\)", sql)
    assert "HEX(CONVERT(`a` USING utf8mb4))" in sql and "HEX(`c`)" in sql
    assert "CAST(CAST((y) AS DECIMAL(16,0)) AS CHAR CHARACTER SET utf8mb4)" in sql


@pytest.mark.parametrize("dialect", [PG, MY])
def test_null_and_empty_string_encode_differently_and_rows_hash_to_64_bits(dialect):
    h = dialect.row_hash(["a", "b"], ["text", None])
    assert h.count("'N'") == 2 and h.count("':'") == 1  # NULL -> N, '' -> an empty field
    # 64 bits: PostgreSQL's hashtextextended over the bytes, MySQL the first 64 bits of MD5
    assert ('hashtextextended(' in h and 'COLLATE "C"' in h) or "1, 16), 16, 10" in h


@pytest.mark.parametrize("dialect", [PG, MY])
def test_the_diff_and_the_checksum_share_the_typed_projection_and_encoding(dialect):
    types = {"c": "decimal(16,0)" if dialect is MY else "numeric(16,0)"}
    check, _ = dialect.checksum_sql("s", "t", "id", {"c": "x * 100"}, Range(None, None), casts=types)
    diff, _ = dialect.diff_sql("s", "t", "id", {"c": "x * 100"}, Range(None, None), casts=types)
    (projection,) = dialect.typed_projection({"c": "x * 100"}, types)
    assert projection in check and projection in diff
    t = dialect.parse_type(types["c"])
    q = dialect.quote
    assert dialect.encode_value(f"s.{q('zdt_c0')}", t) in diff and dialect.encode_value(f"t.{q('c')}", t) in diff


def test_null_safe_equality_compares_encodings_byte_for_byte():
    assert PG.null_safe_equal("a", "b", "text") == (
        "encode(convert_to((a)::text, 'UTF8'), 'hex') COLLATE \"C\" IS NOT DISTINCT FROM"
        " encode(convert_to((b)::text, 'UTF8'), 'hex') COLLATE \"C\"")
    assert MY.null_safe_equal("a", "b", "varbinary(4)") == "CAST(HEX(a) AS BINARY) <=> CAST(HEX(b) AS BINARY)"


def test_one_snapshot_per_range_is_a_read_only_repeatable_read_transaction():
    assert PG.snapshot_sql() == ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"]
    assert MY.snapshot_sql() == ["SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                                 "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"]


@pytest.mark.parametrize("dialect", [PG, MY])
def test_column_types_are_read_from_the_catalog_on_both_engines(dialect):
    sql, params = dialect.column_types_sql("t", "app")
    assert ("format_type" in sql and "typcategory" in sql) if dialect is PG else (
        "information_schema.columns" in sql and "datetime_precision" in sql and "character_set_name" in sql)
    assert params == (('"app"."t"',) if dialect is PG else ("app", "t"))


def test_postgres_fused_batch_is_one_statement_with_the_guarded_checkpoint():
    def checkpoint(new, rows, keys, extra_where):
        return f"UPDATE cp SET watermark = {new}, rows = rows + {rows}, keys = keys + {keys} WHERE {extra_where}run = %(run)s"

    sql = PG.fused_copy_batch_sql("users_legacy", "users_new", "id", COLS, checkpoint)
    assert sql.count(";") == 0 and "OFFSET" not in sql.upper()
    # the chunk: the n-th key above the watermark, inside the partition
    assert 'WHERE "id" > %(lo)s AND "id" <= %(hi)s ORDER BY "id" LIMIT %(n)s' in sql
    # both inserts read the source under a shared lock, bounded by the chunk end
    assert sql.count('WHERE "id" > %(lo)s AND "id" <= (SELECT hi FROM e)') == 3  # the emptiness probe + 2 inserts
    assert sql.count("FOR SHARE") == 2
    # plain INSERT only when the target holds none of the chunk's keys, ON CONFLICT DO NOTHING otherwise
    assert 'AND (SELECT empty FROM f) FOR SHARE RETURNING 1' in sql
    assert 'AND NOT (SELECT empty FROM f) FOR SHARE ON CONFLICT ("id") DO NOTHING RETURNING 1' in sql
    assert "DO UPDATE" not in sql
    assert ("cp AS (UPDATE cp SET watermark = (SELECT hi FROM e), rows = rows + (SELECT n FROM w),"
            " keys = keys + (SELECT keys FROM e) WHERE (SELECT hi FROM e) IS NOT NULL AND run = %(run)s RETURNING 1)") in sql
    guarded = PG.fused_copy_batch_sql("users_legacy", "users_new", "id", COLS, checkpoint, plain_when_empty=False)
    assert "empty" not in guarded and guarded.count("ON CONFLICT") == 1


def test_mysql_has_no_fused_batch():
    assert MY.fused_copy_batch_sql("a", "b", "id", COLS, lambda *a: "") is None


def test_mysql_v2_json_plans_read_like_format_1():
    """Oracle MySQL 9's EXPLAIN FORMAT=JSON format 2 (its default): the access nodes read as format 1."""
    v2 = {"query_plan": {"inputs": [{"inputs": [{
        "operation": "Index range scan on users_legacy using PRIMARY over (0 < id <= 500)", "index_name": "PRIMARY",
        "table_name": "users_legacy", "access_type": "index", "index_access_type": "index_range_scan"}],
        "operation": "Filter", "access_type": "filter"}], "operation": "Insert into users_new", "table_name": "users_new"}}
    assert MY.index_range_scan(v2, "users_legacy", "PRIMARY")[0] is True
    scan = {"query_plan": {"operation": "Table scan on users_legacy", "table_name": "users_legacy", "access_type": "table"}}
    assert MY.index_range_scan(scan, "users_legacy", "PRIMARY")[0] is False
    assert MY.full_scans(scan, "users_legacy")


def test_each_mysql_flavour_hashes_with_a_digest_it_has():
    assert "sha2(" in MY.row_hash(["`a`"]) and "md5(" not in MY.row_hash(["`a`"])
    assert "md5(" in MARIA.row_hash(["`a`"])
    assert MY.SERVER_BOUNDS_DML is False and MARIA.SERVER_BOUNDS_DML is True and PG.SERVER_BOUNDS_DML is True
