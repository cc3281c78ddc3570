"""The seed's 1 % ramp: reads to the new schema progressively, watched, then 100 % or back.

The seed's last validation step (``optimizing-backfill-scripts``) is the rule this module
implements: *"Feature flag routing: Enable new schema version at 1% traffic. Monitor error
rates ... Roll back flag immediately if 5xx rate exceeds 0.1%."* That is progressive
delivery with a feature flag (a canary): expose a small share of reads to the new schema,
watch a health signal for a window, then either go to 100 % or flip back.

:func:`ramp`: flag to ``("new", ramp_percent)``; read the signal every ``poll_seconds`` for
``watch_seconds``; any reading above ``max_error_rate_pct`` (default 0.1, the seed's) or
unreadable flips the flag back to ``LEGACY`` at once and the result is ``ok=False`` (the caller
holds the run); otherwise the flag goes to ``NEW`` (100 %).

Units: percentages are percent (``0.1`` means 0.1 %, not 10 %), durations are seconds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError
from ..fields import default_of
from ..signals.errorsignal import ErrorSignal, _number
from .flags import LEGACY, NEW, FlagStore, FlagValue, _check_flag

log = logging.getLogger(__name__)

#: The seed's thresholds: enable at 1 % of traffic, roll back above 0.1 % 5xx.
DEFAULT_RAMP_PERCENT = default_of("ramp_percent")
DEFAULT_MAX_ERROR_RATE_PCT = default_of("max_5xx_rate_pct")


# ---------------------------------------------------------------------- the ramp
@dataclass
class RampResult:
    """What :func:`ramp` did.

    :ivar ok: the flag ended at ``NEW`` (100 %).
    :ivar reason: why, in words (``"5xx rate 0.5% > 0.1% at 1% of reads"``).
    :ivar readings: ``(seconds since the ramp step, 5xx rate in percent)``; ``nan`` = unreadable.
    :ivar final: the flag's value at the end (``NEW`` or ``LEGACY``).
    :ivar changes: every flag change made, ``{"from": ..., "to": ..., "at": seconds}``.
    """

    ok: bool
    reason: str
    readings: list[tuple[float, float]] = field(default_factory=list)
    final: FlagValue = LEGACY
    flag: str = ""
    store: str = ""
    signal: str | None = None
    ramp_percent: int = DEFAULT_RAMP_PERCENT
    max_error_rate_pct: float = DEFAULT_MAX_ERROR_RATE_PCT
    watch_seconds: float = 0.0
    changes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: readings as ``[[seconds_since_start, pct], ...]`` (``pct`` is ``None``
        for an unreadable reading, JSON has no NaN), ``final`` as ``{"path", "percent"}``."""
        return {
            "ok": self.ok, "reason": self.reason,
            "readings": [[round(t, 3), None if math.isnan(p) else p] for t, p in self.readings],
            "final": self.final.to_dict(), "flag": self.flag, "store": self.store, "signal": self.signal,
            "ramp_percent": self.ramp_percent, "max_error_rate_pct": self.max_error_rate_pct,
            "watch_seconds": self.watch_seconds, "changes": list(self.changes),
        }


def _fmt(x: float) -> str:
    return f"{x:g}"


def ramp(
    store: FlagStore,
    flag: str,
    run_id: str,
    signal: ErrorSignal | None,
    *,
    ramp_percent: int = DEFAULT_RAMP_PERCENT,
    watch_seconds: float = default_of("ramp_watch_minutes") * 60,
    max_error_rate_pct: float = DEFAULT_MAX_ERROR_RATE_PCT,
    poll_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: logging.Logger = log,
) -> RampResult:
    """The seed's ramp: ``ramp_percent`` % of reads on the new schema, watched, then 100 % or back.

    1. Set the flag to ``FlagValue("new", ramp_percent)``.
    2. Read ``signal`` at once and then every ``poll_seconds`` until ``watch_seconds`` have
       passed (the last reading is taken at the end of the window; with ``watch_seconds == 0``
       exactly one reading is taken).
    3. The first reading above ``max_error_rate_pct`` (percent, ``0.1`` = 0.1 %) or unreadable
       (``nan``, an exception from ``read``, a negative number) sets the flag back to
       ``LEGACY`` immediately and returns ``ok=False``: the caller holds the run.
    4. Otherwise the flag goes to ``NEW`` (100 %) and the result is ``ok=True``.

    **Unwatched ramp.** With ``signal=None`` nothing is measured: a warning is logged, the
    ramp step is held for ``watch_seconds`` (which still gives a human watching dashboards a
    window to act) and the flag then goes to 100 % with ``ok=True`` and a reason saying it
    was unwatched.

    **Interrupted watch.** If anything else raises during the watch (the task is killed or
    times out, ``sleep`` raises), the flag is set back to ``LEGACY`` before the exception
    propagates: a watch that did not finish proved nothing.

    Every flag change is logged before it is made, with the old and the new value.
    ``clock``/``sleep`` are injectable for tests (``clock`` returns seconds).

    :raises ConfigError: ``ramp_percent`` not an integer 1-100, ``watch_seconds`` < 0,
        ``poll_seconds`` <= 0 or ``max_error_rate_pct`` outside 0-100.
    :raises Exception: the store's error when a flag cannot be set (the first step, the
        rollback or the final 100 %); a failed rollback is logged as an error first. When the
        ramp step itself fails, the previous value (``LEGACY`` if none) is set again, best
        effort, before the error propagates (the store may have applied the step anyway).
    """
    _check_flag(flag)
    if isinstance(ramp_percent, bool) or not isinstance(ramp_percent, int) or not 1 <= ramp_percent <= 100:
        raise ConfigError(f"ramp_percent must be an integer 1-100, got {ramp_percent!r}")
    if not watch_seconds >= 0:
        raise ConfigError(f"watch_seconds must be >= 0, got {watch_seconds!r}")
    if not poll_seconds > 0:
        raise ConfigError(f"poll_seconds must be > 0, got {poll_seconds!r}")
    if not 0 <= max_error_rate_pct <= 100:
        raise ConfigError(f"max_error_rate_pct must be a percent 0-100, got {max_error_rate_pct!r}")

    step = FlagValue("new", ramp_percent)
    result = RampResult(
        ok=False, reason="", final=LEGACY, flag=flag, store=getattr(store, "name", type(store).__name__),
        signal=getattr(signal, "name", type(signal).__name__) if signal is not None else None,
        ramp_percent=ramp_percent, max_error_rate_pct=max_error_rate_pct, watch_seconds=watch_seconds,
    )
    start = clock()
    current: FlagValue | None = None

    def change(to: FlagValue, why: str) -> None:
        nonlocal current
        log.info("routing flag %s (%s): %s -> %s (%s)", flag, result.store, current, to, why)
        store.set(flag, to, run_id)
        result.changes.append({"from": None if current is None else current.to_dict(), "to": to.to_dict(),
                               "at": round(clock() - start, 3), "why": why})
        current = to

    current = before = store.get(flag)
    try:
        change(step, f"ramp step: {ramp_percent}% of reads on the new schema")
    except BaseException as exc:
        # The store may have applied it anyway (an HTTP timeout after the write): restore, best effort.
        restore = before or LEGACY
        log.error("routing flag %s: setting the ramp step failed (%r): restoring %s", flag, exc, restore)
        try:
            store.set(flag, restore, run_id)
        except Exception:
            log.exception("routing flag %s: restoring %s FAILED; the flag may be %s", flag, restore, step)
        raise
    at = f"at {ramp_percent}% of reads"
    worst = math.nan
    try:
        if signal is None:
            log.warning(
                "routing flag %s: ramp is UNWATCHED (no error signal): holding %s for %ss, then 100%% regardless",
                flag, step, _fmt(watch_seconds),
            )
            while (left := watch_seconds - (clock() - start)) > 0:
                sleep(min(poll_seconds, left))
        else:
            while True:
                t = clock() - start
                pct = _read(signal, log)
                result.readings.append((t, pct))
                if math.isnan(pct):
                    result.reason = f"5xx rate unreadable from {result.signal} {at}: treated as failing"
                    break
                if pct > max_error_rate_pct:
                    result.reason = f"5xx rate {_fmt(pct)}% > {_fmt(max_error_rate_pct)}% {at}"
                    break
                worst = pct if math.isnan(worst) else max(worst, pct)
                left = watch_seconds - (clock() - start)
                if left <= 0:
                    break
                sleep(min(poll_seconds, left))
    except BaseException as exc:
        log.error("routing flag %s: ramp watch interrupted (%r): rolling back to legacy", flag, exc)
        try:
            change(LEGACY, f"ramp watch interrupted: {exc!r}")
        except Exception:
            log.exception("routing flag %s: rollback to legacy FAILED; the flag may still be %s", flag, current)
        raise

    if result.reason:  # a failing or unreadable reading: back to legacy at once (the seed's rule)
        log.error("routing flag %s: %s: rolling back to legacy", flag, result.reason)
        try:
            change(LEGACY, result.reason)
        except Exception:
            log.exception("routing flag %s: rollback to legacy FAILED; the flag may still be %s", flag, current)
            raise
        result.final = LEGACY
        return result

    if signal is None:
        reason = f"unwatched ramp (no error signal): {at} for {_fmt(watch_seconds)}s, then 100%"
    else:
        reason = (f"5xx rate at most {_fmt(worst)}% <= {_fmt(max_error_rate_pct)}% over {_fmt(watch_seconds)}s"
                  f" {at} ({len(result.readings)} readings)")
    if current != NEW:
        change(NEW, reason)
    result.ok, result.reason, result.final = True, reason, NEW
    return result


def _read(signal: ErrorSignal, logger: logging.Logger) -> float:
    """One reading; any failure (exception, non-number, negative) is nan."""
    try:
        value = _number(signal.read())
    except Exception as exc:
        logger.warning("error signal %s raised: %r", getattr(signal, "name", signal), exc)
        return math.nan
    if value < 0:
        logger.warning("error signal %s returned a negative rate %s", getattr(signal, "name", signal), value)
        return math.nan
    return value

