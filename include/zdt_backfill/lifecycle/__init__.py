"""The expand/contract lifecycle: the steps of a run and the :class:`~.runner.Runner` that owns them.

==================  ==========================================================================
:mod:`.runner`      the Runner: one method per step, and ``run()``, the whole lifecycle in order
:mod:`.preflight`   read-only checks, the partition plan, then the lease (the first write)
:mod:`.dryrun`      pre-flight plus ``EXPLAIN`` of the batches, writing nothing
:mod:`.dualwrite`   dual-write confirmation
:mod:`.decision`    forward / rollback / hold, pure
:mod:`.contract`    the routing flip and ramp, the soak, the legacy action, the storage reclaim
:mod:`.rollback`    stop, flags back, empty the target, sequences, caches; the staging restore
==================  ==========================================================================
"""

from .runner import (
    APPROVAL_OPTIONS,
    CONTRACT,
    CONTRACT_STEPS,
    HOLD_OPTION,
    ROLL_BACK,
    ROLLBACK_STEPS,
    HeldTooLongError,
    Runner,
)

__all__ = ["APPROVAL_OPTIONS", "CONTRACT", "CONTRACT_STEPS", "HOLD_OPTION", "ROLLBACK_STEPS", "ROLL_BACK",
           "HeldTooLongError", "Runner"]
