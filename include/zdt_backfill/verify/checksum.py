"""Checksum validation of the expected projection (source) against the target.

Per validation range (the planned partitions, with the first and last opened to
cover keys the application added since planning), one statement computes row count
and a 64-bit-hash sum of both sides inside the database (see
:meth:`~zdt_backfill.dialects.Dialect.checksum_sql`; the technique is pt-table-checksum's
per-chunk ``COUNT(*)`` + hash aggregate). Ranges whose checksums differ are diffed
row by row, still inside the database, which says exactly *which* keys are
missing, different or extra (the lesson of data-diff: a tool that cannot name the
rows leaves users running a second tool). Bisection into sub-ranges for very large
mismatching ranges comes with the validation issue.

Exactness: the source side is the *typed projection* (each expression cast to its
target column's type, from the catalog: :func:`target_casts`), and every value is
hashed and compared through one typed, binary-safe, NULL-safe encoding (see
:meth:`~zdt_backfill.dialects.Dialect.encode_value`). A range's checksum and its row diff run in
one read-only REPEATABLE READ transaction (:meth:`~zdt_backfill.dialects.Dialect.snapshot_sql`),
so the diff names exactly the rows the checksum counted.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..config import RunConfig
from ..copying.chunker import BatchSizer, Partition
from ..db import Database
from ..dialects import ColumnType, Range

log = logging.getLogger(__name__)

#: Differing keys kept in the report, per kind (at most).
SAMPLE_KEYS = 20
#: A differing (sub-)chunk of at most this many rows is diffed row by row; a larger one is split
#: (reladiff's threshold is 16k rows: a row diff of that size is one short statement).
BISECT_ROWS = 16_384
#: Parts a differing chunk is split into, by key value (reladiff uses 32; 16 keeps each re-check short).
BISECT_FANOUT = 16
#: Bounds of the validation chunk (rows), adapted between them toward ``validation_chunk_seconds``.
MIN_CHUNK_ROWS = 1_000
MAX_CHUNK_ROWS = 200_000
#: Rows per random chunk of a sampled validation.
SAMPLE_CHUNK_ROWS = 1_000
#: Parallel range workers at most (besides the plan's partition count).
MAX_WORKERS = 8
#: Progress is logged at most this often (s).
PROGRESS_LOG_SECONDS = 10.0
#: Watermark/end stand-ins for an open range end in the chunk-end query (BIGINT bounds).
KEY_MIN, KEY_MAX = -(2**63), 2**63 - 1


@dataclass
class RangeChecksum:
    lo: int | None
    hi: int | None
    source_rows: int
    target_rows: int
    match: bool
    missing: int = 0
    different: int = 0
    extra: int = 0

    @property
    def unexplained(self) -> bool:
        """Checksums differ but the diff named no key: never taken as a match."""
        return not self.match and not (self.missing or self.different or self.extra)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RangeChecksum":
        return cls(**{k: d[k] for k in ("lo", "hi", "source_rows", "target_rows", "match", "missing", "different", "extra")})


@dataclass
class ValidationResult:
    """Totals over all ranges; ``match_pct`` is the share of expected rows that are right."""

    source_rows: int = 0
    target_rows: int = 0
    missing: int = 0
    different: int = 0
    extra: int = 0
    ranges: list[RangeChecksum] = field(default_factory=list)
    sample_keys: dict[str, list[Any]] = field(default_factory=dict)
    seconds: float = 0.0
    chunks_checked: int = 0
    subchunks_checked: int = 0
    chunk_rows_max: int = 0
    rechecked_keys: int = 0
    cleared_by_recheck: int = 0
    source: str = "primary"
    mode: str = "full"
    sampling: dict[str, Any] | None = None
    checklist: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mismatched(self) -> int:
        return self.missing + self.different + self.extra

    @property
    def match_pct(self) -> float:
        if self.source_rows == 0:
            return 100.0 if self.mismatched == 0 else 0.0
        return max(0.0, 100.0 * (1 - self.mismatched / self.source_rows))

    @property
    def unexplained_ranges(self) -> int:
        return sum(r.unexplained for r in self.ranges)

    @property
    def count_parity(self) -> bool:
        return self.source_rows == self.target_rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "count_parity": self.count_parity,
            "missing": self.missing,
            "different": self.different,
            "extra": self.extra,
            "mismatched": self.mismatched,
            "match_pct": round(self.match_pct, 6),
            "ranges_checked": self.chunks_checked,
            "ranges_mismatched": sum(not r.match for r in self.ranges),
            "ranges_unexplained": self.unexplained_ranges,
            "sample_keys": self.sample_keys,
            "seconds": round(self.seconds, 3),
            "ranges": [r.to_dict() for r in self.ranges],
            "chunks_checked": self.chunks_checked,
            "subchunks_checked": self.subchunks_checked,
            "chunk_rows_max": self.chunk_rows_max,
            "rechecked_keys": self.rechecked_keys,
            "cleared_by_recheck": self.cleared_by_recheck,
            "source": self.source,
            "mode": self.mode,
            "sampling": self.sampling,
            "checklist": self.checklist,
        }

    def add(self, rc: RangeChecksum) -> None:
        """Add one range's outcome to the totals."""
        self.ranges.append(rc)
        self.source_rows += rc.source_rows
        self.target_rows += rc.target_rows
        self.missing += rc.missing
        self.different += rc.different
        self.extra += rc.extra


def validation_ranges(partitions: list[Partition]) -> list[Range]:
    """Partitions as half-open ranges, the outer ends unbounded; one open range if none."""
    if not partitions:
        return [Range(None, None)]
    ranges = [Range(p.lo - 1, p.hi) for p in partitions]
    ranges[0] = Range(None, ranges[0].hi)
    ranges[-1] = Range(ranges[-1].lo, None)
    return ranges


def target_casts(config: RunConfig, db: Database, conn: Any) -> dict[str, ColumnType]:
    """``{target column: ColumnType}`` of the run's columns, read from the catalog (both engines):
    what :meth:`~zdt_backfill.dialects.Dialect.typed_projection` casts the expressions to and what the value
    encodings go by. Ends the read transaction."""
    rows = db.query(conn, *db.dialect.column_types_sql(config.target_table, db.schema))
    conn.rollback()
    types = db.dialect.target_types(rows)
    folded = {name.lower(): t for name, t in types.items()}  # MySQL column names are case-insensitive
    return {c: types.get(c) or folded[c.lower()] for c in config.columns if c in types or c.lower() in folded}


def differing_keys(
    config: RunConfig, db: Database, conn: Any, rng: Range, casts: dict[str, ColumnType]
) -> list[tuple[Any, str]]:
    """Every ``(key, kind)`` that differs in a range, read now (``missing``, ``different``, ``extra``)."""
    rows = _diff(config, db, conn, rng, casts)
    conn.rollback()
    return rows


def _diff(config: RunConfig, db: Database, conn: Any, rng: Range, casts: dict[str, ColumnType]) -> list[tuple[Any, str]]:
    c = config
    sql, params = db.dialect.diff_sql(
        c.source_table, c.target_table, c.key, c.columns, rng, db.schema, c.mode == "copy", casts
    )
    return [(r[0], r[1]) for r in db.query(conn, sql, params)]


def begin_snapshot(db: Database, conn: Any) -> None:
    """End the connection's transaction and open a read-only REPEATABLE READ one whose snapshot
    is taken now (PostgreSQL ``SET TRANSACTION``; MySQL ``START TRANSACTION WITH CONSISTENT
    SNAPSHOT``). End it with ``conn.rollback()``."""
    conn.rollback()
    for sql in db.dialect.snapshot_sql():
        db.execute(conn, sql)


def sample_size(confidence: float, detect_pct: float) -> int:
    """Rows to sample to see at least one differing row with probability ``confidence`` when
    ``detect_pct`` percent of the rows differ: ``n = ceil(ln(1 - confidence) / ln(1 - p))``
    (the zero-failure sample of acceptance sampling; 69,075 rows for 99.9 % and 0.01 %).

    :raises ValueError: ``confidence`` not in (0, 1) or ``detect_pct`` not in (0, 100).
    """
    if not 0 < confidence < 1 or not 0 < detect_pct < 100:
        raise ValueError(f"confidence must be in (0, 1) and detect_pct in (0, 100), got {confidence}, {detect_pct}")
    return math.ceil(math.log(1 - confidence) / math.log(1 - detect_pct / 100))


@dataclass
class _Leaf:
    """A (sub-)chunk whose checksum differed, small enough to be diffed row by row."""

    rng: Range
    source_rows: int
    target_rows: int
    diffs: list[tuple[Any, str]]


@dataclass
class _Progress:
    """Counters shared by the partition workers (under ``lock``), logged every 10 s at most."""

    total_rows: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: int = 0
    chunks: int = 0
    subchunks: int = 0
    chunk_rows: list[int] = field(default_factory=list)
    source_rows: int = 0
    target_rows: int = 0
    leaves: list[_Leaf] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)

    def chunk_done(self, source_rows: int, target_rows: int) -> None:
        with self.lock:
            self.chunks += 1
            self.rows += source_rows
            self.chunk_rows.append(max(source_rows, target_rows))
            self.source_rows += source_rows
            self.target_rows += target_rows
            now = time.monotonic()
            if now - self.last_log >= PROGRESS_LOG_SECONDS:
                self.last_log = now
                rate = self.rows / max(now - self.started, 1e-9)
                left = max(self.total_rows - self.rows, 0)
                log.info("validation: %d rows checked in %d chunk(s), %.0f rows/s, ETA %.0fs",
                         self.rows, self.chunks, rate, left / rate if rate else 0.0)


class _Checker:
    """Checksums the chunks of validation ranges on one connection, bisecting the ones that differ."""

    def __init__(self, config: RunConfig, db: Database, conn: Any, casts: dict[str, ColumnType],
                 progress: _Progress, gate: Any) -> None:
        self.c, self.db, self.conn, self.casts, self.progress, self.gate = config, db, conn, casts, progress, gate

    def checksum(self, rng: Range) -> tuple[int, int, bool, list[tuple[Any, str]] | None]:
        """``(source_rows, target_rows, match, diffs)`` of a range in one fresh snapshot; ``diffs``
        (the row diff, in the same snapshot) when it differs and holds at most :data:`BISECT_ROWS` rows."""
        c, d = self.c, self.db.dialect
        sql, params = d.checksum_sql(c.source_table, c.target_table, c.key, c.columns, rng, self.db.schema, self.casts)
        begin_snapshot(self.db, self.conn)
        try:
            sn, sh, tn, th = self.db.query(self.conn, sql, params)[0]
            sn, tn = int(sn), int(tn)
            match = sn == tn and sh == th
            diffs = None
            if not match and max(sn, tn) <= BISECT_ROWS:
                diffs = _diff(c, self.db, self.conn, rng, self.casts)
        finally:
            self.conn.rollback()
        return sn, tn, match, diffs

    def walk(self, rng: Range, sizer: BatchSizer) -> None:
        """Check ``rng`` in keyset chunks whose ends come from the source's key index; the last chunk
        reaches the range's end, so target keys above the source's last key are covered."""
        c, d = self.c, self.db.dialect
        end_sql = d.chunk_end_sql(c.source_table, c.key, self.db.schema)
        lo = rng.lo
        while True:
            rows = self.db.query(self.conn, end_sql, (KEY_MIN if lo is None else lo,
                                                      KEY_MAX if rng.hi is None else rng.hi, sizer.size))
            self.conn.rollback()
            end, keys = rows[0] if rows else (None, 0)
            last = end is None or int(keys) < sizer.size or (rng.hi is not None and int(end) >= rng.hi)
            chunk = Range(lo, rng.hi if last else int(end))
            self.check_chunk(chunk, sizer)
            if last:
                return
            lo = chunk.hi

    def check_chunk(self, chunk: Range, sizer: BatchSizer | None) -> None:
        if self.gate is not None:
            self.gate()
        t0 = time.monotonic()
        sn, tn, match, diffs = self.checksum(chunk)
        if sizer is not None:
            sizer.feedback(max(sn, tn, 1), time.monotonic() - t0)
        self.progress.chunk_done(sn, tn)
        if not match:
            self.differs(chunk, sn, tn, diffs)

    def differs(self, rng: Range, sn: int, tn: int, diffs: list[tuple[Any, str]] | None) -> None:
        """A range whose checksum differs: diffed already (small), or split :data:`BISECT_FANOUT`
        ways by key value and each part checked again (reladiff's bisection)."""
        if diffs is not None:
            with self.progress.lock:
                self.progress.leaves.append(_Leaf(rng, sn, tn, diffs))
            return
        c, d = self.c, self.db.dialect
        sql, params = d.key_span_sql(c.source_table, c.target_table, c.key, rng, self.db.schema)
        kmin, kmax = self.db.query(self.conn, sql, params)[0]
        self.conn.rollback()
        if kmin is None:  # emptied since: nothing left to name
            return
        a = int(kmin) - 1 if rng.lo is None else rng.lo
        b = int(kmax) if rng.hi is None else rng.hi
        if b - a <= 1:
            parts = [rng]
        else:
            n = min(BISECT_FANOUT, b - a)
            cuts = sorted({a + (b - a) * i // n for i in range(1, n)})
            bounds = [rng.lo, *cuts, rng.hi]
            parts = [Range(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
        for part in parts:
            with self.progress.lock:
                self.progress.subchunks += 1
            sn2, tn2, match, diffs2 = self.checksum(part)
            if match:
                continue
            if diffs2 is None and len(parts) == 1:  # one key wide: diff it whatever its size
                diffs2 = differing_keys(c, self.db, self.conn, part, self.casts)
            self.differs(part, sn2, tn2, diffs2)


def _random_chunks(config: RunConfig, db: Database, conn: Any, rows: int, rng: random.Random) -> list[Range]:
    """Keyset chunks of :data:`SAMPLE_CHUNK_ROWS` source rows starting at keys drawn uniformly over
    ``[min key, max key]`` of the source, enough of them to cover ``rows`` rows."""
    c, d = config, db.dialect
    sql, params = d.key_bounds_sql(c.source_table, c.key, db.schema)
    kmin, kmax, _ = db.query(conn, sql, params)[0]
    conn.rollback()
    if kmin is None:
        return []
    end_sql = d.chunk_end_sql(c.source_table, c.key, db.schema)
    out = []
    for _ in range(math.ceil(rows / SAMPLE_CHUNK_ROWS)):
        w = rng.randint(int(kmin) - 1, int(kmax) - 1)
        end, _keys = db.query(conn, end_sql, (w, int(kmax), SAMPLE_CHUNK_ROWS))[0]
        conn.rollback()
        if end is not None:
            out.append(Range(w, int(end)))
    return out


def validate(
    config: RunConfig, db: Database, partitions: list[Partition], ranges: list[Range] | None = None, *,
    read_db: Database | None = None, gate: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep, on_recheck: Callable[[], None] | None = None,
    seed: int | None = None,
) -> ValidationResult:
    """Compare source projection and target over every range, chunk by chunk.

    1. **Chunks.** Each validation range (a partition, the outer ones open) is walked in keyset
       chunks (ends from the source's key index, :meth:`~zdt_backfill.dialects.Dialect.chunk_end_sql`), each
       one checksum statement in its own short REPEATABLE READ snapshot (:func:`begin_snapshot`),
       sized toward ``validation_chunk_seconds`` (pt-table-checksum's ``--chunk-time 0.5``) by a
       :class:`~zdt_backfill.copying.chunker.BatchSizer` between :data:`MIN_CHUNK_ROWS` and :data:`MAX_CHUNK_ROWS`.
       Ranges run in parallel, one thread and connection each, at most one per partition.
       ``validation: sampled`` checks random chunks instead (:func:`sample_size`).
    2. **Bisection.** A chunk whose checksum differs is split :data:`BISECT_FANOUT` ways by key
       value and each part checked again, recursively, until a part holds at most
       :data:`BISECT_ROWS` rows; its row diff runs in the snapshot of its checksum (reladiff's
       bisection; it uses 32 ways and 16k rows).
    3. **Re-check.** After ``validation_recheck_seconds`` every differing part is diffed again on
       the primary in a fresh snapshot; only keys differing both times count (a dual-write in
       flight at the first read is no mismatch). ``cleared_by_recheck`` says how many were cleared.

    :param partitions: the run's partitions; the validation ranges derive from them.
    :param ranges: check only these ranges instead (re-validation after a repair).
    :param read_db: where the chunk checksums run (a caught-up replica); ``db`` when ``None``.
        The re-check always reads ``db`` (the primary).
    :param gate: called before each chunk; blocks while the run's lag/load gate holds (a
        :meth:`~zdt_backfill.signals.throttler.Throttler.before_batch`), raises to stop.
    :param sleep: the wait before the re-check (tests pass a fake).
    :param on_recheck: called right before the re-check (tests: a write landing meanwhile).
    :param seed: seed of the sample's random chunks (``validation: sampled``).
    :returns: a :class:`ValidationResult`: totals (rows) over every chunk checked, the differing
        parts in ``ranges``, ``seconds`` wall time.
    :raises Exception: database errors and the gate's errors (a checksum is read-only; nothing to undo).
    """
    c = config
    started = time.monotonic()
    reader = read_db or db
    result = ValidationResult(source="replica" if reader is not db else "primary", mode=c.validation)
    with db.session() as conn:  # read-only: no lock or statement timeouts of the batch sessions
        casts = target_casts(config, db, conn)
        work = ranges if ranges is not None else validation_ranges(partitions)
        if c.validation == "sampled" and ranges is None:
            n = sample_size(c.validation_confidence, c.validation_detect_pct)
            work = _random_chunks(c, db, conn, n, random.Random(seed))
            result.sampling = {"method": f"{len(work)} keyset chunk(s) of {SAMPLE_CHUNK_ROWS} source rows from keys "
                                         "drawn uniformly over [min key, max key]",
                               "sample_rows": n, "confidence": c.validation_confidence,
                               "detect_pct": c.validation_detect_pct}
    progress = _Progress(total_rows=_estimate(c, reader))
    lock = threading.Lock()

    def gated() -> None:
        if gate is not None:
            with lock:  # one gate (its probe connections) shared by the workers
                gate()

    def run(rngs: list[Range]) -> None:
        with reader.session() as rconn:
            checker = _Checker(c, reader, rconn, casts, progress, gated)
            initial = max(MIN_CHUNK_ROWS, min(c.batch_size, MAX_CHUNK_ROWS))
            for rng in rngs:
                if result.sampling:
                    checker.check_chunk(rng, None)
                else:
                    checker.walk(rng, BatchSizer(initial, c.validation_chunk_seconds, MIN_CHUNK_ROWS, MAX_CHUNK_ROWS,
                                                    start=initial))

    workers = max(1, min(len(work), len(partitions) or 1, MAX_WORKERS))
    groups = [work[i::workers] for i in range(workers)]
    if workers == 1:
        run(work)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="zdt-validate") as pool:
            for f in [pool.submit(run, g) for g in groups]:
                f.result()
    result.source_rows, result.target_rows = progress.source_rows, progress.target_rows
    result.chunks_checked, result.subchunks_checked = progress.chunks, progress.subchunks
    result.chunk_rows_max = max(progress.chunk_rows, default=0)
    if progress.leaves:
        _recheck(c, db, casts, progress.leaves, result, sleep, on_recheck)
    result.seconds = time.monotonic() - started
    log.info(
        "validation: %d source rows, %d target rows in %d chunk(s) (+%d bisected), %d mismatched "
        "(%d cleared by the re-check), match %.4f%% in %.1fs",
        result.source_rows, result.target_rows, result.chunks_checked, result.subchunks_checked, result.mismatched,
        result.cleared_by_recheck, result.match_pct, result.seconds,
    )
    return result


def _estimate(config: RunConfig, db: Database) -> int:
    try:
        with db.session() as conn:
            sql, params = db.dialect.rows_estimate_sql(config.source_table, db.schema)
            return int(db.query(conn, sql, params)[0][0] or 0)
    except Exception:  # an estimate for the ETA only
        return 0


def _recheck(c: RunConfig, db: Database, casts: dict[str, ColumnType], leaves: list[_Leaf], result: ValidationResult,
             sleep: Callable[[float], None], on_recheck: Callable[[], None] | None) -> None:
    """Diff every differing part again on the primary after ``validation_recheck_seconds``, each in
    a fresh snapshot with its checksum; keys differing both times count."""
    first = sum(len(leaf.diffs) for leaf in leaves)
    sleep(c.validation_recheck_seconds)
    if on_recheck is not None:
        on_recheck()
    with db.session() as conn:
        checker = _Checker(c, db, conn, casts, _Progress(0), None)
        for leaf in sorted(leaves, key=lambda x: (x.rng.lo is not None, x.rng.lo or 0)):
            sn, tn, match, now = checker.checksum(leaf.rng)
            if not match and now is None:  # grew past the diff threshold meanwhile: diff it anyway
                now = differing_keys(c, db, conn, leaf.rng, casts)
            before = {k for k, _ in leaf.diffs}
            still = [(k, kind) for k, kind in (now or []) if k in before]
            rc = RangeChecksum(leaf.rng.lo, leaf.rng.hi, sn, tn, match=match or (not still and bool(now)))
            for key, kind in still:
                setattr(rc, kind, getattr(rc, kind) + 1)
                keys = result.sample_keys.setdefault(kind, [])
                if len(keys) < SAMPLE_KEYS:
                    keys.append(key)
            if not rc.match:
                log.warning("checksum mismatch in (%s, %s]: missing=%d different=%d extra=%d",
                            rc.lo, rc.hi, rc.missing, rc.different, rc.extra)
                result.ranges.append(rc)
            result.missing += rc.missing
            result.different += rc.different
            result.extra += rc.extra
    for keys in result.sample_keys.values():
        keys.sort()
    result.rechecked_keys = first
    result.cleared_by_recheck = max(0, first - result.mismatched)


def merge_revalidation(last: dict[str, Any], bad: list[RangeChecksum], again: ValidationResult) -> dict[str, Any]:
    """The validation after a repair: ``last`` (the validation's dict) with the repaired ranges'
    counts replaced by the re-validation's (``again``, over exactly the ``bad`` ranges), and the
    differences those ranges still hold.

    :returns: a validation dict like :meth:`ValidationResult.to_dict`'s, with ``after_repair``.
    """
    out = dict(last)
    for side in ("source_rows", "target_rows"):  # the repaired parts' counts, replaced
        out[side] = int(out.get(side, 0)) - sum(getattr(r, side) for r in bad) + getattr(again, side)
    for kind in ("missing", "different", "extra"):  # only the differing parts had differences
        out[kind] = getattr(again, kind)
    out["mismatched"] = again.mismatched
    merged = ValidationResult(source_rows=out["source_rows"], target_rows=out["target_rows"],
                              missing=again.missing, different=again.different, extra=again.extra)
    out.update({"count_parity": merged.count_parity, "match_pct": round(merged.match_pct, 6),
                "ranges": [r.to_dict() for r in again.ranges], "ranges_mismatched": len(again.ranges),
                "ranges_unexplained": again.unexplained_ranges, "sample_keys": again.sample_keys,
                "seconds": round(again.seconds, 3), "cleared_by_recheck": again.cleared_by_recheck,
                "rechecked_keys": again.rechecked_keys})
    out["after_repair"] = True
    return out
