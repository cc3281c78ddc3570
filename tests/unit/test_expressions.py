"""The column-expression checker (issue 7, item 8): parsed with sqlglot per dialect, only
column references, literals, operators, CASE, CAST and allow-listed deterministic functions."""

import pytest

from zdt_backfill.errors import ConfigError
from zdt_backfill.expressions import (
    ALLOWED_FUNCTIONS,
    NON_DETERMINISTIC,
    SIDE_EFFECTS,
    check_expression,
    check_query,
    expression_problems,
    query_problems,
)

ACCEPTED = [
    ("postgres", "lower(trim(email))"),
    ("postgres", "md5(legacy_data)"),
    ("postgres", "balance * 100"),
    ("postgres", "CAST(balance * 100 AS numeric(16,0))"),
    ("postgres", "balance::numeric(16,0) + 1"),
    ("postgres", "CASE WHEN id % 2 = 0 THEN 'even' ELSE 'odd' END"),
    ("postgres", "coalesce(nickname, '') || ' ' || upper(name)"),
    ("postgres", "trim(both ' ' from email)"),
    ("postgres", "extract(year from created_at)"),
    ("postgres", "date_trunc('day', created_at)"),
    ("postgres", "substring(email from 2 for 3)"),
    ("postgres", "payload ->> 'name'"),
    ("postgres", "email IS NULL OR email LIKE '%@example.com'"),
    ("postgres", "users_legacy.email"),  # qualified with the source table itself
    ("postgres", "encode(sha256(convert_to(email, 'UTF8')), 'hex')"),
    ("mysql", "lower(trim(email))"),
    ("mysql", "md5(legacy_data)"),
    ("mysql", "CAST(balance * 100 AS DECIMAL(16,0))"),
    ("mysql", "CONVERT(email USING utf8mb4)"),
    ("mysql", "IF(id % 2 = 0, 'even', 'odd')"),
    ("mysql", "CASE WHEN a IS NULL THEN 0 ELSE a DIV 2 END"),
    ("mysql", "ifnull(concat_ws('-', a, b), '')"),
    ("mysql", "JSON_UNQUOTE(JSON_EXTRACT(doc, '$.name'))"),
    ("mysql", "date_format(created_at, '%Y-%m')"),
    ("mysql", "sha2(email, 256)"),
]


@pytest.mark.parametrize("engine, sql", ACCEPTED)
def test_pure_expressions_are_accepted(engine, sql):
    assert expression_problems(sql, engine, table="users_legacy") == []


REFUSED = [
    # subqueries and reads of another table
    ("postgres", "(SELECT max(id) FROM users_new)", "subquery"),
    ("postgres", "id IN (SELECT id FROM users_new)", "subquery"),
    ("postgres", "EXISTS (SELECT 1 FROM orders o WHERE o.user_id = id)", "subquery"),
    ("postgres", "orders.total", "another table"),
    ("postgres", "'users_new'::regclass", "catalog"),
    ("mysql", "(SELECT count(*) FROM users_new)", "subquery"),
    ("mysql", "users_new.email_normalized", "another table"),
    # non-deterministic
    ("postgres", "now()", "not deterministic"),
    ("postgres", "current_timestamp", "not deterministic"),
    ("postgres", "clock_timestamp()", "not deterministic"),
    ("postgres", "random()", "not deterministic"),
    ("postgres", "gen_random_uuid()", "not deterministic"),
    ("mysql", "rand()", "not deterministic"),
    ("mysql", "uuid()", "not deterministic"),
    ("mysql", "now(6)", "not deterministic"),
    ("mysql", "sysdate()", "not deterministic"),
    ("mysql", "database()", "not deterministic"),
    # side effects
    ("postgres", "pg_sleep(1)", "side effects"),
    ("postgres", "pg_terminate_backend(1)", "side effects"),
    ("postgres", "nextval('users_id_seq')", "side effects"),
    ("postgres", "pg_read_file('/etc/passwd')", "side effects"),
    ("mysql", "sleep(1)", "side effects"),
    ("mysql", "get_lock('x', 10)", "side effects"),
    ("mysql", "benchmark(1000000, md5('x'))", "side effects"),
    # other rows, parameters, session state, unknown functions
    ("postgres", "sum(balance)", "aggregate"),
    ("postgres", "row_number() OVER (ORDER BY id)", "window"),
    ("postgres", "$1", "parameter"),
    ("mysql", "@counter", "parameter"),
    ("mysql", "@@session.sql_mode", "parameter"),
    ("mysql", "@x := 1", "assignment"),
    ("postgres", "my_normalize(email)", "allow-list"),
    ("postgres", "pg_catalog.lower(email)", "schema-qualified"),
    ("postgres", "lower(email) AS e", "not allowed"),
    ("postgres", "lower(email", "does not parse"),
    ("mysql", "lower(email) /*! , sleep(5) */", "comments"),
    ("postgres", "lower(email); DROP TABLE users", "separators"),
]


@pytest.mark.parametrize("engine, sql, reason", REFUSED)
def test_impure_expressions_are_refused_naming_the_cause(engine, sql, reason):
    problems = expression_problems(sql, engine, table="users_legacy")
    assert problems and reason in problems[0], problems


def test_allow_functions_extends_the_allow_list_case_insensitively():
    assert "allow-list" in expression_problems("my_normalize(email)", "postgres")[0]
    assert expression_problems("my_normalize(email)", "postgres", allow_functions=["MY_NORMALIZE"]) == []


def test_allow_functions_never_admits_a_refused_function():
    for name in ("now", "random", "pg_sleep"):
        assert expression_problems(f"{name}()", "postgres", allow_functions=[name])


def test_the_refused_lists_and_the_allow_lists_do_not_overlap():
    for allowed in ALLOWED_FUNCTIONS.values():
        assert not allowed & (NON_DETERMINISTIC | SIDE_EFFECTS)


def test_check_expression_raises_a_config_error_naming_column_and_expression():
    check_expression("lower(email)", "email_normalized", "mysql")
    with pytest.raises(ConfigError, match=r"'email_normalized' \(rand\(\)\): rand\(\) is not deterministic"):
        check_expression("rand()", "email_normalized", "mysql")


def test_every_problem_is_listed_once():
    problems = expression_problems("now() || random() || now()", "postgres")
    assert len(problems) == 2 and "now()" in problems[0] and "random()" in problems[1]


@pytest.mark.parametrize("name", ["dblink_connect", "query_to_xml_and_xmlschema", "pg_switch_wal", "pg_reload_conf",
                                  "lo_from_bytea", "database_to_xml", "set_config"])
def test_allow_functions_never_admits_a_server_function(name):
    problems = expression_problems(f"{name}(email)", "postgres", allow_functions=[name])
    assert problems and ("server function" in problems[0] or "side effects" in problems[0]), problems


@pytest.mark.parametrize("engine, sql", [
    ("postgres", "repeat(email, 100000000)"), ("postgres", "lpad(email, id, 'x')"), ("mysql", "rpad(email, 20000, ' ')"),
    ("mysql", "space(1000000)"), ("postgres", "repeat(email, length(email))"),
])
def test_generated_strings_need_a_small_literal_length(engine, sql):
    problems = expression_problems(sql, engine)
    assert problems and "literal length of at most 10000" in problems[0], problems


@pytest.mark.parametrize("engine, sql", [("postgres", "lpad(id::text, 12, '0')"), ("mysql", "rpad(email, 64, ' ')"),
                                         ("postgres", "repeat('-', 3)")])
def test_generated_strings_with_a_small_literal_length_pass(engine, sql):
    assert expression_problems(sql, engine) == []


@pytest.mark.parametrize("engine, sql", [
    ("postgres", "SELECT 100.0 * errors_5xx / nullif(total, 0) FROM app_http_stats"),
    ("postgres", "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"),
    ("postgres", "SELECT coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0)"),
    ("postgres", "SELECT max(depth) FROM (SELECT count(*) AS depth FROM jobs GROUP BY queue) q"),
    ("mysql", "SELECT VARIABLE_VALUE FROM performance_schema.global_status WHERE VARIABLE_NAME = 'Threads_running'"),
    ("mysql", "SELECT COUNT(*) FROM information_schema.processlist WHERE command <> 'Sleep'"),
])
def test_read_only_probe_queries_are_accepted(engine, sql):
    assert query_problems(sql, engine) == []


@pytest.mark.parametrize("engine, sql, reason", [
    ("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'", "side effects"),
    ("postgres", "WITH gone AS (DELETE FROM users_legacy RETURNING 1) SELECT count(*) FROM gone", "DELETE is not read-only"),
    ("postgres", "WITH x AS (UPDATE users_legacy SET email = '' RETURNING 1) SELECT 1", "UPDATE is not read-only"),
    ("mysql", "SELECT SLEEP(100000)", "sleep() has side effects"),
    ("postgres", "SELECT pg_sleep(100000)", "side effects"),
    ("postgres", "SELECT count(*) FROM jobs FOR UPDATE", "LOCK is not read-only"),
    ("postgres", "SELECT 1 INTO stash", "INTO is not read-only"),
    ("postgres", "SELECT 1 UNION SELECT 2", "one plain SELECT"),
    ("postgres", "DELETE FROM jobs", "one plain SELECT"),
    ("postgres", "SELECT 1; SELECT 2", "statement separators"),
    ("postgres", "SELECT dblink_exec('x', 'DROP TABLE t')", "side effects"),
    ("postgres", "SELECT my_function(1)", "not on the probe queries' allow-list"),
    ("mysql", "SELECT GET_LOCK('x', 100)", "side effects"),
])
def test_probe_queries_that_write_wait_or_lock_are_refused(engine, sql, reason):
    problems = query_problems(sql, engine)
    assert problems and reason in " ".join(problems), problems
    with pytest.raises(ConfigError, match="throttle_query"):
        check_query(sql, "throttle_query", engine)
