"""Stop when told: the engine's side of Airflow's ``on_kill``.

Airflow 3's task runner answers SIGTERM (a task marked failed in the UI, a worker's warm
shutdown) by calling the operator's ``on_kill()`` from its signal handler and then going on with
whatever the task was doing; an ``execution_timeout`` raises inside the task and then calls
``on_kill()``. Only the supervisor's later SIGKILL ends a task that ignores both, and under
``airflow dags test`` there is no supervisor. So a task must stop by itself when told:

- :meth:`Cancel.cancel` (thread-safe, cheap enough for a signal handler) sets the flag and
  cancels the statement each registered session is running, from a fresh connection, as the
  critical-load watchdog does (:meth:`~zdt_backfill.db.Database.cancel_statement`: PostgreSQL
  ``pg_cancel_backend``, MySQL ``KILL QUERY``; the statement and its transaction roll back, the
  checkpoint stays at the last committed batch);
- every wait of the batch loop (a throttle hold, a retry's backoff) sleeps in :meth:`Cancel.sleep`,
  which returns at once when told and raises :class:`~zdt_backfill.errors.CancelledError`;
- the loop checks :meth:`Cancel.check` before each batch, and an error met after the cancel is
  the cancel's (never a statement timeout to halve the batch for, nor a transient error to retry).

A statement a driver runs in C without looking at signals (mysqlclient's) lets the signal
handler run only when it returns: on MySQL a batch in flight ends first (bounded by its statement
timeout), then nothing more runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from typing import Any, Callable, Iterator

from .errors import CancelledError

log = logging.getLogger(__name__)

class Cancel:
    """A task's stop flag and the sessions whose statements a stop cancels."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sessions: dict[int, tuple[Any, Callable[[], Any]]] = {}
        self._tokens = itertools.count()
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str) -> int:
        """Stop: set the flag, then cancel the statement of every registered session.

        :returns: the number of sessions a cancel was sent to. Never raises (a failed cancel is
            logged: the flag alone still stops the loop at its next check).
        """
        self.reason = reason
        self._event.set()
        with self._lock:
            sessions = list(self._sessions.values())
        sent = 0
        for db, current in sessions:
            session_id = current()
            if session_id is None:
                continue
            try:
                db.cancel_statement(session_id, "zdt_backfill:stop")
                sent += 1
                log.warning("stop: cancelled the statement in flight of session %s (%s)", session_id, reason)
            except Exception as exc:  # noqa: BLE001 - the flag still stops the loop
                log.error("stop: could not cancel the statement of session %s: %s", session_id, exc)
        return sent

    def check(self) -> None:
        """:raises CancelledError: the task was told to stop."""
        if self._event.is_set():
            raise CancelledError(f"told to stop: {self.reason}")

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if told to stop.

        :raises CancelledError: the task was told to stop (before or during the sleep).
        """
        if self._event.wait(max(0.0, seconds)):
            self.check()

    @contextlib.contextmanager
    def statement(self, db: Any, session_id: Callable[[], Any]) -> Iterator[None]:
        """Register a session of ``db`` for the block (``session_id()``: its server-side id, read
        when a stop comes; ``None``: no session yet): a stop meanwhile cancels its statement."""
        token = next(self._tokens)
        with self._lock:
            self._sessions[token] = (db, session_id)
        try:
            yield
        finally:
            with self._lock:
                self._sessions.pop(token, None)

    def raise_if_cancelled(self, exc: BaseException) -> None:
        """An error met after a stop is the stop's: raise :class:`CancelledError` from it.

        :raises CancelledError: the task was told to stop.
        """
        if self._event.is_set():
            raise CancelledError(f"told to stop: {self.reason}") from exc


class StatementDeadline:
    """A client-side statement timeout: after ``seconds`` the statement of ``session_id()`` is
    cancelled (``KILL QUERY``) and :attr:`fired` is set. For a server that bounds no
    ``INSERT ... SELECT`` itself: Oracle MySQL's ``max_execution_time`` covers read-only
    ``SELECT`` s only (MariaDB's ``max_statement_time`` and PostgreSQL's ``statement_timeout``
    cover every statement, and need none of this).

    Use as a context manager around one statement; the timer is a daemon thread.
    """

    def __init__(self, db: Any, session_id: Callable[[], Any], seconds: float) -> None:
        self.db, self.session_id, self.seconds = db, session_id, seconds
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        session_id = self.session_id()
        if session_id is None:
            return
        self.fired = True
        log.warning("statement timeout: the statement of session %s ran past %.1fs: cancelling it", session_id,
                    self.seconds)
        try:
            self.db.cancel_statement(session_id, "zdt_backfill:statement-timeout")
        except Exception as exc:  # noqa: BLE001 - the statement then ends by itself
            log.error("statement timeout: could not cancel session %s: %s", session_id, exc)

    def __enter__(self) -> "StatementDeadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
