"""Partition planning: contiguous, covering, bounded by rows; empty and tiny tables."""

import pytest

from zdt_backfill.copying.chunker import Partition, partitions_at, plan_partitions
from zdt_backfill.dialects import Range
from zdt_backfill.verify.checksum import validation_ranges


def covered(parts):
    keys = []
    for p in parts:
        keys.extend(range(p.lo, p.hi + 1))
    return keys


def test_empty_table_has_no_partitions():
    assert plan_partitions(None, None, 0, 4, 1000) == []


def test_tiny_table_gets_one_partition():
    assert plan_partitions(1, 10, 10, 8, 1000) == [Partition(0, 1, 10)]


def test_single_key_table():
    assert plan_partitions(7, 7, 1, 4, 1000) == [Partition(0, 7, 7)]


@pytest.mark.parametrize("lo, hi, n", [(1, 1_000, 4), (1, 1_001, 3), (-50, 50, 7), (10, 10_000_000, 64)])
def test_partitions_are_contiguous_and_cover_every_key_once(lo, hi, n):
    parts = plan_partitions(lo, hi, hi - lo + 1, n, 1)
    assert len(parts) == min(n, hi - lo + 1)
    assert parts[0].lo == lo and parts[-1].hi == hi
    for a, b in zip(parts, parts[1:], strict=False):
        assert b.lo == a.hi + 1
    if hi - lo < 10_000:
        assert covered(parts) == list(range(lo, hi + 1))


def test_no_more_partitions_than_batches():
    # 2,500 rows in batches of 1,000 -> at most 3 partitions, however many asked for
    assert len(plan_partitions(1, 2_500, 2_500, 64, 1_000)) == 3


def test_sparse_keys_plan_by_rows_not_span():
    # 100 rows spread over a billion keys: one batch's worth -> one partition
    assert len(plan_partitions(1, 1_000_000_000, 100, 8, 1_000)) == 1


def test_labels_and_round_trip():
    p = Partition(2, 101, 200)
    assert p.label == "p2 [101..200]"
    assert Partition.from_dict(p.to_dict()) == p


def test_validation_ranges_open_the_outer_ends():
    parts = plan_partitions(1, 300, 300, 3, 1)
    assert validation_ranges(parts) == [Range(None, 100), Range(100, 200), Range(200, None)]
    assert validation_ranges([]) == [Range(None, None)]


def test_partitions_carry_their_estimated_rows_through_xcom():
    # equal key widths: one partition carries the whole estimate, several none (no density assumed)
    assert [p.rows for p in plan_partitions(1, 1_000, 500, 4, 100)] == [None] * 4
    (one,) = plan_partitions(1, 1_000, 500, 1, 100)
    d = one.to_dict()
    assert d == {"index": 0, "lo": 1, "hi": 1000, "label": "p0 [1..1000]", "rows": 500}
    assert Partition.from_dict(d).rows == 500 and Partition.from_dict(d) == one
    # a partition without an estimate has none in its dict either
    assert "rows" not in Partition(0, 1, 10).to_dict() and Partition.from_dict({"index": 0, "lo": 1, "hi": 10}).rows is None
    assert [p.rows for p in partitions_at(1, 100, [10, 50], [10, 40, 50])] == [10, 40, 50]
