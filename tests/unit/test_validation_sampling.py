"""Sample size, validation conf fields, and the decision's hold on a failed checklist item."""

from __future__ import annotations

import math

import pytest

from zdt_backfill.config import RunConfig, Thresholds
from zdt_backfill.errors import ConfigError
from zdt_backfill.lifecycle.decision import FORWARD, HOLD, ROLLBACK, decide_branch
from zdt_backfill.verify.checklist import failed_data_items
from zdt_backfill.verify.checksum import sample_size

BASE = {"conn_id": "c", "source_table": "a", "target_table": "b", "key": "id", "columns": {"x": "y"},
        "dual_write": "assumed", "allow_unwatched_ramp": True}


def test_sample_size_is_the_zero_failure_sample():
    assert sample_size(0.999, 0.01) == 69_075  # ln(0.001)/ln(0.9999) = 69,074.1
    assert sample_size(0.95, 1.0) == 299
    n = sample_size(0.99, 0.1)
    assert (1 - 0.001) ** n <= 0.01 < (1 - 0.001) ** (n - 1)  # the smallest n that reaches the confidence
    assert n == math.ceil(math.log(0.01) / math.log(0.999))
    with pytest.raises(ValueError):
        sample_size(1.0, 0.01)


def test_validation_conf_defaults_and_refusals():
    c = RunConfig.from_params(BASE)
    assert (c.validation, c.validation_chunk_seconds, c.validation_recheck_seconds) == ("full", 0.5, 2.0)
    assert (c.validation_confidence, c.validation_detect_pct, c.validation_source) == (0.999, 0.01, "primary")
    ok = RunConfig.from_params({**BASE, "validation": "sampled", "validation_source": "replica",
                                "replica_conn_ids": ["r"]})
    assert (ok.validation, ok.validation_source) == ("sampled", "replica")
    for bad in ({"validation": "half"}, {"validation_chunk_seconds": 0}, {"validation_source": "replica"},
                {"validation_confidence": 1.5}, {"validation_detect_pct": 0}, {"validation_recheck_seconds": -1}):
        with pytest.raises(ConfigError):
            RunConfig.from_params({**BASE, **bad})


def test_a_failed_data_item_holds_and_never_rolls_back():
    checklist = [{"name": "no_nulls_left", "status": "fail", "detail": "1 NULL"},
                 {"name": "cache_hit_ratio", "status": "warn", "detail": "cold"},
                 {"name": "whole_table_checksum", "status": "n/a", "detail": "transformed"}]
    failed = failed_data_items(checklist)
    assert failed == ["no_nulls_left: 1 NULL"]
    assert decide_branch(0, 0, 1000, Thresholds(), 0, failed).branch == HOLD
    assert decide_branch(0, 0, 1000, Thresholds(), 0, failed_data_items(checklist[1:])).branch == FORWARD
    # the error rate's own rule still applies; the checklist adds no rollback
    assert decide_branch(500, 0, 1000, Thresholds(), 0, failed).branch == ROLLBACK
