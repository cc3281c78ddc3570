"""Checksum validation of the expected projection (source) against the target.

Per validation range (the planned partitions, with the first and last opened to
cover keys the application added since planning), one statement computes row count
and a 64-bit-hash sum of both sides inside the database (see
:meth:`~.dialects.Dialect.checksum_sql`; the technique is pt-table-checksum's
per-chunk ``COUNT(*)`` + hash aggregate). Ranges whose checksums differ are diffed
row by row, still inside the database, which says exactly *which* keys are
missing, different or extra (the lesson of data-diff: a tool that cannot name the
rows leaves users running a second tool). Bisection into sub-ranges for very large
mismatching ranges comes with the validation issue.

Exactness: the source side is the *typed projection* (each expression cast to its
target column's type, from the catalog: :func:`target_casts`), and every value is
hashed and compared through one typed, binary-safe, NULL-safe encoding (see
:meth:`~.dialects.Dialect.encode_value`). A range's checksum and its row diff run in
one read-only REPEATABLE READ transaction (:meth:`~.dialects.Dialect.snapshot_sql`),
so the diff names exactly the rows the checksum counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .chunker import Partition
from .config import RunConfig
from .db import Database
from .dialects import ColumnType, Range

log = logging.getLogger(__name__)

#: Differing keys kept in the report, per kind (at most).
SAMPLE_KEYS = 20


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
            "ranges_checked": len(self.ranges),
            "ranges_mismatched": sum(not r.match for r in self.ranges),
            "ranges_unexplained": self.unexplained_ranges,
            "sample_keys": self.sample_keys,
            "seconds": round(self.seconds, 3),
            "ranges": [r.to_dict() for r in self.ranges],
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
    what :meth:`~.dialects.Dialect.typed_projection` casts the expressions to and what the value
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


def validate(
    config: RunConfig, db: Database, partitions: list[Partition], ranges: list[Range] | None = None
) -> ValidationResult:
    """Compare source projection and target over every range.

    Each range's checksum, and its row diff when the checksums differ, run in one read-only
    REPEATABLE READ transaction (:func:`begin_snapshot`), so the diff's counts are the checksum's.

    :param partitions: the run's partitions; the validation ranges derive from them.
    :param ranges: check only these ranges instead (re-validation after a repair).
    :returns: a :class:`ValidationResult` (counts in rows, ``seconds`` wall time).
    :raises Exception: database errors (a checksum is read-only; nothing to undo).
    """
    c, d = config, db.dialect
    result = ValidationResult()
    started = time.monotonic()
    with db.session() as conn:  # read-only: no lock or statement timeouts of the batch sessions
        casts = target_casts(config, db, conn)
        for rng in ranges if ranges is not None else validation_ranges(partitions):
            sql, params = d.checksum_sql(c.source_table, c.target_table, c.key, c.columns, rng, db.schema, casts)
            begin_snapshot(db, conn)
            try:
                sn, sh, tn, th = db.query(conn, sql, params)[0]
                match = sn == tn and sh == th
                diffs = [] if match else _diff(c, db, conn, rng, casts)  # the same snapshot
            finally:
                conn.rollback()
            rc = RangeChecksum(rng.lo, rng.hi, int(sn), int(tn), match=match)
            if not rc.match:
                for key, kind in diffs:
                    setattr(rc, kind, getattr(rc, kind) + 1)
                    keys = result.sample_keys.setdefault(kind, [])
                    if len(keys) < SAMPLE_KEYS:
                        keys.append(key)
                log.warning(
                    "checksum mismatch in (%s, %s]: missing=%d different=%d extra=%d",
                    rng.lo, rng.hi, rc.missing, rc.different, rc.extra,
                )
            result.add(rc)
    result.seconds = time.monotonic() - started
    log.info(
        "validation: %d source rows, %d target rows, %d mismatched, match %.4f%% in %.1fs",
        result.source_rows, result.target_rows, result.mismatched, result.match_pct, result.seconds,
    )
    return result
