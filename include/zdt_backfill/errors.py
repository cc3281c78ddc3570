"""Exceptions raised by the engine.

The Airflow layer maps :class:`PermanentError` subclasses to ``AirflowFailException``
(no retry can fix them) and lets everything else go through task retries.
"""


class BackfillError(Exception):
    """Base class of every error the engine raises on purpose."""


class PermanentError(BackfillError):
    """An error that a retry cannot fix (bad input, unsafe schema, lost lock)."""


class ConfigError(PermanentError, ValueError):
    """The run configuration (Params/conf) is invalid. Nothing was changed."""


class UnsafeIdentifierError(ConfigError):
    """An identifier is not a plain ASCII SQL name (quotes, semicolons, look-alikes)."""


class PreflightError(PermanentError):
    """A pre-flight check failed. Nothing was changed."""


class ConcurrentRunError(PermanentError):
    """Another run holds the backfill lock on the same target table."""


class CheckpointConflictError(PermanentError):
    """The checkpoint moved under us: another worker is copying the same partition."""


class RunStoppedError(PermanentError):
    """The run was stopped (rollback or takeover) while a partition was copying."""


class BatchError(PermanentError):
    """A batch failed for a reason a retry cannot fix (constraint violation, bad data)."""


class ThrottleTimeoutError(BackfillError):
    """Throttled for longer than allowed (replica lag never came back under the limit)."""


class CancelledError(BackfillError):
    """The task was told to stop (Airflow's ``on_kill``: SIGTERM, *mark failed*, ``execution_timeout``,
    a worker's warm shutdown): the statement in flight was cancelled and rolled back, and the
    checkpoint is where the last committed batch put it. Not permanent: a retry resumes."""


class StatementTimeoutError(BackfillError):
    """A statement ran past its statement timeout and was cancelled by the client
    (:class:`~zdt_backfill.cancel.StatementDeadline`, where the server bounds no DML itself): the
    batch was too big for the time allowed, as a server's statement timeout would say."""
