"""The lease keeper: a background thread that renews a run's lease while a task works
(the lease itself, its expiry and the takeover rules are :mod:`zdt_backfill.state.runstate`'s)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from . import runstate

if TYPE_CHECKING:
    from .runstate import RunHandle

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a run's lease from a background thread while a task works.

    Use as a context manager around the work; :attr:`lost` turns true when a renewal finds
    that the run no longer holds the lock (the work should stop at its next batch).

    :param handle: the run.
    :param interval: seconds between renewals (:data:`~zdt_backfill.state.runstate.HEARTBEAT_SECONDS`).
    :param lease_seconds: expiry set by each renewal (:data:`~zdt_backfill.state.runstate.LEASE_SECONDS`).
    """

    def __init__(self, handle: "RunHandle", interval: float | None = None, lease_seconds: float | None = None) -> None:
        self.handle = handle
        self.interval = runstate.HEARTBEAT_SECONDS if interval is None else interval
        self.lease_seconds = runstate.LEASE_SECONDS if lease_seconds is None else lease_seconds
        self.lost = False
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="zdt-lease", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.handle.renew(self.lease_seconds):
                    self.renewals += 1
                else:
                    self.lost = True
                    log.error("run %s lost its lease on %s", self.handle.run_id, self.handle.lock_key())
                    return
            except Exception as exc:  # an unreachable primary: the batches will notice too
                log.warning("lease renewal failed (will retry): %s", exc)

    def __enter__(self) -> "LeaseKeeper":
        self.handle.lock_key()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
