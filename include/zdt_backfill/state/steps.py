"""The steps table: the run's states, each step with the states it may start from and the state
it enters, and the transitions derived from it (the only rule of the state machine; pgroll's
and Spirit's runners keep theirs as one table too). :class:`~zdt_backfill.state.runstate.RunHandle`
reads it; :mod:`zdt_backfill.state.runstate` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PermanentError

PLANNED, COPYING, HOLDING, CATCHING_UP = "planned", "copying", "holding", "catching_up"
VALIDATING, REPAIRING, AWAITING_APPROVAL = "validating", "repairing", "awaiting_approval"
CONTRACTING, SOAKING, CONTRACTED, ROLLING_BACK, ROLLED_BACK, HALTED = (
    "contracting", "soaking", "contracted", "rolling_back", "rolled_back", "halted",
)
STATES = (
    PLANNED, COPYING, HOLDING, CATCHING_UP, VALIDATING, REPAIRING, AWAITING_APPROVAL,
    CONTRACTING, SOAKING, CONTRACTED, ROLLING_BACK, ROLLED_BACK, HALTED,
)
#: Past the write flip: the application writes the new schema only (the seed's Post-Backfill
#: window), and the new table holds writes that exist nowhere else. Only the contract's steps
#: leave it (the legacy action, the storage reclaim, finish); it is never halted, rolled back,
#: repaired, re-validated, re-copied or taken over (the one-way door).
POST_FLIP = frozenset({SOAKING})
#: Ends of a run: a later run on the table starts afresh from them.
TERMINAL = frozenset({CONTRACTED, ROLLED_BACK})

#: States a run can still act from (every state but the two ends).
LIVE = frozenset(STATES) - TERMINAL


@dataclass(frozen=True)
class Step:
    """One step of a run, as the steps table says it may run.

    :ivar name: the step (a :class:`~zdt_backfill.lifecycle.runner.Runner` method does it).
    :ivar starts_from: the run states it may start from (checked in the database, in the
        transaction that moves the state, right before the step acts).
    :ivar enters: the state it moves the run to; ``None``: it acts within the state it finds.
    :ivar keeps_lease: whether the task running it renews the run's lease while it works
        (pre-flight takes the lease, the report releases it, a diagnosis never holds it).
    :ivar new_run: the step starts a run (pre-flight): it may replace an ended run, a halted
        one or one whose lease expired, and is no transition of the run it replaces.
    """

    name: str
    starts_from: frozenset[str]
    enters: str | None
    keeps_lease: bool = True
    new_run: bool = False


#: The steps table: the only rule of which step may run from which state, and where it takes
#: the run. :data:`TRANSITIONS` is derived from it, and :meth:`RunHandle.step` reads it.
#: Health signals only ever take ``hold`` and ``halt``, never a destructive step; ``stop`` (the
#: rollback) may start from ``holding`` because it follows a human's or the decision's choice,
#: which a health hold does not cancel. From ``soaking`` (past the write flip, :data:`POST_FLIP`)
#: only the contract's own steps start: nothing halts, rolls back, repairs or re-copies there.
STEPS: dict[str, Step] = {s.name: s for s in (
    Step("preflight", LIVE | TERMINAL, PLANNED, keeps_lease=False, new_run=True),
    Step("dual_write", LIVE - POST_FLIP, None),
    Step("copy", frozenset({PLANNED, COPYING, HOLDING, HALTED}), COPYING),
    Step("catch_up", frozenset({PLANNED, COPYING, HOLDING, CATCHING_UP, HALTED}), CATCHING_UP),
    Step("validate", frozenset({CATCHING_UP, HOLDING, VALIDATING, REPAIRING, HALTED}), VALIDATING),
    Step("repair", frozenset({VALIDATING, REPAIRING, HALTED}), REPAIRING),
    Step("decide", frozenset({VALIDATING, HOLDING, HALTED}), VALIDATING),
    Step("hold", frozenset({COPYING, CATCHING_UP, VALIDATING, HOLDING, HALTED}), HOLDING),
    Step("await_approval", frozenset({VALIDATING, AWAITING_APPROVAL, HALTED}), AWAITING_APPROVAL),
    Step("flip_routing", frozenset({VALIDATING, AWAITING_APPROVAL, CONTRACTING, HALTED}), CONTRACTING),
    Step("flip_writes", frozenset({CONTRACTING, SOAKING}), SOAKING),
    Step("legacy_action", frozenset({SOAKING}), None),
    Step("reclaim_storage", frozenset({SOAKING, CONTRACTED}), None),
    Step("finish_contract", frozenset({SOAKING, CONTRACTED}), CONTRACTED),
    Step("stop", frozenset({VALIDATING, AWAITING_APPROVAL, HALTED, HOLDING, ROLLING_BACK}), ROLLING_BACK),
    Step("rollback", frozenset({ROLLING_BACK}), None),
    Step("finish_rollback", frozenset({ROLLING_BACK}), ROLLED_BACK),
    Step("halt", LIVE - POST_FLIP, HALTED),
    Step("diagnose", LIVE | TERMINAL, None, keeps_lease=False),
    Step("report", LIVE | TERMINAL, None, keeps_lease=False),
)}

#: Allowed transitions ``from -> {to}``, derived from :data:`STEPS`. A state may always be
#: re-entered (a cleared task re-runs).
TRANSITIONS: dict[str, frozenset[str]] = {
    state: frozenset(s.enters for s in STEPS.values()
                     if s.enters and not s.new_run and state in s.starts_from and s.enters != state)
    for state in STATES
}


class InvalidTransitionError(PermanentError):
    """The run's state in the database does not allow the requested step."""


class PostFlipError(InvalidTransitionError):
    """A step that would destroy, overwrite or re-copy the new table was asked for after the
    write flip (the post-backfill window): refused, nothing changed."""


def post_flip_refusal(what: str, since: str | None = None) -> str:
    """Why ``what`` is refused past the write flip, in words (the message every refusal carries)."""
    return (
        f"refusing {what}: the write flag is new{f' ({since})' if since else ''}, so the application writes the new "
        "schema only (the post-backfill window) and the new table holds writes that exist nowhere else; a rollback, "
        "repair, re-validation that could repair, read flip or re-copy would destroy or overwrite them. Past the "
        "flip only the contract goes on: resume it (legacy action, reclaim storage, finish) or keep the legacy "
        "schema. The way back after the flip is a revert window that keeps those writes (reverse_columns with "
        "dual_write: trigger), which this run does not have"
    )
