"""RunConfig: profiles from the seed's matrix, overrides, and clear errors on bad conf."""

import pytest

from zdt_backfill.config import PROFILES, RunConfig
from zdt_backfill.errors import ConfigError, UnsafeIdentifierError

BASE = {
    "conn_id": "c",
    "source_table": "users_legacy",
    "target_table": "users_new",
    "key": "id",
    "columns": {"email_normalized": "lower(trim(email))"},
    "allow_unwatched_ramp": True,  # the default profile is prod, which refuses an unwatched ramp without it
}


def make(**kw):
    return RunConfig.from_params({**BASE, **kw}, run_id="r1")


def test_profiles_match_the_seed_matrix():
    assert (PROFILES["dev"].batch_size, PROFILES["dev"].max_rows_per_second) == (50_000, None)
    assert (PROFILES["staging"].batch_size, PROFILES["staging"].max_rows_per_second) == (10_000, 1_000)
    assert 500 <= PROFILES["prod"].batch_size <= 1_000 and PROFILES["prod"].max_rows_per_second == 500


def test_default_profile_is_prod_and_fields_override_it():
    c = make()
    assert c.profile.name == "prod" and c.batch_size == 1_000 and c.max_rows_per_second == 500
    c = make(profile="staging", batch_size=2_000, max_rows_per_second=0)
    assert c.batch_size == 2_000 and c.max_rows_per_second is None  # 0 turns the throttle off


def test_rate_is_shared_by_partitions():
    assert make(max_rows_per_second=1_000, partitions=4).rate_per_partition() == 250


def test_none_means_profile_default():
    c = make(profile="dev", batch_size=None, partitions=None)
    assert c.batch_size == 50_000 and c.partitions == PROFILES["dev"].partitions


@pytest.mark.parametrize(
    "override, message",
    [
        ({"source_table": 'users"; drop table x; --'}, "not a plain SQL identifier"),
        ({"key": "id;"}, "not a plain SQL identifier"),
        ({"columns": {"bad name": "x"}}, "not a plain SQL identifier"),
        ({"columns": {"c": "x; DROP TABLE users"}}, "';'"),
        ({"columns": {"c": "x -- comment"}}, "'--'"),
        ({"columns": {}}, "columns must be a non-empty object"),
        ({"profile": "qa"}, "profile must be one of"),
        ({"batch_size": 0}, "batch_size must be a whole number"),
        ({"batch_size": 1.5}, "batch_size must be a whole number"),
        ({"batch_size": "1000"}, "batch_size must be a number"),
        ({"partitions": 65}, "partitions must be a whole number"),
        ({"target_table": "users_legacy"}, "must differ"),
        ({"mode": "merge"}, "mode must be one of"),
        ({"cache_redis_url": "redis://x", "cache_key_pattern": "*"}, "whole cache"),
        ({"rollback_lag_seconds": 1}, "unknown conf field"),
        ({"allow_functions": ["json_extract; drop"]}, "allow_functions entry"),
        ({"max_load": {"threads_running": "lots"}}, "max_load must be an object"),
        ({"throttle_query": "SELECT 1"}, "throttle_query needs throttle_query_max"),
        ({"surprise": 1}, "unknown conf field"),
        ({"conn_id": None}, "conn_id is required"),
    ],
)
def test_bad_conf_is_refused_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message):
        make(**override)


def test_unicode_look_alike_is_refused():
    with pytest.raises(UnsafeIdentifierError):
        make(source_table="usеrs_legacy")  # Cyrillic 'е'


def test_fill_mode_targets_the_source_table():
    c = make(mode="fill", target_table=None)
    assert c.target_table == "users_legacy"
    with pytest.raises(ConfigError, match="legacy_columns"):
        make(mode="fill", target_table=None, legacy_action="drop")


def test_run_control_defaults_come_from_the_profile():
    prod, dev = make(profile="prod"), make(profile="dev")
    assert (prod.approval, prod.soak_minutes, prod.ramp_watch_minutes) == ("required", 1440.0, 10.0)
    assert (dev.approval, dev.soak_minutes, dev.ramp_watch_minutes) == ("auto", 0.0, 0.0)
    assert make(profile="prod", soak_minutes=90).soak_minutes == 90
    assert prod.legacy_action == "keep" and prod.flag_store == "table"
    assert prod.write_flag == "users_new_write_path" and prod.routing_flag == "users_new_read_path"
    for bad in ({"approval": "maybe"}, {"legacy_action": "truncate"}, {"flag_store": "http"},
                {"error_signal_sql": "SELECT 1; DROP TABLE x"}, {"error_signal_url": "file:///etc/passwd"},
                {"error_signal_sql": "SELECT 1", "error_signal_url": "http://x/y"}, {"drop_legacy": True}):
        with pytest.raises(ConfigError):
            make(**bad)


def test_dual_write_check_needs_a_timestamp_column():
    with pytest.raises(ConfigError, match="dual_write_updated_column"):
        make(dual_write="check", dual_write_updated_column=None)
    assert make(dual_write="assumed").dual_write_updated_column is None


def test_secrets_are_masked_in_the_loggable_dict():
    c = make(cache_redis_url="redis://app:s3cret@cache:6379/0", cache_key_pattern="users:*")
    assert c.cache_redis_url == "redis://app:s3cret@cache:6379/0"  # the engine still uses it
    assert c.to_dict()["cache_redis_url"] == "redis://app:***@cache:6379/0"
    assert "s3cret" not in str(c.to_dict())


@pytest.mark.parametrize("conf, refused", [
    ({"approval": "auto"}, "approval 'auto'"),
    ({"soak_minutes": 59}, "soak_minutes 59 (the prod floor is 60 min"),
    ({"soak_minutes": 0}, "soak_minutes 0"),
    ({"legacy_action": "drop", "validation": "sampled"}, "legacy_action 'drop' after a sampled validation"),
    ({"legacy_action": "rename", "validation": "sampled"}, "legacy_action 'rename' after a sampled validation"),
    ({"allow_unwatched_ramp": False}, "a ramp with no error signal"),
])
def test_prod_refuses_a_run_with_no_human_no_soak_no_full_check_or_no_watch(conf, refused):
    with pytest.raises(ConfigError, match=r"the prod profile refuses .*" + __import__("re").escape(refused)):
        make(profile="prod", **conf)
    # the same conf is accepted on staging, where rehearsals run unattended
    assert make(profile="staging", **conf).profile.name == "staging"


def test_prod_accepts_a_watched_ramp_and_records_the_override():
    watched = make(profile="prod", allow_unwatched_ramp=False, error_signal_sql="SELECT 0")
    assert watched.error_signal_sql == "SELECT 0" and not watched.allow_unwatched_ramp
    assert make(profile="prod").to_dict()["allow_unwatched_ramp"] is True
    assert make(profile="prod", legacy_action="drop").validation == "full"


@pytest.mark.parametrize("pattern", ["*", "?*", "*:*", "[a-z]*", "\\*", " *"])
def test_a_cache_pattern_without_a_literal_prefix_is_refused(pattern):
    with pytest.raises(ConfigError, match="literal key prefix"):
        make(cache_redis_url="redis://localhost:6379/0", cache_key_pattern=pattern)


def test_a_cache_pattern_with_a_literal_prefix_is_accepted():
    assert make(cache_redis_url="redis://localhost:6379/0", cache_key_pattern="users:*").cache_key_pattern == "users:*"
