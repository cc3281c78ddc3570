"""The one validated configuration object of a backfill run.

:class:`RunConfig` is built once from Airflow Params / conf JSON (or a CLI) by
:meth:`RunConfig.from_params`, which checks every field and fills unset tuning fields
from an environment :class:`Profile`. Everything downstream takes a ``RunConfig``;
no loose dicts travel through the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .identifiers import validate_expression, validate_identifier
from .redact import mask_url

if TYPE_CHECKING:
    from .copying.chunker import BatchSizer

# The declarations (and the profiles: the per-profile defaults) live in .fields; re-exported
# here, where the engine and the tests have always imported them from.
from .fields import (  # noqa: E402,F401
    APPROVAL_MODES,
    DEFAULT_APPROVAL_TIMEOUT_MINUTES,
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    DEFAULT_MAX_LOAD,
    DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    DEFAULT_TARGET_BATCH_SECONDS,
    DUAL_WRITE_MODES,
    FIELDS,
    FLAG_STORES,
    LEGACY_ACTIONS,
    MAX_BATCH_SIZE,
    MAX_PARTITIONS,
    MODES,
    PROD_SOAK_FLOOR_MINUTES,
    PROFILES,
    RECLAIM_MODES,
    Profile,
    default_of,
)


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds, from the seed's Forward & Rollback Paths table (see :mod:`zdt_backfill.lifecycle.decision`).

    Errors (data errors, differences left after repair) above ``max_error_rate_pct`` roll
    back; none goes forward; in between holds for a human. Replica lag never rolls back:
    forward waits (holds) until lag is under ``forward_max_lag_seconds``. During the ramp, a
    5xx rate above ``max_5xx_rate_pct`` flips reads back to legacy and halts.
    """

    forward_max_lag_seconds: float = default_of("forward_max_lag_seconds")
    max_error_rate_pct: float = default_of("max_error_rate_pct")
    max_5xx_rate_pct: float = default_of("max_5xx_rate_pct")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A validated backfill run.

    Identifiers are validated plain names (quoted later by the dialect); ``columns``
    maps each target column to a SQL expression over source columns. Every attribute but
    ``thresholds`` (whose own three are), ``max_batch_size`` and ``run_id`` is a field of
    :data:`~zdt_backfill.fields.FIELDS`, where its default and bounds are declared: there are
    no defaults here, and only :meth:`from_params` builds one.
    """

    conn_id: str
    source_table: str
    key: str | None  # None until keys.resolve_key reads the primary key
    columns: dict[str, str]
    profile: Profile
    batch_size: int
    partitions: int
    max_rows_per_second: float | None
    max_replica_lag_seconds: float | None
    mode: str
    target_table: str
    schema: str | None
    replica_conn_ids: tuple[str, ...]
    parity_conn_id: str | None
    lock_timeout_seconds: float
    statement_timeout_seconds: float
    dual_write: str
    dual_write_updated_column: str | None
    dual_write_window_minutes: float
    thresholds: Thresholds
    legacy_action: str
    legacy_columns: tuple[str, ...]
    reclaim_storage: str
    routing_flag: str
    replica_wait_timeout_seconds: float
    halt_lag_seconds: float
    halt_lag_after_seconds: float
    approval: str
    approval_timeout_minutes: float
    soak_minutes: float
    flag_store: str
    flag_store_url: str | None
    error_signal_sql: str | None
    error_signal_url: str | None
    error_signal_json_key: str
    ramp_percent: int
    ramp_watch_minutes: float
    target_batch_seconds: float
    min_batch_size: int
    max_batch_size: int
    max_load: dict[str, float]
    critical_load: dict[str, float]
    throttle_query: str | None
    throttle_query_max: float | None
    allow_functions: tuple[str, ...]
    dry_run: bool
    validation: str
    allow_unwatched_ramp: bool
    validation_chunk_seconds: float
    validation_recheck_seconds: float
    validation_confidence: float
    validation_detect_pct: float
    validation_source: str
    cache_redis_url: str | None
    cache_key_pattern: str | None
    flag_store_conn_id: str | None
    error_signal_conn_id: str | None
    cache_conn_id: str | None
    run_id: str

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
        unknown = sorted(set(p) - set(FIELDS))
        if unknown:
            raise ConfigError(f"unknown conf field(s): {', '.join(unknown)}")
        F = FIELDS
        profile = PROFILES[F["profile"].read(p)]
        # every plain field (a number, flag, choice, connection id or string): its declared
        # default (the profile's where it is per profile) and bounds; the rules between fields follow
        v = {name: f.read(p, profile) for name, f in F.items()
             if f.kind in ("integer", "number", "boolean", "choice", "conn_id", "string")}
        mode = v["mode"]

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

        key = validate_identifier(p["key"], "key") if p.get("key") else None  # None: the primary key (keys.py)
        columns = p.get("columns")
        if not isinstance(columns, Mapping) or not columns:
            raise ConfigError('columns must be a non-empty object {"target_column": "SQL expression"}')
        cols = {validate_identifier(c, "target column"): validate_expression(e, c) for c, e in columns.items()}

        schema = p.get("schema")
        if schema is not None:
            schema = validate_identifier(schema, "schema")

        batch_size = v["batch_size"]
        v["min_batch_size"] = F["min_batch_size"].read(p, profile, default=min(profile.min_batch_size, batch_size),
                                                       maximum=batch_size)

        replicas = p.get("replica_conn_ids") or ()
        if isinstance(replicas, str) or not all(isinstance(r, str) and r for r in replicas):
            raise ConfigError("replica_conn_ids must be a list of connection ids")
        if v["validation_source"] == "replica" and not replicas:
            raise ConfigError('validation_source "replica" needs replica_conn_ids: validation reads the first replica')

        if v["parity_conn_id"] is not None and v["parity_conn_id"] == p.get("conn_id"):
            raise ConfigError("parity_conn_id must name the other environment (staging), not conn_id itself")

        updated_col = p.get("dual_write_updated_column", F["dual_write_updated_column"].default)
        if v["dual_write"] == "check":
            if not updated_col:
                raise ConfigError('dual_write "check" needs dual_write_updated_column (a timestamp of the last write)')
            updated_col = validate_identifier(updated_col, "dual_write_updated_column")

        legacy_columns = tuple(validate_identifier(c, "legacy column") for c in (p.get("legacy_columns") or ()))
        if v["legacy_action"] != "keep" and mode == "fill" and not legacy_columns:
            raise ConfigError(f"legacy_action {v['legacy_action']!r} in fill mode needs legacy_columns: "
                              f"the columns to {v['legacy_action']}")
        if v["flag_store_url"] and v["flag_store_conn_id"]:
            raise ConfigError("give flag_store_url or flag_store_conn_id, not both")
        if v["flag_store"] == "http" and not (v["flag_store_url"] or v["flag_store_conn_id"]):
            raise ConfigError('flag_store "http" needs flag_store_conn_id (an Airflow HTTP connection) or flag_store_url')
        if sum(bool(v[x]) for x in ("error_signal_sql", "error_signal_url", "error_signal_conn_id")) > 1:
            raise ConfigError("give one of error_signal_sql, error_signal_url or error_signal_conn_id, not several")
        if v["error_signal_sql"] is not None and ";" in v["error_signal_sql"]:
            raise ConfigError("error_signal_sql must be one read-only SELECT returning a percentage, without ';'")
        throttle_query = v["throttle_query"]
        if throttle_query is not None and ";" in throttle_query:
            raise ConfigError("throttle_query must be one read-only SELECT returning a number, without ';'")
        if throttle_query and p.get("throttle_query_max") is None:
            raise ConfigError("throttle_query needs throttle_query_max: the value at or above which batches wait")
        if not throttle_query:
            v["throttle_query_max"] = None
        for name in ("flag_store_url", "error_signal_url"):
            url = v[name]
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")

        routing_flag = p.get("routing_flag") or f"{target}_read_path"
        if not isinstance(routing_flag, str) or len(routing_flag) > F["routing_flag"].schema["maxLength"]:
            raise ConfigError("routing_flag must be a string of at most 128 characters")

        thresholds = Thresholds(**{f.name: v.pop(f.name) for f in dataclasses.fields(Thresholds)})

        redis_url, pattern = v["cache_redis_url"], v["cache_key_pattern"]
        if redis_url and v["cache_conn_id"]:
            raise ConfigError("give cache_redis_url or cache_conn_id, not both")
        if bool(redis_url or v["cache_conn_id"]) != bool(pattern):
            raise ConfigError("cache_key_pattern goes with cache_conn_id (an Airflow Redis connection) or cache_redis_url")
        if pattern is not None and not _literal_prefix(pattern):
            raise ConfigError(f"cache_key_pattern must start with a literal key prefix before its first glob "
                              f"character (* ? [ \\), like 'users:*'; {pattern!r} could clear the whole cache")

        v.update(
            conn_id=_nonempty_str(p, "conn_id"),
            profile=profile,
            source_table=source,
            target_table=target,
            key=key,
            columns=cols,
            schema=schema,
            replica_conn_ids=tuple(replicas),
            dual_write_updated_column=updated_col if v["dual_write"] == "check" else None,
            thresholds=thresholds,
            legacy_columns=legacy_columns,
            routing_flag=routing_flag,
            run_id=run_id,
            max_batch_size=batch_size,
            max_load={**DEFAULT_MAX_LOAD, **_numbers(p, "max_load")},
            critical_load=_numbers(p, "critical_load"),
            allow_functions=tuple(
                validate_identifier(f, "allow_functions entry").lower() for f in (p.get("allow_functions") or ())
            ),
        )
        return cls(**v        )._checked_policy()

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
        return (f"{what} by key {self.key or '(the primary key)'} on connection {self.conn_id} (replicas: {replicas}); columns: {cols}; "
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

