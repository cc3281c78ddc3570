"""Forward (contract) or rollback, on the seed's thresholds.

The seed's table: *Forward* when checksum match >= 99.99 % and replica lag < 2 s;
*Rollback* when the error rate > 0.01 %, on a lock timeout, or lag > 5 s. We go
forward only when every forward condition holds, and roll back otherwise: a run
that is neither clearly good nor clearly bad is not good enough to contract (a
rollback leaves the legacy schema untouched, a contract may drop it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Thresholds

CONTRACT = "contract"
ROLLBACK = "rollback"


@dataclass(frozen=True)
class BranchDecision:
    branch: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"branch": self.branch, "reasons": list(self.reasons)}


def error_rate_pct(errors: int, rows: int) -> float:
    """Errors per processed row, in percent (0 when no rows were processed)."""
    return 100.0 * errors / rows if rows else (100.0 if errors else 0.0)


def decide_branch(
    match_pct: float,
    count_parity: bool,
    errors: int,
    rows: int,
    lag_seconds: float | None,
    t: Thresholds,
    unexplained_ranges: int = 0,
) -> BranchDecision:
    """Pure branch decision.

    :param match_pct: checksum match (percent of expected rows that are right).
    :param count_parity: source and target row counts are equal.
    :param errors: transient errors met during the backfill (retried batches).
    :param rows: rows processed (keys scanned).
    :param lag_seconds: worst replica lag now (s), ``None`` if a replica is unreachable.
    :param t: the thresholds.
    :param unexplained_ranges: ranges whose checksums differ though no differing key was
        found; any such range rolls back (the checksum cannot vouch for it).
    :returns: ``contract`` with the conditions that held, or ``rollback`` with the ones that failed.
    """
    failed: list[str] = []
    if match_pct < t.min_checksum_match_pct:
        failed.append(f"checksum match {match_pct:.4f}% < {t.min_checksum_match_pct}%")
    if unexplained_ranges:
        failed.append(f"{unexplained_ranges} range(s) with differing checksums and no differing key found")
    if not count_parity and t.min_checksum_match_pct >= 100:
        failed.append("row counts differ")
    rate = error_rate_pct(errors, rows)
    if rate > t.max_error_rate_pct:
        failed.append(f"error rate {rate:.4f}% > {t.max_error_rate_pct}%")
    if lag_seconds is None:
        failed.append("a replica is unreachable (counts as lagging)")
    elif lag_seconds > t.rollback_lag_seconds:
        failed.append(f"replica lag {lag_seconds:.1f}s > {t.rollback_lag_seconds}s")
    elif lag_seconds >= t.forward_max_lag_seconds:
        failed.append(f"replica lag {lag_seconds:.1f}s >= {t.forward_max_lag_seconds}s (forward needs less)")
    if failed:
        return BranchDecision(ROLLBACK, failed)
    return BranchDecision(
        CONTRACT,
        [
            f"checksum match {match_pct:.4f}% >= {t.min_checksum_match_pct}%",
            f"error rate {rate:.4f}% <= {t.max_error_rate_pct}%",
            f"replica lag {lag_seconds or 0:.1f}s < {t.forward_max_lag_seconds}s",
        ],
    )
