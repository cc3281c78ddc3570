"""The trigger form refuses what it cannot honour: bad numbers are refused, not clamped, and
fill-mode-only fields are optional in copy mode (no ``dag.test``: the Params and the server's
own ParamsDict validation, then RunConfig)."""

from __future__ import annotations

import pytest
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.definitions.param import SerializedParam, SerializedParamsDict

from zdt_airflow.dag_factory import build_params
from zdt_backfill.config import MAX_BATCH_SIZE, RunConfig
from zdt_backfill.errors import ConfigError

PARAMS = build_params({})
NUMERIC = [k for k, p in PARAMS.items() if {"integer", "number"} & set(p.schema["type"])]


def sdk_validate(**conf):
    """What ``dag.test(run_conf=...)`` and the Task SDK do with a conf."""
    d = ParamsDict(build_params({}))
    for k, v in conf.items():
        d[k] = v
    return d.validate()


def server_validate(**conf):
    """What the API server does with a trigger request (the serialized DAG's params, HTTP 400 on error)."""
    params = {k: SerializedParam(conf.get(k, p.value), p.description, **p.schema) for k, p in build_params({}).items()}
    return SerializedParamsDict(params).validate()


def test_number_inputs_carry_no_bounds_the_form_would_clamp_to():
    # The form passes schema.minimum / schema.maximum to its number input, which clamps on blur.
    assert NUMERIC and "batch_size" in NUMERIC
    for name in NUMERIC:
        assert "minimum" not in PARAMS[name].schema and "maximum" not in PARAMS[name].schema, name


@pytest.mark.parametrize("validate", [sdk_validate, server_validate])
@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0), ("batch_size", -5), ("batch_size", MAX_BATCH_SIZE + 1), ("batch_size", 2.5),
        ("partitions", 0), ("min_batch_size", 0), ("ramp_percent", 101),
        ("max_rows_per_second", -1), ("max_replica_lag_seconds", -0.5), ("soak_minutes", -1),
        ("max_error_rate_pct", 100.5), ("max_error_rate_pct", -0.01), ("lock_timeout_seconds", 0),
        ("statement_timeout_seconds", -1), ("replica_wait_timeout_seconds", 0),
    ],
)
def test_out_of_range_numbers_are_refused_naming_the_field(validate, field, value):
    with pytest.raises(ParamValidationError, match=f"Invalid input for param {field}: "):
        validate(**{field: value})


@pytest.mark.parametrize("validate", [sdk_validate, server_validate])
def test_the_refusal_reads_field_value_and_bound_on_its_first_line(validate):
    with pytest.raises(ParamValidationError) as err:
        validate(batch_size=0)
    assert str(err.value).splitlines()[0] == "Invalid input for param batch_size: 0 is less than the minimum of 1"
    with pytest.raises(ParamValidationError) as err:
        validate(max_error_rate_pct=101)
    assert str(err.value).splitlines()[0] == (
        "Invalid input for param max_error_rate_pct: 101 is greater than the maximum of 100")


@pytest.mark.parametrize("validate", [sdk_validate, server_validate])
def test_edges_and_empty_fields_are_accepted(validate):
    ok = validate(batch_size=1, partitions=64, max_rows_per_second=0, max_error_rate_pct=100,
                  max_5xx_rate_pct=0, soak_minutes=0, lock_timeout_seconds=0.25, min_batch_size=MAX_BATCH_SIZE)
    assert ok["batch_size"] == 1 and ok["max_rows_per_second"] == 0
    assert validate()["batch_size"] is None  # empty = the profile's value


def test_fill_only_and_list_fields_are_optional_in_copy_mode():
    # The form marks a field required when its type does not include "null".
    for name in ("legacy_columns", "target_table", "allow_functions", "replica_conn_ids", "schema"):
        assert "null" in PARAMS[name].schema["type"], name
    for validate in (sdk_validate, server_validate):
        assert validate(legacy_columns=None, allow_functions=None)["legacy_columns"] is None
    conf = {k: v for k, v in sdk_validate(legacy_columns=None, allow_functions=None, allow_unwatched_ramp=True).items()}
    c = RunConfig.from_params(conf, run_id="r")
    assert c.legacy_columns == () and c.allow_functions == ()


def test_the_forms_defaults_are_prod_and_prod_refuses_an_unwatched_ramp_until_told():
    with pytest.raises(ConfigError, match="the prod profile refuses a ramp with no error signal"):
        RunConfig.from_params(dict(sdk_validate()), run_id="r")
    assert RunConfig.from_params(dict(sdk_validate(allow_unwatched_ramp=True)), run_id="r").profile.name == "prod"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 0, "batch_size must be a whole number from 1 to 100000, got 0"),
        ("batch_size", -3, "batch_size must be a whole number from 1 to 100000, got -3"),
        ("partitions", 0, "partitions must be a whole number from 1 to 64, got 0"),
        ("lock_timeout_seconds", 0.0001, "lock_timeout_seconds must be from 0.001 to 3600, got 0.0001"),
        ("max_rows_per_second", -1, "max_rows_per_second must be a positive number, or 0 to turn it off, got -1"),
    ],
)
def test_runconfig_refuses_too_with_field_value_and_why(field, value, message):
    conf = {k: v for k, v in sdk_validate().items()}
    conf[field] = value
    with pytest.raises(ConfigError) as err:
        RunConfig.from_params(conf, run_id="r")
    assert str(err.value) == message
