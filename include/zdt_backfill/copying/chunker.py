"""Key-range partitions and keyset chunks.

A *partition* is a key range copied by one mapped Airflow task; inside it a
:class:`Chunker` hands out *chunks*, each copied by one batch transaction. Only
keyset predicates are used (``key > watermark AND key <= chunk_end``), never OFFSET.

The interface follows Spirit's chunker (``Open``/``OpenAtWatermark``/``Next``/
``Feedback``/``GetLowWatermark``), so a composite-key or non-integer chunker and a
time-targeted batch size (the health-gating issue) plug in without touching the copier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..db import Database


@dataclass(frozen=True)
class Partition:
    """An inclusive key range ``[lo, hi]`` copied by one mapped task.

    ``index`` is its position (0-based); :attr:`label` is what the Airflow UI shows; ``rows``
    is the plan's estimate of its source rows (``None`` when unknown: partitions rebuilt from
    checkpoints whose plan event is gone): progress and ETAs count rows against it, since with sparse keys
    the share of the key span says nothing about the share of the rows.
    """

    index: int
    lo: int
    hi: int
    rows: int | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return f"p{self.index} [{self.lo}..{self.hi}]"

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "lo": self.lo, "hi": self.hi, "label": self.label}
        if self.rows is not None:
            out["rows"] = self.rows
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Partition":
        rows = d.get("rows")
        return cls(index=int(d["index"]), lo=int(d["lo"]), hi=int(d["hi"]), rows=None if rows is None else int(rows))


@dataclass(frozen=True)
class Chunk:
    """Keys ``(lo, hi]`` of one batch: ``lo`` is the watermark before it, ``hi`` its last
    key, ``keys`` how many keys (source rows) it holds."""

    lo: int
    hi: int
    keys: int = 0


def plan_partitions(min_key: int | None, max_key: int | None, rows_estimate: int, partitions: int, batch_size: int) -> list[Partition]:
    """Split ``[min_key, max_key]`` into at most ``partitions`` equal-width key ranges.

    :param min_key: smallest key, ``None`` for an empty table.
    :param max_key: largest key.
    :param rows_estimate: estimated rows (planner statistics); no more partitions are
        made than there are batches of ``batch_size`` rows, so a tiny table gets one.
    :param partitions: partitions wanted (1-64).
    :param batch_size: rows per batch.
    :returns: contiguous partitions covering every key once; ``[]`` for an empty table.
        Equal *key* width, so heavily skewed keys give uneven partitions (each still
        copies in batches of at most ``batch_size`` rows). A single partition's ``rows`` is
        ``rows_estimate``; several have none (an estimate shared by key width would assume evenly
        spread keys, the very assumption the key span makes).
    """
    if min_key is None or max_key is None:
        return []
    span = max_key - min_key + 1
    wanted = max(1, min(partitions, math.ceil(max(rows_estimate, 1) / batch_size), span))
    bounds = [min_key + (span * i) // wanted for i in range(wanted)] + [max_key + 1]
    return [Partition(i, bounds[i], bounds[i + 1] - 1, rows=rows_estimate if wanted == 1 else None)
            for i in range(wanted)]


def partition_count(min_key: int | None, max_key: int | None, rows_estimate: int, partitions: int,
                    batch_size: int) -> int:
    """How many partitions a plan makes: at most ``partitions``, no more than batches of
    ``batch_size`` rows, no more than keys in the range; 0 for an empty table."""
    if min_key is None or max_key is None:
        return 0
    return max(1, min(partitions, math.ceil(max(rows_estimate, 1) / batch_size), max_key - min_key + 1))


def partitions_at(min_key: int, max_key: int, cuts: list[int], rows: list[int] | None = None) -> list[Partition]:
    """Contiguous partitions of ``[min_key, max_key]`` ending at each key of ``cuts`` (ascending,
    each the last key of its partition), the last one ending at ``max_key``. ``rows``: each
    partition's estimated rows, in order (one more than ``cuts``), or ``None``."""
    ends = sorted({c for c in cuts if min_key <= c < max_key}) + [max_key]
    out, lo = [], min_key
    for i, hi in enumerate(ends):
        out.append(Partition(i, lo, hi, rows=rows[i] if rows and i < len(rows) else None))
        lo = hi + 1
    return out


#: Spirit's chunker rules: the next size aims at the target time from the recent batches'
#: slow end (the 90th percentile of time per key over the last 10), grows at most 1.5x a
#: step, and shrinks 10x at once when a batch takes 5x the target.
SIZER_WINDOW = 10
SIZER_MAX_GROWTH = 1.5
SIZER_PANIC_FACTOR = 5.0
SIZER_PANIC_SHRINK = 10
#: The slow end is aimed at this share of the target, so that nearly every batch (the 99th
#: percentile, not only the 90th) finishes within it: batch times at a fixed size vary by
#: about +-25 % here (measured on both engines, two partitions; bench/README.md).
SIZER_AIM = 0.7
#: A time-targeted run starts at this many rows (or ``min_rows`` if larger) and grows toward
#: the target at most 1.5x a batch, as pt-online-schema-change (``--chunk-size 1000`` with
#: ``--chunk-time``) and Spirit (a starting chunk of 1,000 rows) do: the first batches probe
#: the table's speed instead of committing ``batch_size`` rows blind (issue 9 measured the
#: first 50,000-row batch as the slowest of the run on both engines).
SIZER_START_ROWS = 1_000


class BatchSizer:
    """Adaptive batch size toward a target batch time (Spirit, pt-online-schema-change's
    ``--chunk-time 0.5``), bounded by ``[min_rows, max_rows]``.

    With a target, the first batch holds ``min(initial, max(min_rows, SIZER_START_ROWS))`` rows;
    each next size is ``SIZER_AIM * target_seconds`` over the p90 of seconds per key of the last
    :data:`SIZER_WINDOW` batches, at most 1.5x the previous size, within ``[min_rows, max_rows]``.

    :param initial: the largest first batch (rows); the first batch itself when ``target_seconds`` is 0.
    :param target_seconds: the time a batch should stay within (s); ``0`` keeps the size fixed.
    :param min_rows: floor (rows); :meth:`halve` stops there.
    :param max_rows: ceiling (rows).
    :param start: the first size when given (validation's read-only chunks start at ``initial``).
    """

    def __init__(self, initial: int, target_seconds: float, min_rows: int, max_rows: int,
                 start: int | None = None) -> None:
        self.min_rows = max(1, min(min_rows, initial))
        self.max_rows = max(initial, max_rows)
        first = min(initial, max(self.min_rows, SIZER_START_ROWS)) if start is None else start
        self.size = first if target_seconds > 0 else initial
        self.target_seconds = target_seconds
        self._per_key: list[float] = []

    def feedback(self, keys: int, seconds: float) -> int:
        """Account one batch of ``keys`` keys that took ``seconds``; return the next size."""
        if self.target_seconds <= 0 or keys <= 0:
            return self.size
        if seconds >= SIZER_PANIC_FACTOR * self.target_seconds:
            self.size = max(self.min_rows, self.size // SIZER_PANIC_SHRINK)
            self._per_key.clear()
            return self.size
        self._per_key = (self._per_key + [seconds / keys])[-SIZER_WINDOW:]
        ordered = sorted(self._per_key)
        p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
        ideal = SIZER_AIM * self.target_seconds / p90 if p90 > 0 else self.max_rows
        self.size = int(max(self.min_rows, min(self.max_rows, ideal, self.size * SIZER_MAX_GROWTH)))
        return self.size

    def halve(self) -> bool:
        """Halve the size after a statement timeout (GitLab splits a timing-out batch); ``False``
        when already at the floor."""
        if self.size <= self.min_rows:
            return False
        self.size = max(self.min_rows, self.size // 2)
        self._per_key.clear()
        return True


class Chunker(Protocol):
    """Hands out the chunks of one partition, resumable from a watermark."""

    def open_at_watermark(self, watermark: int) -> None:
        """Resume after ``watermark`` (the last key already copied)."""

    def next(self, conn: Any) -> Chunk | None:
        """The next chunk, read inside the caller's transaction; ``None`` when done."""

    def feedback(self, chunk: Chunk, rows: int, seconds: float) -> None:
        """How long a chunk took (for time-targeted sizing)."""

    @property
    def watermark(self) -> int:
        """The last key of the last chunk handed out and committed."""


class IntegerKeysetChunker:
    """Keyset chunker over a unique integer key.

    Each chunk ends at the ``batch_size``-th key after the watermark, found with one
    index range read (``ORDER BY key LIMIT n``), so a chunk holds at most
    ``batch_size`` rows however sparse the keys are, and a dense table costs the same.

    :param db: the database holding ``table``.
    :param table: the table whose key is chunked (the source).
    :param key: its unique integer key column.
    :param partition: the key range to cover.
    :param batch_size: rows per chunk.
    """

    def __init__(
        self, db: Database, table: str, key: str, partition: Partition, batch_size: int,
        sizer: BatchSizer | None = None,
    ) -> None:
        self.db = db
        self.partition = partition
        self.sizer = sizer or BatchSizer(batch_size, 0, batch_size, batch_size)
        self._sql = db.dialect.chunk_end_sql(table, key, db.schema)
        self._watermark = partition.lo - 1

    @property
    def batch_size(self) -> int:
        """The current batch size (rows), adapted by :attr:`sizer`."""
        return self.sizer.size

    def open_at_watermark(self, watermark: int) -> None:
        self._watermark = watermark

    def next(self, conn: Any) -> Chunk | None:
        if self._watermark >= self.partition.hi:
            return None
        rows = self.db.query(conn, self._sql, (self._watermark, self.partition.hi, self.batch_size))
        end, keys = rows[0] if rows else (None, 0)
        return None if end is None else Chunk(self._watermark, int(end), int(keys))

    def feedback(self, chunk: Chunk, rows: int, seconds: float) -> None:
        self.sizer.feedback(chunk.keys, seconds)

    def advance(self, chunk: Chunk) -> None:
        """Record that ``chunk`` committed: the watermark moves to its last key."""
        self._watermark = chunk.hi

    @property
    def watermark(self) -> int:
        return self._watermark
