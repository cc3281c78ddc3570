"""Every conf field of a run, declared once: type, default or per-profile default, bounds,
form title, description, section, and the values the demo and the staging rehearsal give it.

From this one declaration (:data:`FIELDS`):

- :meth:`~zdt_backfill.config.RunConfig.from_params` knows which fields exist, reads every
  plain field with its default and bounds (:meth:`Field.read`), and refuses a value out of them
  (``ConfigError`` naming field, value and range); the rules between fields stay there;
- ``RunConfig``'s attributes are these fields (it declares no default of its own);
- the Airflow trigger form (``zdt_airflow.dag_factory.build_params``) is one ``Param`` per
  field built from :meth:`Field.form_schema` and :meth:`Field.form_value`;
- the staging rehearsal's and the demo's defaults are :func:`rehearsal_defaults` and
  :func:`demo_defaults`;
- the README's conf reference is :func:`reference_table`, and a test holds the README to it.

A new field is one :class:`Field` here, its typed attribute on ``RunConfig``, and, when
other fields constrain it, its rule in ``from_params``. The profiles (the seed's Environment
Context Matrix) are here too: they are the per-profile defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"

MODES = ("copy", "fill")
DUAL_WRITE_MODES = ("check", "assumed", "trigger")
RECLAIM_MODES = ("online", "none")
APPROVAL_MODES = ("required", "auto")
LEGACY_ACTIONS = ("keep", "rename", "drop")
FLAG_STORES = ("table", "variable", "http")
VALIDATION_MODES = ("full", "sampled")
VALIDATION_SOURCES = ("primary", "replica")


@dataclass(frozen=True)
class Profile:
    """Tuning defaults of one environment, from the seed's Environment Context Matrix.

    :param batch_size: rows per batch (one transaction each).
    :param max_rows_per_second: rows/s ceiling for the whole run, ``None`` = unthrottled.
    :param max_replica_lag_seconds: replica lag (s) above which batches pause, ``None`` = no gate.
    :param partitions: key-range partitions copied in parallel (mapped tasks).
    :param approval: ``required`` (a human approves contract, rollback and the legacy drop) or ``auto``.
    :param soak_minutes: minutes between the application writing the new schema only and the
        legacy drop (the seed's Post-Backfill window).
    :param ramp_watch_minutes: minutes the error-rate signal is watched at 1 % of reads.
    :param min_batch_size: the floor the adaptive batch size (and a timing-out batch's halving)
        stops at; ``batch_size`` is the ceiling and the first size.
    """

    name: str
    batch_size: int
    max_rows_per_second: float | None
    max_replica_lag_seconds: float | None
    partitions: int
    approval: str = "auto"
    soak_minutes: float = 0.0
    ramp_watch_minutes: float = 0.0
    min_batch_size: int = 100


#: The seed's matrix: dev 50k rows and no throttle; staging 10k rows at 1000 rows/s;
#: prod 500-1000 rows at 500 rows/s (we take 1000, pgroll's and gh-ost's default).
#: The lag gates follow the seed's "replica replication lag < 2s". Prod needs a human's
#: approval before anything destructive and soaks 24 h before the legacy drop; dev and
#: staging (rehearsals) approve automatically.
PROFILES: dict[str, Profile] = {
    "dev": Profile("dev", batch_size=50_000, max_rows_per_second=None, max_replica_lag_seconds=10.0, partitions=2,
                   min_batch_size=1_000),
    "staging": Profile("staging", batch_size=10_000, max_rows_per_second=1_000, max_replica_lag_seconds=2.0,
                       partitions=2, ramp_watch_minutes=1.0, min_batch_size=500),
    "prod": Profile("prod", batch_size=1_000, max_rows_per_second=500, max_replica_lag_seconds=2.0, partitions=1,
                    approval="required", soak_minutes=24 * 60.0, ramp_watch_minutes=10.0, min_batch_size=100),
}
DEFAULT_PROFILE = "prod"

#: The shortest soak the prod profile accepts (minutes). An hour covers a deploy and its
#: rollback, the application's caches of the routing flags (seconds), and the first hourly
#: batch jobs and reports that read the new schema; the default stays 24 h (a daily cycle).
PROD_SOAK_FLOOR_MINUTES = 60.0

#: Target time of one batch (s): pt-online-schema-change's --chunk-time 0.5. The batch size
#: adapts toward it (Spirit's rule: grow at most 1.5x a step, shrink 10x at once on a 5x miss),
#: between ``min_batch_size`` and ``batch_size``, which stays the most rows a batch ever holds.
DEFAULT_TARGET_BATCH_SECONDS = 0.5
#: Load at or above which batches wait (``max_load``; merged with the conf's). gh-ost's
#: --max-load default is Threads_running=25; the seed gates on Innodb_row_lock_time_avg
#: < 50 ms; GitLab's batched migrations stop while autovacuum runs on the table; a
#: history list over a million means purge is falling behind.
DEFAULT_MAX_LOAD: dict[str, float] = {
    "threads_running": 25, "active_backends": 25, "row_lock_time_avg_ms": 50, "row_lock_waits_per_s": 200,
    "deadlocks_per_s": 1, "history_list_length": 1_000_000, "ungranted_locks": 20, "vacuum_on_tables": 1,
    "wal_bytes_per_s": 256 * 1024 * 1024, "replica_lag_bytes": 256 * 1024 * 1024,
}

#: Hard limits on tuning values, so a typo cannot turn a backfill into a monolith.
MAX_BATCH_SIZE = 100_000  # gh-ost's upper bound for chunk size
MAX_PARTITIONS = 64  # each mapped task costs scheduler work; see AIRFLOW3_NOTES

#: Session lock wait for backfill statements: short, so the backfill yields to the
#: application rather than queueing behind it (pgroll uses 500 ms); retried with backoff.
DEFAULT_LOCK_TIMEOUT_SECONDS = 0.5
#: Statement timeout of one batch statement: a batch that takes this long is not small.
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 60.0
#: Longest a human may take to answer an approval (min): the seed's Active Backfill window
#: lasts up to 72 h. Past it the run holds (``halted``), nothing destroyed.
DEFAULT_APPROVAL_TIMEOUT_MINUTES = 72 * 60.0
DAY_SECONDS = 86_400
MONTH_MINUTES = 30 * 24 * 60


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``default=PROFILE``: the value of the run's :class:`Profile` attribute of the same name.
PROFILE = _Marker("PROFILE")
#: ``demo=`` / ``rehearsal=`` left out: the field's default stands.
UNSET = _Marker("UNSET")

#: Form sections, in the form's order.
SECTIONS = ("Connection and tables", "Tuning", "Dual-write", "Thresholds", "Validation", "Approval and contract",
            "Rollback")


@dataclass(frozen=True)
class Field:
    """One conf field.

    :param kind: ``integer``, ``number``, ``boolean``, ``choice``, ``string``, ``identifier``
        (a plain SQL name, :data:`IDENT`), ``conn_id`` (an Airflow connection id), ``object``
        or ``array``.
    :param default: the value a run takes when the conf leaves the field out or ``null``;
        :data:`PROFILE` for the profile's value; ``None`` for "none" or "derived from other
        fields" (``doc_default`` then says which).
    :param minimum, maximum: inclusive bounds (numbers; units in the title), checked by the form
        and by ``from_params``.
    :param zero_is_off: a number where 0 turns the limit off (read as ``None``), like gh-ost's
        ``--max-lag-millis=0``.
    :param choices: the values a ``choice`` takes.
    :param required: the form marks it required (its JSON type excludes ``null``).
    :param schema: more JSON-schema keywords for the form (``items``, ``maxLength``, ...).
    :param demo: the form's value in the DAG `make demo` runs (its embedded database).
    :param rehearsal: the staging rehearsal DAG's value (a triggered run's conf overrides it).
    :param doc_default: the README's default cell where the value alone does not say it.
    """

    name: str
    kind: str
    section: str
    title: str
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    zero_is_off: bool = False
    choices: tuple[Any, ...] = ()
    required: bool = False
    schema: Mapping[str, Any] = field(default_factory=dict)
    demo: Any = UNSET
    rehearsal: Any = UNSET
    doc_default: str = ""

    # ------------------------------------------------------------------ the engine
    def resolved_default(self, profile: Profile | None = None) -> Any:
        """The default on ``profile`` (:data:`PROFILE` resolved; the prod profile when ``None``)."""
        if self.default is PROFILE:
            return getattr(profile or PROFILES[DEFAULT_PROFILE], self.name)
        return self.default

    def read(self, params: Mapping[str, Any], profile: Profile | None = None, *, default: Any = UNSET,
             maximum: float | None = None) -> Any:
        """The field's value in ``params`` (a conf), checked; the default when absent or ``null``.

        :param default: overrides :meth:`resolved_default` (a default that depends on other fields).
        :param maximum: overrides ``maximum`` (a bound that depends on other fields).
        :returns: ``int`` / ``float`` / ``bool`` / ``str`` by ``kind``; ``None`` for an
            unset optional field, or a 0 where ``zero_is_off``.
        :raises ConfigError: wrong type, out of bounds or not a choice; names the field and value.
        """
        fallback = self.resolved_default(profile) if default is UNSET else default
        v = params.get(self.name)
        if v is None or (v == "" and self.kind in ("choice", "string", "conn_id")):
            return fallback
        if self.kind in ("integer", "number"):
            return self._number(v, maximum if maximum is not None else self.maximum)
        if self.kind == "boolean":
            if not isinstance(v, bool):
                raise ConfigError(f"{self.name} must be true or false, got {v!r}")
            return v
        if self.kind == "choice":
            if v not in self.choices:
                raise ConfigError(f"{self.name} must be one of {tuple(c for c in self.choices if c is not None)}, "
                                  f"got {v!r}")
            return v
        if self.kind == "conn_id":
            if not isinstance(v, str) or not v.strip() or len(v) > 250:
                raise ConfigError(f"{self.name} must name an Airflow connection (a non-empty string), got {v!r}")
            return v
        if self.kind == "string":
            if not isinstance(v, str):
                raise ConfigError(f"{self.name} must be a string, got {v!r}")
            return v
        raise TypeError(f"{self.name}: a {self.kind} field is read by RunConfig.from_params itself")

    def _number(self, v: Any, hi: float | None) -> int | float | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{self.name} must be a number, got {v!r}")
        if self.zero_is_off:
            if v == 0:
                return None
            if v < 0:
                raise ConfigError(f"{self.name} must be a positive number, or 0 to turn it off, got {v!r}")
            return float(v)
        lo = self.minimum if self.minimum is not None else -math.inf
        top = hi if hi is not None else math.inf
        if self.kind == "integer":
            if int(v) != v or not lo <= v <= top:
                raise ConfigError(f"{self.name} must be a whole number from {_num(lo)} to {_num(top)}, got {v!r}")
            return int(v)
        if not lo <= v <= top:
            raise ConfigError(f"{self.name} must be from {_num(lo)} to {_num(top)}, got {v!r}")
        return float(v)

    # ------------------------------------------------------------------ the form
    def form_schema(self) -> dict[str, Any]:
        """JSON-schema keywords of the field's trigger-form ``Param`` (type, enum, pattern, bounds).

        Number bounds sit inside ``allOf``: Airflow's form passes a top-level ``minimum`` /
        ``maximum`` to its number input, which silently clamps what was typed (a batch size of
        0 became 1 and a run started). Inside ``allOf`` they are invisible to the input but
        still validated, so the API refuses the value with HTTP 400 and a readable first line
        (``Invalid input for param batch_size: 0 is less than the minimum of 1``).
        """
        json_type = {"integer": "integer", "number": "number", "boolean": "boolean", "object": "object",
                     "array": "array"}.get(self.kind, "string")
        out: dict[str, Any] = {"type": json_type if self.required else ["null", json_type]}
        if self.kind == "choice":
            out["enum"] = list(self.choices) + ([] if self.required or None in self.choices else [None])
        if self.kind == "identifier":
            out["pattern"] = IDENT
        if self.kind == "conn_id" and self.required:
            out["minLength"] = 1
        if self.kind in ("integer", "number"):
            lo = 0 if self.zero_is_off else self.minimum
            bounds = {k: v for k, v in (("minimum", lo), ("maximum", self.maximum)) if v is not None}
            if bounds:
                out["allOf"] = [bounds]
        out.update(self.schema)
        return out

    def form_value(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """The form's value: ``overrides`` (a DAG's defaults), else the demo's, else the field's
        own default, else empty (a number or a profile's default shows empty: "use the default")."""
        if overrides and self.name in overrides:
            v = overrides[self.name]
        elif self.demo is not UNSET:
            v = self.demo
        elif self.default is PROFILE or self.kind in ("integer", "number"):
            v = None
        else:
            v = self.default
        return list(v) if isinstance(v, tuple) else v  # JSON schema's "array" is a list

    # ------------------------------------------------------------------ the README
    def doc(self) -> str:
        """The README's default cell: ``doc_default``, else the default (per profile where it
        is the profile's), with the demo's and the rehearsal's values after it."""
        if self.doc_default:
            text = self.doc_default
        elif self.default is PROFILE:
            text = "profile: " + " / ".join(
                f"{n} {'off' if getattr(p, self.name) is None else _doc_value(getattr(p, self.name))}"
                for n, p in PROFILES.items())
        elif self.required and self.default is None:
            text = "required"
        else:
            text = _doc_value(self.default)
        if self.demo is not UNSET:
            text += f"; demo {_doc_value(self.demo)}"
        if self.rehearsal is not UNSET:
            text += f"; rehearsal {_doc_value(self.rehearsal)}"
        return text


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _doc_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, (int, float)):
        return f"{v:,}" if isinstance(v, int) or v >= 10_000 and float(v).is_integer() else f"{v:g}"
    if isinstance(v, str):
        return f"`{v}`"
    return f"`{json.dumps(v)}`"


_ID_ITEMS = {"items": {"type": "string", "pattern": IDENT}}
_LOAD = {"additionalProperties": {"type": "number", "minimum": 0}}
DEMO_COLUMNS = {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"}

_C, _T, _D, _TH, _V, _A, _R = SECTIONS

#: Every conf field, in the form's order.
FIELD_LIST: tuple[Field, ...] = (
    # --- Connection and tables
    Field("conn_id", "conn_id", _C, "Connection id",
          "Airflow connection (postgres or mysql) of the database holding source and target.",
          required=True, demo="backfill_pg", rehearsal="backfill_staging"),
    Field("replica_conn_ids", "array", _C, "Replica connection ids",
          "Replicas whose lag gates batches and must catch up before validation.", default=(),
          schema={"items": {"type": "string"}}, demo=["backfill_pg_replica"], rehearsal=["backfill_staging_replica"],
          doc_default="`[]`"),
    Field("parity_conn_id", "conn_id", _C, "Staging connection (parity)",
          "The other environment's Airflow connection (staging): when set, pre-flight compares server version, "
          "settings and the tables' schema and indexes with conn_id's, and fails on a difference that changes the "
          "backfill's behaviour (see Environment parity in the README)."),
    Field("schema", "identifier", _C, "Schema",
          "PostgreSQL schema / MySQL database of the tables; empty = the connection's default."),
    Field("mode", "choice", _C, "Backfill shape",
          "copy: source table -> target table (INSERT ... SELECT, insert-if-absent). "
          "fill: UPDATE the source table's new column(s) where still NULL.", default="copy", choices=MODES,
          required=True),
    Field("source_table", "identifier", _C, "Source table",
          "The legacy table read by the backfill (the table filled, in fill mode).", required=True,
          demo="users_legacy"),
    Field("target_table", "identifier", _C, "Target table",
          "The new table written in copy mode; leave empty in fill mode (the source itself).", demo="users_new",
          doc_default="required in copy mode"),
    Field("key", "identifier", _C, "Key column",
          "The unique, NOT NULL integer column keyset chunks walk; empty = the source table's primary key, read "
          "from the catalog (pre-flight refuses a table whose primary key is missing or not one column).",
          doc_default="the primary key"),
    Field("columns", "object", _C, "Target columns",
          '{"target_column": "SQL expression over source columns"}, e.g. {"email_normalized": "lower(trim(email))"}.',
          required=True, schema={"minProperties": 1, "propertyNames": {"pattern": IDENT},
                                 "additionalProperties": {"type": "string", "minLength": 1}},
          demo=DEMO_COLUMNS),
    Field("allow_functions", "array", _C, "Extra allowed functions",
          "Deterministic functions allowed in column expressions beyond the built-in allow-list "
          "(never now(), random(), sleep(), ...).", default=(), schema=_ID_ITEMS, doc_default="`[]`"),
    Field("dry_run", "boolean", _C, "Dry run",
          "Only pre-flight, EXPLAIN of the batch statements, partition and batch boundaries and a duration estimate, "
          "in the pre-flight task's log and XCom dry_run: nothing is written, no lock is taken; the run ends "
          "success with every task skipped.", default=False, required=True),
    # --- Tuning
    Field("profile", "choice", _T, "Environment profile",
          "Defaults from the seed's matrix: dev 50,000-row batches, no rate limit, 2 partitions; staging 10,000 at "
          "1,000 rows/s; prod 1,000 at 500 rows/s, 1 partition. Fields below override it.",
          default=DEFAULT_PROFILE, choices=tuple(sorted(PROFILES)), required=True, rehearsal="staging"),
    Field("batch_size", "integer", _T, "Batch size (rows)",
          "The most rows a batch transaction holds, and the first size; empty = profile.", default=PROFILE,
          minimum=1, maximum=MAX_BATCH_SIZE),
    Field("min_batch_size", "integer", _T, "Smallest batch (rows)",
          "Floor of the adaptive size and of halving (at most batch_size); empty = profile.", default=PROFILE,
          minimum=1, maximum=MAX_BATCH_SIZE),
    Field("target_batch_seconds", "number", _T, "Batch time target (s)",
          "The time a batch should stay within: the size starts at 1,000 rows and adapts (the slow end aimed at "
          "70 % of it; grow <= 1.5x a step, shrink 10x on a 5x miss), never above the batch size; 0 = fixed.",
          default=DEFAULT_TARGET_BATCH_SECONDS, minimum=0, maximum=60),
    Field("partitions", "integer", _T, "Partitions",
          "Key-range partitions copied in parallel (mapped tasks), cut at the key index's quantiles so each holds "
          "about the same rows however skewed the keys; empty = profile.", default=PROFILE, minimum=1,
          maximum=MAX_PARTITIONS),
    Field("max_rows_per_second", "number", _T, "Rate ceiling (rows/s)",
          "Rows/s for the whole run, shared by the partitions; 0 = unthrottled; empty = profile.",
          default=PROFILE, zero_is_off=True),
    Field("max_replica_lag_seconds", "number", _T, "Replica lag gate (s)",
          "Batches pause while a replica lags more; 0 = off; empty = profile.", default=PROFILE, zero_is_off=True),
    Field("lock_timeout_seconds", "number", _T, "Lock timeout (s)",
          "Lock wait of backfill sessions and of every DDL (PostgreSQL lock_timeout; MySQL innodb_lock_wait_timeout "
          "and lock_wait_timeout, at least 1 s).", default=DEFAULT_LOCK_TIMEOUT_SECONDS, minimum=0.001, maximum=3600),
    Field("statement_timeout_seconds", "number", _T, "Statement timeout (s)",
          "Longest a batch statement may run (PostgreSQL statement_timeout, MariaDB max_statement_time; Oracle "
          "MySQL, whose max_execution_time bounds read-only SELECTs only, by a KILL QUERY from the copier); a batch "
          "that hits it is halved and tried again.", default=DEFAULT_STATEMENT_TIMEOUT_SECONDS, minimum=0.1,
          maximum=DAY_SECONDS),
    Field("max_load", "object", _T, "Load limits",
          'Load signals at or above which batches wait, merged over the defaults (see Health gating), e.g. '
          '{"threads_running": 25, "row_lock_time_avg_ms": 50}; 0 turns one off.', schema=_LOAD,
          doc_default="`DEFAULT_MAX_LOAD` (see [Health gating](#health-gating))"),
    Field("critical_load", "object", _T, "Critical load",
          "Load at or above which the batch in flight is cancelled and the run drops to one active partition "
          "until row-lock waits are back to baseline; critical load again then halts (gh-ost --critical-load), "
          'e.g. {"threads_running": 100}.', schema=_LOAD, doc_default="none"),
    Field("throttle_query", "string", _T, "Throttle query",
          "One read-only SELECT on the primary returning a number (CPU %, a queue depth); batches wait while it "
          "is >= throttle_query_max."),
    Field("throttle_query_max", "number", _T, "Throttle query limit",
          "The throttle query's value at or above which batches wait (the seed: CPU < 70).", zero_is_off=True),
    # --- Dual-write
    Field("dual_write", "choice", _D, "Dual-write",
          "check: the application writes both schemas; recent source changes must already be in the target. "
          "assumed: not checked; the report records the assumption. trigger: the application writes the legacy "
          "schema only; pre-flight installs triggers on it that keep the target in step (copy: AFTER triggers "
          "writing the target; fill: a BEFORE trigger setting the new columns; removed at contract and rollback, "
          "kept by a halted run).", default="check", choices=DUAL_WRITE_MODES, required=True, rehearsal="assumed"),
    Field("dual_write_updated_column", "identifier", _D, "Last-write timestamp column",
          "Source column holding each row's last write time (for check).", default="updated_at"),
    Field("dual_write_window_minutes", "number", _D, "Check window (min)",
          "Rows changed within this many minutes are checked.", default=10.0, minimum=0.1, maximum=7 * 24 * 60),
    # --- Thresholds
    Field("forward_max_lag_seconds", "number", _TH, "Forward: replica lag < (s)",
          "Forward needs replica lag under this (seed default 2); the catch-up sensor and the decision hold "
          "(never roll back) until it is.", default=2.0, minimum=0.001, maximum=3600),
    Field("max_error_rate_pct", "number", _TH, "Rollback: error rate > (%)",
          "Data errors plus differences left after repair, per processed row (seed default 0.01): above it rolls "
          "back, zero goes forward, in between holds for a human. Transient retries are yields, not errors.",
          default=0.01, minimum=0, maximum=100),
    Field("max_5xx_rate_pct", "number", _TH, "Ramp: 5xx rate > (%) flips back",
          "Seed default 0.1: during the ramp, a higher 5xx rate flips reads back to legacy and halts.",
          default=0.1, minimum=0, maximum=100),
    Field("replica_wait_timeout_seconds", "number", _TH, "Hold deadline (s)",
          "Longest the lag gate, the catch-up sensor and the decision hold for replicas before the run halts "
          "(nothing destroyed).", default=600.0, minimum=1, maximum=DAY_SECONDS),
    Field("halt_lag_seconds", "number", _TH, "Halt on lag above (s)",
          "Replica lag above this, sustained for halt_lag_after_seconds, halts the copy (held, nothing destroyed); "
          "the seed's rollback threshold.", default=5.0, minimum=0.1, maximum=DAY_SECONDS),
    Field("halt_lag_after_seconds", "number", _TH, "... sustained for (s)",
          "How long lag must stay above halt_lag_seconds before the copy halts.", default=300.0, minimum=1,
          maximum=DAY_SECONDS),
    # --- Validation
    Field("validation", "choice", _V, "Validation",
          "full: every key, chunk by chunk (a legacy drop or rename needs a full, exact one taken after the last "
          "repair; prod refuses sampled with legacy_action drop / rename at the start). sampled: random keyset "
          "chunks sized for the confidence below; the report states the sample size, confidence and method.",
          default="full", choices=VALIDATION_MODES, required=True),
    Field("validation_source", "choice", _V, "Validation reads",
          "replica: the chunk checksums read the first replica once its heartbeat shows it replayed past the start "
          "of validation; differing keys are re-checked on the primary. Needs replica connection ids.",
          default="primary", choices=VALIDATION_SOURCES, required=True),
    Field("validation_chunk_seconds", "number", _V, "Checksum chunk time (s)",
          "Target time of one checksum statement (pt-table-checksum's --chunk-time); the chunk adapts between "
          "1,000 and 200,000 rows.", default=0.5, minimum=0.01, maximum=60),
    Field("validation_recheck_seconds", "number", _V, "Re-check after (s)",
          "Differing keys are diffed again on the primary after this wait; only keys differing both times count "
          "(a dual-write in flight is not a mismatch).", default=2.0, minimum=0, maximum=600),
    Field("validation_confidence", "number", _V, "Sample confidence",
          "sampled: the probability of seeing at least one differing row.", default=0.999, minimum=0.5,
          maximum=0.999999),
    Field("validation_detect_pct", "number", _V, "Sample detects mismatch rate (%)",
          "sampled: the mismatch rate seen with that confidence (0.01 % at 99.9 %: 69,075 rows).", default=0.01,
          minimum=0.0001, maximum=50),
    # --- Approval, routing and contract
    Field("approval", "choice", _A, "Approval",
          "required: a human chooses contract / roll back / hold in the Required Actions page, and approves the "
          "legacy drop. auto: a clear decision proceeds (a hold still waits for a human); prod refuses auto. "
          "Empty = profile.", default=PROFILE, choices=APPROVAL_MODES, rehearsal="auto"),
    Field("approval_timeout_minutes", "number", _A, "Approval timeout (min)",
          "Past it, an unanswered approval holds the run (nothing destroyed).",
          default=DEFAULT_APPROVAL_TIMEOUT_MINUTES, minimum=1, maximum=MONTH_MINUTES),
    Field("flag_store", "choice", _A, "Routing flag store",
          "Where the application reads its routing flags: table zdt_routing_flags in the application database, an "
          "Airflow Variable (zdt_flag_<flag>), or an HTTP endpoint (GET/PUT <url>/<flag>).", default="table",
          choices=FLAG_STORES, required=True),
    Field("flag_store_conn_id", "conn_id", _A, "Flag store connection",
          "An Airflow HTTP connection for the flag store (preferred over a URL: its password stays in Airflow; "
          "schema http/https, host, port, login/password as basic auth, extra endpoint as the path)."),
    Field("flag_store_url", "string", _A, "Flag store URL", "Base URL of the HTTP flag store (flag_store http)."),
    Field("routing_flag", "string", _A, "Read flag",
          "Read-path flag: legacy, then new at ramp_percent, then new at 100 %; <target_table>_read_path when "
          "empty. The write flag is <...>_write_path.", schema={"maxLength": 128},
          doc_default="`<target_table>_read_path`"),
    Field("ramp_percent", "integer", _A, "Ramp (% of reads)", "First step of the read ramp; seed default 1.",
          default=1, minimum=1, maximum=100),
    Field("ramp_watch_minutes", "number", _A, "Ramp watch (min)",
          "How long the error signal is watched at the first step; empty = profile.", default=PROFILE, minimum=0,
          maximum=24 * 60),
    Field("error_signal_sql", "string", _A, "Error signal (SQL)",
          "One read-only SELECT on the application database returning the 5xx rate in percent."),
    Field("error_signal_conn_id", "conn_id", _A, "Error signal connection",
          "An Airflow HTTP connection returning the 5xx rate as JSON (extra endpoint: the path); preferred over a URL."),
    Field("error_signal_url", "string", _A, "Error signal (HTTP)", "GET URL returning JSON with the 5xx rate in percent."),
    Field("error_signal_json_key", "string", _A, "Error signal JSON key", "Key of the rate in that JSON.",
          default="error_rate_pct", required=True),
    Field("allow_unwatched_ramp", "boolean", _A, "Allow an unwatched ramp (prod)",
          "Prod refuses a read ramp with no error signal unless this is set; the override is recorded in the report.",
          default=False, required=True),
    Field("soak_minutes", "number", _A, "Soak (min)",
          "Minutes between the write flip (the application writing the new schema only) and the legacy action; "
          f"prod refuses less than {PROD_SOAK_FLOOR_MINUTES:g} (a deploy, its rollback and the first hourly jobs on "
          "the new schema); empty = profile.", default=PROFILE, minimum=0, maximum=MONTH_MINUTES),
    Field("legacy_action", "choice", _A, "Legacy schema after the soak",
          "keep, rename (to <name>_zdt_archived) or drop the legacy table (copy) or legacy_columns (fill); rename "
          "and drop need an exact validation and their own approval.", default="keep", choices=LEGACY_ACTIONS,
          required=True, rehearsal="keep"),
    Field("legacy_columns", "array", _A, "Legacy columns (fill mode)",
          "Columns renamed or dropped by legacy_action in fill mode.", default=(), schema=_ID_ITEMS,
          doc_default="`[]`"),
    Field("reclaim_storage", "choice", _A, "Reclaim storage",
          "online: VACUUM (ANALYZE) / ANALYZE TABLE; none. Never VACUUM FULL or OPTIMIZE TABLE, which lock or "
          "rebuild the table.", default="online", choices=RECLAIM_MODES, required=True),
    # --- Rollback
    Field("cache_conn_id", "conn_id", _R, "Cache Redis connection",
          "An Airflow Redis connection (extra db, ssl) for the cache cleared on rollback (SCAN + UNLINK); "
          "preferred over a URL."),
    Field("cache_redis_url", "string", _R, "Cache Redis URL",
          "Redis cleared on rollback (SCAN + UNLINK), e.g. redis://127.0.0.1:6379/0."),
    Field("cache_key_pattern", "string", _R, "Cache key pattern",
          "Keys to clear on rollback; it needs a literal prefix before its first glob character, e.g. users:*."),
)

#: :data:`FIELD_LIST` by name.
FIELDS: dict[str, Field] = {f.name: f for f in FIELD_LIST}


def default_of(name: str) -> Any:
    """The default of field ``name`` on the default (prod) profile, for the defaults of the
    engine's own constructors (``from_params`` resolves per-profile defaults on the run's profile)."""
    return FIELDS[name].resolved_default()


def demo_defaults() -> dict[str, Any]:
    """The form values of the DAG `make demo` runs (its embedded PostgreSQL), by field."""
    return {f.name: f.demo for f in FIELD_LIST if f.demo is not UNSET}


def rehearsal_defaults() -> dict[str, Any]:
    """The staging rehearsal DAG's defaults, by field (a triggered run's conf overrides them)."""
    return {f.name: f.rehearsal for f in FIELD_LIST if f.rehearsal is not UNSET}


def reference_table() -> str:
    """The README's conf reference: one Markdown row per field (name, default, meaning)."""
    lines = ["| field | default | meaning |", "|---|---|---|"]
    # "<" opens an HTML tag in Markdown: a bare <flag> would vanish from the rendered page
    lines += [f"| `{f.name}` | {f.doc()} | {f.description.replace('<', '&lt;')} |" for f in FIELD_LIST]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m zdt_backfill.fields: the README's conf reference
    print(reference_table())
