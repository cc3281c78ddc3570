"""The one validated configuration object of a backfill run.

:class:`RunConfig` is built once from Airflow Params / conf JSON (or a CLI) by
:meth:`RunConfig.from_params`, which checks every field and fills unset tuning fields
from an environment :class:`Profile`. Everything downstream takes a ``RunConfig``;
no loose dicts travel through the engine.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .identifiers import validate_expression, validate_identifier
from .redact import mask_url

if TYPE_CHECKING:
    from .copying.chunker import BatchSizer

MODES = ("copy", "fill")
DUAL_WRITE_MODES = ("check", "assumed")
RECLAIM_MODES = ("online", "none")
APPROVAL_MODES = ("required", "auto")
LEGACY_ACTIONS = ("keep", "rename", "drop")
FLAG_STORES = ("table", "variable", "http")


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


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds, from the seed's Forward & Rollback Paths table (see :mod:`zdt_backfill.lifecycle.decision`).

    Errors (data errors, differences left after repair) above ``max_error_rate_pct`` roll
    back; none goes forward; in between holds for a human. Replica lag never rolls back:
    forward waits (holds) until lag is under ``forward_max_lag_seconds``. During the ramp, a
    5xx rate above ``max_5xx_rate_pct`` flips reads back to legacy and halts.
    """

    forward_max_lag_seconds: float = 2.0
    max_error_rate_pct: float = 0.01
    max_5xx_rate_pct: float = 0.1


@dataclass(frozen=True)
class RunConfig:
    """A validated backfill run.

    Identifiers are validated plain names (quoted later by the dialect); ``columns``
    maps each target column to a SQL expression over source columns.
    """

    conn_id: str
    source_table: str
    key: str
    columns: dict[str, str]
    profile: Profile
    batch_size: int
    partitions: int
    max_rows_per_second: float | None
    max_replica_lag_seconds: float | None
    mode: str = "copy"
    target_table: str = ""
    schema: str | None = None
    replica_conn_ids: tuple[str, ...] = ()
    parity_conn_id: str | None = None
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    statement_timeout_seconds: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    dual_write: str = "check"
    dual_write_updated_column: str | None = "updated_at"
    dual_write_window_minutes: float = 10.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    legacy_action: str = "keep"
    legacy_columns: tuple[str, ...] = ()
    reclaim_storage: str = "online"
    routing_flag: str = ""
    replica_wait_timeout_seconds: float = 600.0
    halt_lag_seconds: float = 5.0
    halt_lag_after_seconds: float = 300.0
    approval: str = "auto"
    approval_timeout_minutes: float = DEFAULT_APPROVAL_TIMEOUT_MINUTES
    soak_minutes: float = 0.0
    flag_store: str = "table"
    flag_store_url: str | None = None
    error_signal_sql: str | None = None
    error_signal_url: str | None = None
    error_signal_json_key: str = "error_rate_pct"
    ramp_percent: int = 1
    ramp_watch_minutes: float = 0.0
    target_batch_seconds: float = DEFAULT_TARGET_BATCH_SECONDS
    min_batch_size: int = 1
    max_batch_size: int = MAX_BATCH_SIZE
    max_load: dict[str, float] = field(default_factory=dict)
    critical_load: dict[str, float] = field(default_factory=dict)
    throttle_query: str | None = None
    throttle_query_max: float | None = None
    allow_functions: tuple[str, ...] = ()
    dry_run: bool = False
    validation: str = "full"
    allow_unwatched_ramp: bool = False
    validation_chunk_seconds: float = 0.5
    validation_recheck_seconds: float = 2.0
    validation_confidence: float = 0.999
    validation_detect_pct: float = 0.01
    validation_source: str = "primary"
    cache_redis_url: str | None = None
    cache_key_pattern: str | None = None
    flag_store_conn_id: str | None = None
    error_signal_conn_id: str | None = None
    cache_conn_id: str | None = None
    run_id: str = "manual"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_params(cls, params: Mapping[str, Any], run_id: str = "manual") -> "RunConfig":
        """Validate Params/conf and return a ``RunConfig``.

        :param params: the DAG run's params (``context["params"]``) or a conf dict; keys
            as documented in the README's conf reference. ``None`` values mean "use the
            profile's default".
        :param run_id: the Airflow run id, used for checkpoints, the run lock and session tags.
        :raises ConfigError: a field is missing, of the wrong type, out of range, or unsafe; or
            the prod profile forbids the combination (:meth:`policy_problems`; not on a dry run).
        """
        p = dict(params)
        known = ({f.name for f in dataclasses.fields(cls)} - {"thresholds", "run_id"}) | {
            f.name for f in dataclasses.fields(Thresholds)
        }
        unknown = sorted(set(p) - known)
        if unknown:
            raise ConfigError(f"unknown conf field(s): {', '.join(unknown)}")

        profile_name = p.get("profile") or "prod"
        if profile_name not in PROFILES:
            raise ConfigError(f"profile must be one of {sorted(PROFILES)}, got {profile_name!r}")
        profile = PROFILES[profile_name]

        mode = p.get("mode") or "copy"
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")

        source = validate_identifier(_required(p, "source_table"), "source_table")
        target = p.get("target_table") or (source if mode == "fill" else None)
        if target is None:
            raise ConfigError("target_table is required in copy mode")
        target = validate_identifier(target, "target_table")
        if mode == "fill" and target != source:
            raise ConfigError(
                f"in fill mode the target is the source table itself; leave target_table empty (got {target!r}: "
                "the trigger form's default is users_new, so conf JSON must say \"target_table\": null)")
        if mode == "copy" and target == source:
            raise ConfigError("in copy mode target_table must differ from source_table")

        key = validate_identifier(p.get("key") or "id", "key")
        columns = p.get("columns")
        if not isinstance(columns, Mapping) or not columns:
            raise ConfigError('columns must be a non-empty object {"target_column": "SQL expression"}')
        cols = {validate_identifier(c, "target column"): validate_expression(e, c) for c, e in columns.items()}

        schema = p.get("schema")
        if schema is not None:
            schema = validate_identifier(schema, "schema")

        batch_size = _int(p, "batch_size", profile.batch_size, 1, MAX_BATCH_SIZE)
        partitions = _int(p, "partitions", profile.partitions, 1, MAX_PARTITIONS)
        rate = _optional_positive(p, "max_rows_per_second", profile.max_rows_per_second)
        lag = _optional_positive(p, "max_replica_lag_seconds", profile.max_replica_lag_seconds)

        replicas = p.get("replica_conn_ids") or ()
        if isinstance(replicas, str) or not all(isinstance(r, str) and r for r in replicas):
            raise ConfigError("replica_conn_ids must be a list of connection ids")
        if p.get("validation_source") == "replica" and not replicas:
            raise ConfigError('validation_source "replica" needs replica_conn_ids: validation reads the first replica')

        parity_conn_id = p.get("parity_conn_id") or None
        if parity_conn_id is not None and not isinstance(parity_conn_id, str):
            raise ConfigError("parity_conn_id must be an Airflow connection id (a string) or null")
        if parity_conn_id is not None and parity_conn_id == p.get("conn_id"):
            raise ConfigError("parity_conn_id must name the other environment (staging), not conn_id itself")

        dual_write = p.get("dual_write") or "check"
        if dual_write not in DUAL_WRITE_MODES:
            raise ConfigError(f"dual_write must be one of {DUAL_WRITE_MODES}, got {dual_write!r}")
        updated_col = p.get("dual_write_updated_column", "updated_at")
        if dual_write == "check":
            if not updated_col:
                raise ConfigError('dual_write "check" needs dual_write_updated_column (a timestamp of the last write)')
            updated_col = validate_identifier(updated_col, "dual_write_updated_column")

        reclaim = p.get("reclaim_storage") or "online"
        if reclaim not in RECLAIM_MODES:
            raise ConfigError(f"reclaim_storage must be one of {RECLAIM_MODES}, got {reclaim!r}")

        legacy_columns = tuple(validate_identifier(c, "legacy column") for c in (p.get("legacy_columns") or ()))
        legacy_action = _choice(p, "legacy_action", LEGACY_ACTIONS, "keep")
        if legacy_action != "keep" and mode == "fill" and not legacy_columns:
            raise ConfigError(f"legacy_action {legacy_action!r} in fill mode needs legacy_columns: the columns to {legacy_action}")
        approval = _choice(p, "approval", APPROVAL_MODES, profile.approval)
        flag_store = _choice(p, "flag_store", FLAG_STORES, "table")
        flag_store_url = p.get("flag_store_url") or None
        conn_ids = {name: _optional_conn_id(p, name) for name in ("flag_store_conn_id", "error_signal_conn_id",
                                                                  "cache_conn_id")}
        if flag_store_url and conn_ids["flag_store_conn_id"]:
            raise ConfigError("give flag_store_url or flag_store_conn_id, not both")
        if flag_store == "http" and not (flag_store_url or conn_ids["flag_store_conn_id"]):
            raise ConfigError('flag_store "http" needs flag_store_conn_id (an Airflow HTTP connection) or flag_store_url')
        signal_sql = p.get("error_signal_sql") or None
        signal_url = p.get("error_signal_url") or None
        if sum(bool(x) for x in (signal_sql, signal_url, conn_ids["error_signal_conn_id"])) > 1:
            raise ConfigError("give one of error_signal_sql, error_signal_url or error_signal_conn_id, not several")
        if signal_sql is not None and (not isinstance(signal_sql, str) or ";" in signal_sql):
            raise ConfigError("error_signal_sql must be one read-only SELECT returning a percentage, without ';'")
        throttle_query = p.get("throttle_query") or None
        if throttle_query is not None and (not isinstance(throttle_query, str) or ";" in throttle_query):
            raise ConfigError("throttle_query must be one read-only SELECT returning a number, without ';'")
        if throttle_query and p.get("throttle_query_max") is None:
            raise ConfigError("throttle_query needs throttle_query_max: the value at or above which batches wait")
        for name, url in (("flag_store_url", flag_store_url), ("error_signal_url", signal_url)):
            if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")):
                raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")

        routing_flag = p.get("routing_flag") or f"{target}_read_path"
        if not isinstance(routing_flag, str) or len(routing_flag) > 128:
            raise ConfigError("routing_flag must be a string of at most 128 characters")

        defaults = Thresholds()
        thresholds = Thresholds(
            forward_max_lag_seconds=_float(p, "forward_max_lag_seconds", defaults.forward_max_lag_seconds, 0.001, 3600),
            max_error_rate_pct=_float(p, "max_error_rate_pct", defaults.max_error_rate_pct, 0, 100),
            max_5xx_rate_pct=_float(p, "max_5xx_rate_pct", defaults.max_5xx_rate_pct, 0, 100),
        )

        redis_url = p.get("cache_redis_url") or None
        pattern = p.get("cache_key_pattern") or None
        if redis_url and conn_ids["cache_conn_id"]:
            raise ConfigError("give cache_redis_url or cache_conn_id, not both")
        if bool(redis_url or conn_ids["cache_conn_id"]) != bool(pattern):
            raise ConfigError("cache_key_pattern goes with cache_conn_id (an Airflow Redis connection) or cache_redis_url")
        if pattern is not None and (not isinstance(pattern, str) or not _literal_prefix(pattern)):
            raise ConfigError(f"cache_key_pattern must start with a literal key prefix before its first glob "
                              f"character (* ? [ \\), like 'users:*'; {pattern!r} could clear the whole cache")

        return cls(
            conn_id=_nonempty_str(p, "conn_id"),
            source_table=source,
            target_table=target,
            key=key,
            columns=cols,
            profile=profile,
            batch_size=batch_size,
            partitions=partitions,
            max_rows_per_second=rate,
            max_replica_lag_seconds=lag,
            mode=mode,
            schema=schema,
            replica_conn_ids=tuple(replicas),
            parity_conn_id=parity_conn_id,
            lock_timeout_seconds=_float(p, "lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT_SECONDS, 0.001, 3600),
            statement_timeout_seconds=_float(
                p, "statement_timeout_seconds", DEFAULT_STATEMENT_TIMEOUT_SECONDS, 0.1, 86_400
            ),
            dual_write=dual_write,
            dual_write_updated_column=updated_col if dual_write == "check" else None,
            dual_write_window_minutes=_float(p, "dual_write_window_minutes", 10.0, 0.1, 10_080),
            thresholds=thresholds,
            legacy_action=legacy_action,
            legacy_columns=legacy_columns,
            reclaim_storage=reclaim,
            routing_flag=routing_flag,
            replica_wait_timeout_seconds=_float(p, "replica_wait_timeout_seconds", 600.0, 1, 86_400),
            halt_lag_seconds=_float(p, "halt_lag_seconds", 5.0, 0.1, 86_400),
            halt_lag_after_seconds=_float(p, "halt_lag_after_seconds", 300.0, 1, 86_400),
            cache_redis_url=redis_url,
            cache_key_pattern=pattern,
            run_id=run_id,
            approval=approval,
            approval_timeout_minutes=_float(
                p, "approval_timeout_minutes", DEFAULT_APPROVAL_TIMEOUT_MINUTES, 1, 30 * 24 * 60
            ),
            soak_minutes=_float(p, "soak_minutes", profile.soak_minutes, 0, 30 * 24 * 60),
            flag_store=flag_store,
            flag_store_url=flag_store_url,
            error_signal_sql=signal_sql,
            error_signal_url=signal_url,
            error_signal_json_key=str(p.get("error_signal_json_key") or "error_rate_pct"),
            ramp_percent=_int(p, "ramp_percent", 1, 1, 100),
            ramp_watch_minutes=_float(p, "ramp_watch_minutes", profile.ramp_watch_minutes, 0, 24 * 60),
            target_batch_seconds=_float(p, "target_batch_seconds", DEFAULT_TARGET_BATCH_SECONDS, 0, 60),
            min_batch_size=_int(p, "min_batch_size", min(profile.min_batch_size, batch_size), 1, batch_size),
            max_batch_size=batch_size,
            max_load={**DEFAULT_MAX_LOAD, **_numbers(p, "max_load")},
            critical_load=_numbers(p, "critical_load"),
            throttle_query=throttle_query,
            throttle_query_max=_optional_positive(p, "throttle_query_max", None) if throttle_query else None,
            allow_functions=tuple(
                validate_identifier(f, "allow_functions entry").lower() for f in (p.get("allow_functions") or ())
            ),
            dry_run=_flag(p, "dry_run"),
            validation=_choice(p, "validation", ("full", "sampled"), "full"),
            validation_chunk_seconds=_float(p, "validation_chunk_seconds", 0.5, 0.01, 60),
            validation_recheck_seconds=_float(p, "validation_recheck_seconds", 2.0, 0, 600),
            validation_confidence=_float(p, "validation_confidence", 0.999, 0.5, 0.999999),
            validation_detect_pct=_float(p, "validation_detect_pct", 0.01, 0.0001, 50),
            validation_source=_choice(p, "validation_source", ("primary", "replica"), "primary"),
            allow_unwatched_ramp=_flag(p, "allow_unwatched_ramp"),
            **conn_ids,
        )._checked_policy()

    def _checked_policy(self) -> "RunConfig":
        """Raise on what the prod profile forbids, unless this is a dry run (which writes
        nothing, and lists the same :meth:`policy_problems` in its output instead)."""
        problems = self.policy_problems()
        if problems and not self.dry_run:
            raise ConfigError("the prod profile refuses " + "; ".join(problems))
        return self

    def policy_problems(self) -> list[str]:
        """What the prod profile forbids in this conf (issue 22: prod means prod); empty on dev
        and staging, where rehearsals run unattended.

        :returns: one phrase per forbidden combination: ``approval: auto``, a soak under
            :data:`PROD_SOAK_FLOOR_MINUTES`, ``legacy_action`` drop / rename after a sampled
            validation, a read ramp with no error signal unless ``allow_unwatched_ramp``.
        """
        if self.profile.name != "prod":
            return []
        problems = []
        if self.approval == "auto":
            problems.append("approval 'auto' (a human approves contract and rollback on prod)")
        if self.soak_minutes < PROD_SOAK_FLOOR_MINUTES:
            problems.append(f"soak_minutes {self.soak_minutes:g} (the prod floor is {PROD_SOAK_FLOOR_MINUTES:g} min: "
                            "a deploy, its rollback and the first hourly jobs on the new schema)")
        if self.legacy_action != "keep" and self.validation != "full":
            problems.append(f"legacy_action {self.legacy_action!r} after a {self.validation} validation "
                            "(dropping or renaming legacy needs a full, exact one)")
        watched = self.error_signal_sql or self.error_signal_url or self.error_signal_conn_id
        if not watched and not self.allow_unwatched_ramp:
            problems.append("a ramp with no error signal (give error_signal_sql, error_signal_conn_id or error_signal_url, "
                            "or set allow_unwatched_ramp: true, recorded in the report)")
        return problems

    # ------------------------------------------------------------------ derived
    @property
    def write_flag(self) -> str:
        """The flag that tells the application to stop writing the legacy schema (``<target>_write_path``
        beside the read flag ``<target>_read_path``)."""
        base = self.routing_flag.removesuffix("_read_path")
        return f"{base}_write_path"

    def rate_per_partition(self, planned: int | None = None) -> float | None:
        """Rows/s ceiling of one partition: the run's ceiling shared by the *planned* partitions
        (a tiny table gets fewer partitions than asked; each then gets a larger share).

        :param planned: partitions in the plan; ``partitions`` (asked) when ``None``.
        :returns: ``max_rows_per_second / planned`` (rows/s), ``None`` when unthrottled.
        """
        if self.max_rows_per_second is None:
            return None
        return self.max_rows_per_second / max(1, planned or self.partitions)

    def batch_sizer(self) -> BatchSizer:
        """A fresh :class:`~zdt_backfill.copying.chunker.BatchSizer` of this run's copy batches (``batch_size``,
        ``target_batch_seconds``, ``min_batch_size``, ``max_batch_size``): the one the copier
        adapts, and what the dry run and :meth:`describe` show as the first batch size (rows)."""
        from .copying.chunker import BatchSizer

        return BatchSizer(self.batch_size, self.target_batch_seconds, self.min_batch_size, self.max_batch_size)

    def describe(self) -> str:
        """The resolved config in words, for the log (connection ids only: no URL, no password)."""
        what = (f"copy {self.source_table} -> {self.target_table}" if self.mode == "copy"
                else f"fill {self.source_table}")
        cols = ", ".join(f"{k} = {v}" for k, v in self.columns.items())
        rate = f"{self.max_rows_per_second:,.0f} rows/s for the whole run" if self.max_rows_per_second else "no rows/s ceiling"
        lag = (f"batches wait while a replica lags over {self.max_replica_lag_seconds:g} s"
               if self.max_replica_lag_seconds else "no replica-lag gate")
        replicas = ", ".join(self.replica_conn_ids) or "none"
        first = self.batch_sizer().size
        sizing = (f"batches of up to {self.batch_size:,} rows (from {first:,}, "
                  f"at least {self.min_batch_size:,}, each within {self.target_batch_seconds:g} s)"
                  if self.target_batch_seconds > 0 else f"batches of {self.batch_size:,} rows")
        return (f"{what} by key {self.key} on connection {self.conn_id} (replicas: {replicas}); columns: {cols}; "
                f"profile {self.profile.name}: {self.partitions} partition(s), {sizing}, {rate}, {lag}; "
                f"validation {self.validation} on the {self.validation_source}; dual-write {self.dual_write}, "
                f"approval {self.approval}, legacy table: {self.legacy_action}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the resolved config (profile and thresholds expanded), safe to
        log: every URL's secrets are masked (:func:`~zdt_backfill.redact.mask_url`)."""
        d = dataclasses.asdict(self)
        d["profile"] = self.profile.name
        for name in ("cache_redis_url", "flag_store_url", "error_signal_url"):
            d[name] = mask_url(d[name])
        d["replica_conn_ids"] = list(self.replica_conn_ids)
        d["legacy_columns"] = list(self.legacy_columns)
        return d


# ---------------------------------------------------------------------- helpers
def _required(p: Mapping[str, Any], name: str) -> Any:
    if p.get(name) in (None, ""):
        raise ConfigError(f"{name} is required")
    return p[name]


def _nonempty_str(p: Mapping[str, Any], name: str) -> str:
    v = _required(p, name)
    if not isinstance(v, str):
        raise ConfigError(f"{name} must be a string")
    return v


def _number(p: Mapping[str, Any], name: str) -> float | None:
    v = p.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a number, got {v!r}")
    return v


def _int(p: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = _number(p, name)
    if v is None:
        return default
    if int(v) != v or not lo <= v <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {v!r}")
    return int(v)


def _float(p: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    v = _number(p, name)
    if v is None:
        return default
    if not lo <= v <= hi:
        raise ConfigError(f"{name} must be from {lo} to {hi}, got {v!r}")
    return float(v)


def _optional_positive(p: Mapping[str, Any], name: str, default: float | None) -> float | None:
    if name not in p or p[name] is None:
        return default
    v = _number(p, name)
    if v == 0:  # 0 means "off" in the form, like gh-ost's --max-lag-millis=0
        return None
    if v is None or v < 0:
        raise ConfigError(f"{name} must be a positive number, or 0 to turn it off, got {p[name]!r}")
    return float(v)


def _numbers(p: Mapping[str, Any], name: str) -> dict[str, float]:
    v = p.get(name) or {}
    if not isinstance(v, Mapping) or not all(
        isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for k, x in v.items()
    ):
        raise ConfigError(f'{name} must be an object {{"signal": number >= 0}}, got {v!r}')
    return {k: float(x) for k, x in v.items()}


def _literal_prefix(pattern: str) -> str:
    """The characters of a Redis ``SCAN MATCH`` pattern before its first glob character."""
    cut = min((i for i in (pattern.find(ch) for ch in "*?[\\") if i >= 0), default=len(pattern))
    return pattern[:cut].strip()


def _optional_conn_id(p: Mapping[str, Any], name: str) -> str | None:
    v = p.get(name) or None
    if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > 250):
        raise ConfigError(f"{name} must name an Airflow connection (a non-empty string), got {v!r}")
    return v


def _flag(p: Mapping[str, Any], name: str) -> bool:
    v = p.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return v


def _choice(p: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    v = p.get(name)
    if v is None or v == "":
        return default
    if v not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {v!r}")
    return v
