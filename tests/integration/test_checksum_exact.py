"""Checksums that are exact on both engines (issue 7, item 1), on real PostgreSQL and MariaDB.

One source table ``src`` is copied by the engine (pre-flight, then the partition copier) into
``dst`` through a transform per column. Each test first proves that the exact copy matches
(equal data hashes equal), then injects one kind of difference into the target and proves
validation finds exactly those keys, classed:

- VARBINARY / bytea corrupted in one byte (an invalid UTF-8 byte, which a lossy text
  conversion would turn into ``?`` on both sides);
- DECIMAL scale: ``balance * 100`` into ``DECIMAL(16,0)`` / ``numeric(16,0)`` (hashed as
  ``-16763788.00`` against ``-16763788`` before the typed projection) and a 1-unit difference;
- ``DATETIME(6)`` / ``timestamptz`` and a 1-microsecond difference, plus a millisecond target
  column the database rounds (PostgreSQL) or truncates (MariaDB) on insert;
- emoji and combining characters (``utf8mb4_general_ci`` calls every emoji equal, and
  composed and decomposed ``é`` are canonically equivalent), also read over a latin1
  connection on MariaDB (the SQL is charset-independent);
- empty string against NULL;
- case and trailing spaces under case-insensitive collations (``utf8mb4_general_ci`` with
  PAD SPACE on MariaDB; a nondeterministic ICU collation on PostgreSQL);
- missing and extra rows;

and that a range's row diff reads the checksum's snapshot, that the dual-write check passes
on correctly dual-written typed values and fails on a wrong one, and that the suite's own
exactness oracle (``projection_diff``) is byte-exact.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import projection_diff, seed_users, users_conf
from zdt_backfill.config import RunConfig
from zdt_backfill.copying.chunker import Partition
from zdt_backfill.copying.copier import PartitionCopier
from zdt_backfill.db import Database
from zdt_backfill.dialects import MySQLDialect
from zdt_backfill.errors import PreflightError
from zdt_backfill.lifecycle import dualwrite
from zdt_backfill.lifecycle.preflight import run_preflight
from zdt_backfill.verify import checksum

pytestmark = pytest.mark.integration

ROWS = 200
COLUMNS = {
    "payload": "payload",
    "cents": "balance * 100",
    "ts": "ts",
    "ts_ms": "ts",
    "name": "name",
    "note": "note",
    "word": "lower(trim(word))",
}
EMOJI, OTHER_EMOJI = "\U0001F600", "\U0001F601"  # 😀 😁
COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"  # é as one code point / e + combining acute


def payload(i: int, first: int = 0xFF) -> bytes:
    """Bytes that are not valid UTF-8 (0xFF 0x80 ...), unique per row."""
    return bytes([first, 0x80]) + i.to_bytes(4, "big") + b"\xc3"


def name(i: int) -> str:
    return [f"{COMPOSED} {i}", f"{DECOMPOSED} {i}", f"{EMOJI} smile {i}", f"\U0001F469\u200d\U0001F467 {i}"][i % 4]


def row(i: int, engine: str) -> tuple:
    ts = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=i * 1_234_567)
    if engine == "mysql":
        ts = ts.replace(tzinfo=None)
    note = ["", None, f"n{i}"][i % 3]
    return (i, payload(i), Decimal(i * 7919 - 16_763_788 * 100) / 100, ts, name(i), note, f"  Word{i} ")


def create_tables(env) -> None:
    if env.engine == "postgres":
        env.sql("CREATE COLLATION zdt_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        env.sql(
            "CREATE TABLE src (id bigint PRIMARY KEY, payload bytea, balance numeric(12,2), ts timestamptz,"
            " name text, note text, word text, updated_at timestamptz NOT NULL DEFAULT now());\n"
            "CREATE TABLE dst (id bigint PRIMARY KEY, payload bytea, cents numeric(16,0), ts timestamptz,"
            " ts_ms timestamp(3) with time zone, name text, note text, word text COLLATE zdt_ci)"
        )
    else:
        env.sql(
            "CREATE TABLE src (id BIGINT NOT NULL PRIMARY KEY, payload VARBINARY(64), balance DECIMAL(12,2),"
            " ts DATETIME(6), name VARCHAR(100), note VARCHAR(100), word VARCHAR(100),"
            " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));\n"
            "CREATE TABLE dst (id BIGINT NOT NULL PRIMARY KEY, payload VARBINARY(64), cents DECIMAL(16,0),"
            " ts DATETIME(6), ts_ms DATETIME(3), name VARCHAR(100), note VARCHAR(100),"
            " word VARCHAR(100) COLLATE utf8mb4_general_ci)"
        )
    with env.db.session() as conn, contextlib.closing(conn.cursor()) as cur:
        cur.executemany(
            "INSERT INTO src (id, payload, balance, ts, name, note, word) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [row(i, env.engine) for i in range(1, ROWS + 1)],
        )
        conn.commit()


def copied(env, **conf):
    """Create, fill and copy src -> dst with the engine; returns (config, partitions)."""
    create_tables(env)
    config = RunConfig.from_params(
        {"conn_id": env.conn_id, "source_table": "src", "target_table": "dst", "key": "id",
         "columns": dict(COLUMNS), "profile": "dev", "dual_write": "assumed", "batch_size": 64, "partitions": 2,
         **conf},
        run_id="exact",
    )
    plan = run_preflight(config, env.db, [])
    parts = [Partition.from_dict(p) for p in plan.partitions]
    for p in parts:
        PartitionCopier(config, env.db, p, plan.key_index).run()
    assert env.scalar("SELECT count(*) FROM dst") == ROWS
    exact = checksum.validate(config, env.db, parts)
    assert (exact.mismatched, exact.unexplained_ranges) == (0, 0), exact.to_dict()  # equal data hashes equal
    return config, parts


def found(config, db, parts) -> tuple[dict, checksum.ValidationResult]:
    v = checksum.validate(config, db, parts)
    assert v.unexplained_ranges == 0  # every differing checksum has its keys named
    return {kind: sorted(keys) for kind, keys in v.sample_keys.items()}, v


def set_value(env, column: str, key: int, value) -> None:
    env.sql(f"UPDATE dst SET {column} = %s WHERE id = %s", (value, key))


def test_binary_corrupted_in_one_byte_is_found(env):
    config, parts = copied(env)
    set_value(env, "payload", 7, payload(7, first=0xFE))  # 0xFF -> 0xFE: both invalid UTF-8
    keys, v = found(config, env.db, parts)
    assert keys == {"different": [7]} and v.different == 1


def test_decimal_scale_of_an_exact_copy_matches_and_one_unit_is_found(env):
    config, parts = copied(env)  # balance * 100 (scale 2) stored in a scale-0 column: equal
    assert env.scalar("SELECT cents FROM dst WHERE id = 1") == Decimal(7919 - 16_763_788 * 100)
    env.sql("UPDATE dst SET cents = cents + 1 WHERE id = 11")
    keys, _ = found(config, env.db, parts)
    assert keys == {"different": [11]}


def test_microsecond_timestamps_match_at_the_target_precision_and_one_microsecond_is_found(env):
    config, parts = copied(env)  # ts_ms holds ts at millisecond precision: rounded/truncated alike
    one_us = "ts + interval '1 microsecond'" if env.engine == "postgres" else "ts + INTERVAL 1 MICROSECOND"
    env.sql(f"UPDATE dst SET ts = {one_us} WHERE id = 13")
    keys, _ = found(config, env.db, parts)
    assert keys == {"different": [13]}


def test_emoji_and_combining_characters_are_compared_by_their_bytes(env):
    config, parts = copied(env)
    assert name(18).startswith(EMOJI) and name(20).startswith(COMPOSED)
    set_value(env, "name", 18, name(18).replace(EMOJI, OTHER_EMOJI))  # equal under utf8mb4_general_ci
    set_value(env, "name", 20, name(20).replace(COMPOSED, DECOMPOSED))  # canonically equivalent
    keys, _ = found(config, env.db, parts)
    assert keys == {"different": [18, 20]}
    if env.engine == "mysql":  # the same over a latin1 connection: the SQL does not depend on the charset
        import MySQLdb

        server = env.pair.primary

        def latin1():
            return MySQLdb.connect(host=server.host, port=server.port, user=server.user, password="",
                                   database=env.database, autocommit=False, charset="latin1")

        db = Database(connect=latin1, dialect=MySQLDialect())
        with db.session() as conn:
            assert db.query(conn, "SELECT @@character_set_connection")[0][0] == "latin1"
        keys, _ = found(config, db, parts)
        assert keys == {"different": [18, 20]}


def test_empty_string_and_null_are_different_values(env):
    config, parts = copied(env)
    assert env.sql("SELECT note FROM dst WHERE id IN (3, 4) ORDER BY id") == [("",), (None,)]
    set_value(env, "note", 3, None)
    set_value(env, "note", 4, "")
    keys, _ = found(config, env.db, parts)
    assert keys == {"different": [3, 4]}


def test_case_and_trailing_spaces_are_found_under_case_insensitive_collations(env):
    config, parts = copied(env)
    # the target column's collation calls both pairs equal
    assert bool(env.scalar("SELECT word = %s FROM dst WHERE id = 30", ("WORD30",)))
    if env.engine == "mysql":
        assert bool(env.scalar("SELECT word = %s FROM dst WHERE id = 31", ("word31 ",)))  # PAD SPACE
    env.sql("UPDATE dst SET word = upper(word) WHERE id = 30")
    env.sql("UPDATE dst SET word = concat(word, ' ') WHERE id = 31")
    keys, _ = found(config, env.db, parts)
    assert keys == {"different": [30, 31]}


def test_missing_extra_and_different_rows_are_classed(env):
    config, parts = copied(env)
    env.sql("DELETE FROM dst WHERE id = 40")
    env.sql("INSERT INTO dst (id, note) VALUES (100000, 'orphan')")
    env.sql("UPDATE dst SET word = 'changed' WHERE id = 150")
    keys, v = found(config, env.db, parts)
    assert keys == {"missing": [40], "extra": [100000], "different": [150]}
    assert (v.source_rows, v.target_rows) == (ROWS, ROWS)


def test_the_row_diff_reads_the_checksums_snapshot(env, monkeypatch):
    """A write committed between a range's checksum and its diff is seen by neither."""
    config, parts = copied(env, partitions=1)
    env.sql("UPDATE dst SET word = 'changed' WHERE id = 5")
    query, done = env.db.query, []

    def checksum_then_concurrent_write(conn, sql, params=()):
        rows = query(conn, sql, params)
        if "CROSS JOIN" in sql and not done:  # the checksum statement: another session writes now
            done.append(1)
            env.sql("UPDATE dst SET word = 'changed too' WHERE id = 6")
        return rows

    monkeypatch.setattr(env.db, "query", checksum_then_concurrent_write)
    keys, v = found(config, env.db, parts)
    assert done and keys == {"different": [5]} and v.different == 1
    monkeypatch.undo()
    keys, _ = found(config, env.db, parts)  # a later validation sees the second write
    assert keys == {"different": [5, 6]}


def test_dual_write_check_passes_on_typed_values_and_fails_on_a_wrong_one(env):
    config, _ = copied(env)  # every src row was updated just now: all are in the window
    check = RunConfig.from_params(
        {"conn_id": env.conn_id, "source_table": "src", "target_table": "dst", "key": "id",
         "columns": dict(COLUMNS), "profile": "dev", "dual_write": "check"}, run_id="exact")
    result = dualwrite.confirm_dual_write(check, env.db)
    assert (result.recent_rows, result.mismatched_rows) == (ROWS, 0)
    env.sql("UPDATE dst SET cents = cents + 1 WHERE id = 9")
    with pytest.raises(PreflightError, match=f"1 of {ROWS} source rows"):
        dualwrite.confirm_dual_write(check, env.db)


def test_the_suites_exactness_oracle_is_byte_exact(env):
    """projection_diff finds a case-only and a trailing-space-only difference, even where the
    target column's collation calls them equal."""
    seed_users(env, 50)
    if env.engine == "postgres":
        env.sql("CREATE COLLATION zdt_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        env.sql("ALTER TABLE users_new ALTER COLUMN email_normalized TYPE text COLLATE zdt_ci")
    config = RunConfig.from_params(users_conf(env), run_id="oracle")
    plan = run_preflight(config, env.db, [])
    for p in plan.partitions:
        PartitionCopier(config, env.db, Partition.from_dict(p), plan.key_index).run()
    assert projection_diff(env) == 0
    per_row = 2 if env.engine == "postgres" else 1  # PostgreSQL's EXCEPT both ways counts a row twice
    env.sql("UPDATE users_new SET email_normalized = upper(email_normalized) WHERE id = 10")
    assert projection_diff(env) == per_row
    env.sql("UPDATE users_new SET email_normalized = concat(email_normalized, ' ') WHERE id = 20")
    assert projection_diff(env) == 2 * per_row
    # what the collation sees: both rows still "equal" to the expected value
    equal = ("SELECT count(*) FROM users_new t JOIN users_legacy s ON s.id = t.id"
             " WHERE t.id IN (10, 20) AND t.email_normalized = lower(trim(s.email))")
    if env.flavour == "mariadb":
        assert env.scalar(equal) == 2  # utf8mb4_general_ci: case-insensitive and PAD SPACE
    else:
        # PostgreSQL has no PAD SPACE, and Oracle MySQL's utf8mb4_0900_ai_ci is NO PAD: only the case-only row
        assert env.scalar(equal) == 1
