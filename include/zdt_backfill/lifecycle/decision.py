"""Forward (contract), rollback, or hold: the decision after validation and repair.

The seed's table rolls back when "foreign key violations, deadlocks, or checksum
mismatches exceed 0.01 %" and on lag or lock timeouts. Taken literally, that destroys a
good copy on signals that only call for a pause. Here:

- **health never destroys**: replica lag, load and unreachable replicas hold the run
  (with a deadline, then ``halted``); they never lead to rollback;
- **transient retries are not errors**: lock waits and deadlocks that a retry got past
  are how the backfill yields to the application; they are reported as yields;
- **errors** are data errors (batches that failed on a constraint, a foreign key or a
  conversion) plus the differences still left after repair;
- **repair, then decide**: zero remaining errors goes forward; a rate above
  ``max_error_rate_pct`` rolls back (the seed's rule); anything in between, or a
  checksum difference that no key explains, holds for a human.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Thresholds

FORWARD = "forward"
ROLLBACK = "rollback"
HOLD = "hold"


@dataclass(frozen=True)
class BranchDecision:
    """``branch`` is ``forward``, ``rollback`` or ``hold``; ``reasons`` say why, in words."""

    branch: str
    reasons: list[str] = field(default_factory=list)
    error_rate_pct: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"branch": self.branch, "reasons": list(self.reasons), "error_rate_pct": self.error_rate_pct}


def error_rate_pct(errors: int, rows: int) -> float:
    """Errors per processed row, in percent (0 when no rows were processed and none failed)."""
    return 100.0 * errors / rows if rows else (100.0 if errors else 0.0)


def decide_branch(
    remaining_mismatches: int,
    data_errors: int,
    rows: int,
    t: Thresholds,
    unexplained_ranges: int = 0,
    checklist_failures: list[str] | None = None,
) -> BranchDecision:
    """Pure branch decision.

    :param remaining_mismatches: rows still missing, different or extra after repair.
    :param data_errors: batches that failed on data during the copy and the repair.
    :param rows: rows processed (the larger of keys scanned and source rows validated).
    :param t: the thresholds (``max_error_rate_pct``, seed default 0.01 %).
    :param unexplained_ranges: ranges whose checksums differ though no differing key was found.
    :param checklist_failures: the validation checklist's failed data items (count parity, NULLs
        left, orphaned foreign keys): they hold the run for a human, never roll it back.
    :returns: the decision with its reasons.
    """
    errors = remaining_mismatches + data_errors
    rate = error_rate_pct(errors, rows)
    detail = f"{remaining_mismatches} row(s) still differing after repair, {data_errors} data error(s), over {rows:,} rows"
    if checklist_failures and not (errors and rate > t.max_error_rate_pct):
        return BranchDecision(HOLD, [f"checklist failed: {f}" for f in checklist_failures] + [detail], rate)
    if unexplained_ranges:
        return BranchDecision(
            HOLD, [f"{unexplained_ranges} range(s) have differing checksums but no differing key was found: "
                   "a human decides", detail], rate,
        )
    if errors == 0:
        return BranchDecision(FORWARD, [f"no difference left after repair and no data error ({rows:,} rows)"], rate)
    if rate > t.max_error_rate_pct:
        return BranchDecision(ROLLBACK, [f"error rate {rate:.4f}% > {t.max_error_rate_pct}%", detail], rate)
    return BranchDecision(
        HOLD, [f"error rate {rate:.4f}% <= {t.max_error_rate_pct}% but not zero: a human decides", detail], rate,
    )
