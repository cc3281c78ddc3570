"""Flag stores that need Airflow: the routing flag as an Airflow Variable.

:class:`VariableFlagStore` keeps a routing flag in the Variable ``<prefix><flag>``
(``zdt_flag_users_new_read_path``) holding the JSON ``{"path": "new", "percent": 1,
"run_id": "..."}``; see :mod:`zdt_backfill.routing` for what ``path`` and ``percent`` mean
and how the application must read them. An application outside Airflow reads it through
Airflow's REST API (``GET /api/v2/variables/zdt_flag_<flag>``, whose ``value`` is that
JSON string); an application inside Airflow (another DAG) reads ``Variable.get``.

**Works from task code only.** ``airflow.sdk.Variable.set`` (Airflow 3, task SDK) does not
write the metadata database itself: it sends a ``PutVariable`` message to the task's
supervisor, which calls the Execution API (``PUT /execution/variables/{key}``; its access
check allows every task to write in this Airflow version). So it works inside a running
task (a worker, ``dag.test()``), but not at DAG-parse time, in a plain script or in the
triggerer. ``Variable.get`` consults the secrets backends *first* (environment variables
``AIRFLOW_VAR_<KEY>``, then a configured backend, then the Execution API): a Variable of
the same key defined there shadows what ``set`` wrote, and Airflow only logs a warning.
:meth:`VariableFlagStore.set` therefore reads the flag back and raises
:class:`~zdt_backfill.errors.ConfigError` when the value read is not the value written.
"""

from __future__ import annotations

import json
import re

from zdt_backfill.db import Database
from zdt_backfill.errors import ConfigError
from zdt_backfill.routing.flags import FlagStore, FlagValue, flag_store_from_config

#: Airflow's Variable key rule (``airflow.utils.helpers.validate_key``): at most 250 characters
#: of letters, digits, ``-``, ``.`` and ``_``, no ``..``.
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,250}\Z")


class VariableFlagStore:
    """A routing flag stored as the Airflow Variable ``<prefix><flag>`` (JSON ``{"path", "percent", "run_id"}``).

    :param prefix: prepended to the flag name to form the Variable key.
    :raises ConfigError: (``get``/``set``) a key Airflow would refuse; (``set``) the value read
        back differs from the value written (shadowed by ``AIRFLOW_VAR_*`` or a secrets backend).
    :raises ValueError: (``get``) the Variable does not hold a valid flag.
    :raises Exception: Airflow's errors outside a task (no supervisor to talk to).
    """

    def __init__(self, prefix: str = "zdt_flag_") -> None:
        self.prefix = prefix
        self.name = f"airflow variable {prefix}*"

    def key(self, flag: str) -> str:
        """The Variable key of ``flag``."""
        key = f"{self.prefix}{flag}"
        if not isinstance(flag, str) or not flag or not _KEY.match(key) or ".." in key:
            raise ConfigError(
                f"routing flag {flag!r} cannot be an Airflow Variable key {key!r}: at most 250 characters of letters,"
                " digits, '-', '.' and '_'"
            )
        return key

    def get(self, flag: str) -> FlagValue | None:
        from airflow.sdk import Variable

        raw = Variable.get(self.key(flag), default=None)
        if raw is None:
            return None
        try:
            data = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            raise ValueError(f"Variable {self.key(flag)!r} does not hold a routing flag's JSON: {raw!r}") from exc
        return FlagValue.from_dict(data)

    def set(self, flag: str, value: FlagValue, run_id: str) -> None:
        from airflow.sdk import Variable

        key = self.key(flag)
        Variable.set(key, json.dumps({**value.to_dict(), "run_id": run_id}),
                     description="zero-downtime backfill routing flag (path, percent of reads on the new schema)")
        seen = self.get(flag)
        if seen != value:
            raise ConfigError(
                f"Airflow Variable {key!r} reads back as {seen} after setting {value}: an environment variable"
                f" AIRFLOW_VAR_{key.upper()} or a secrets backend defines it and takes precedence; remove it"
            )


def flag_store_for(kind: str, db: Database | None = None, url: str | None = None,
                   variable_prefix: str = "zdt_flag_") -> FlagStore:
    """A flag store by kind: ``"variable"`` (:class:`VariableFlagStore`), else the engine's
    ``"table"`` / ``"http"`` (:func:`zdt_backfill.routing.flags.flag_store_from_config`).

    :raises ConfigError: an unknown kind or a missing argument.
    """
    if kind == "variable":
        return VariableFlagStore(variable_prefix)
    try:
        return flag_store_from_config(kind, db, url)
    except ConfigError as exc:
        if kind not in ("table", "http"):
            raise ConfigError(f"unknown flag store {kind!r}: expected 'table', 'variable' or 'http'") from exc
        raise
