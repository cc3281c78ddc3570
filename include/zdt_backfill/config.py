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
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError
from .identifiers import validate_expression, validate_identifier

MODES = ("copy", "fill")
DUAL_WRITE_MODES = ("check", "assumed")
RECLAIM_MODES = ("online", "none")


@dataclass(frozen=True)
class Profile:
    """Tuning defaults of one environment, from the seed's Environment Context Matrix.

    :param batch_size: rows per batch (one transaction each).
    :param max_rows_per_second: rows/s ceiling for the whole run, ``None`` = unthrottled.
    :param max_replica_lag_seconds: replica lag (s) above which batches pause, ``None`` = no gate.
    :param partitions: key-range partitions copied in parallel (mapped tasks).
    """

    name: str
    batch_size: int
    max_rows_per_second: float | None
    max_replica_lag_seconds: float | None
    partitions: int


#: The seed's matrix: dev 50k rows and no throttle; staging 10k rows at 1000 rows/s;
#: prod 500-1000 rows at 500 rows/s (we take 1000, pgroll's and gh-ost's default).
#: The lag gates follow the seed's "replica replication lag < 2s".
PROFILES: dict[str, Profile] = {
    "dev": Profile("dev", batch_size=50_000, max_rows_per_second=None, max_replica_lag_seconds=10.0, partitions=2),
    "staging": Profile("staging", batch_size=10_000, max_rows_per_second=1_000, max_replica_lag_seconds=2.0, partitions=2),
    "prod": Profile("prod", batch_size=1_000, max_rows_per_second=500, max_replica_lag_seconds=2.0, partitions=1),
}

#: Hard limits on tuning values, so a typo cannot turn a backfill into a monolith.
MAX_BATCH_SIZE = 100_000  # gh-ost's upper bound for chunk size
MAX_PARTITIONS = 64  # each mapped task costs scheduler work; see AIRFLOW3_NOTES

#: Session lock wait for backfill statements: short, so the backfill yields to the
#: application rather than queueing behind it (pgroll uses 500 ms); retried with backoff.
DEFAULT_LOCK_TIMEOUT_SECONDS = 0.5
#: Statement timeout of one batch statement: a batch that takes this long is not small.
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds, from the seed's Forward & Rollback Paths table.

    Forward (contract) needs checksum match >= ``min_checksum_match_pct`` and replica
    lag < ``forward_max_lag_seconds``; error rate > ``max_error_rate_pct`` or lag >
    ``rollback_lag_seconds`` rolls back. Anything short of forward rolls back.
    """

    min_checksum_match_pct: float = 99.99
    forward_max_lag_seconds: float = 2.0
    rollback_lag_seconds: float = 5.0
    max_error_rate_pct: float = 0.01


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
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    statement_timeout_seconds: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS
    dual_write: str = "check"
    dual_write_updated_column: str | None = "updated_at"
    dual_write_window_minutes: float = 10.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    drop_legacy: bool = False
    legacy_columns: tuple[str, ...] = ()
    reclaim_storage: str = "online"
    routing_flag: str = ""
    replica_wait_timeout_seconds: float = 600.0
    cache_redis_url: str | None = None
    cache_key_pattern: str | None = None
    run_id: str = "manual"

    # ------------------------------------------------------------------ building
    @classmethod
    def from_params(cls, params: Mapping[str, Any], run_id: str = "manual") -> "RunConfig":
        """Validate Params/conf and return a ``RunConfig``.

        :param params: the DAG run's params (``context["params"]``) or a conf dict; keys
            as documented in the README's conf reference. ``None`` values mean "use the
            profile's default".
        :param run_id: the Airflow run id, used for checkpoints, the run lock and session tags.
        :raises ConfigError: a field is missing, of the wrong type, out of range, or unsafe.
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
            raise ConfigError("in fill mode the target is the source table itself; leave target_table empty")
        if mode == "copy" and target == source:
            raise ConfigError("in copy mode target_table must differ from source_table")

        key = validate_identifier(p.get("key") or "id", "key")
        columns = p.get("columns")
        if not isinstance(columns, Mapping) or not columns:
            raise ConfigError('columns must be a non-empty object {"target_column": "SQL expression"}')
        cols = {validate_identifier(c, "target column"): validate_expression(e, c) for c, e in columns.items()}
        if key in cols:
            raise ConfigError(f"the key {key!r} is copied as is; do not list it in columns")

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
        drop_legacy = _bool(p, "drop_legacy", False)
        if drop_legacy and mode == "fill" and not legacy_columns:
            raise ConfigError("drop_legacy in fill mode needs legacy_columns: the columns to drop")

        routing_flag = p.get("routing_flag") or f"{target}_read_path"
        if not isinstance(routing_flag, str) or len(routing_flag) > 128:
            raise ConfigError("routing_flag must be a string of at most 128 characters")

        defaults = Thresholds()
        thresholds = Thresholds(
            min_checksum_match_pct=_float(p, "min_checksum_match_pct", defaults.min_checksum_match_pct, 0, 100),
            forward_max_lag_seconds=_float(p, "forward_max_lag_seconds", defaults.forward_max_lag_seconds, 0, 3600),
            rollback_lag_seconds=_float(p, "rollback_lag_seconds", defaults.rollback_lag_seconds, 0, 3600),
            max_error_rate_pct=_float(p, "max_error_rate_pct", defaults.max_error_rate_pct, 0, 100),
        )
        if thresholds.rollback_lag_seconds < thresholds.forward_max_lag_seconds:
            raise ConfigError("rollback_lag_seconds must be >= forward_max_lag_seconds")

        redis_url = p.get("cache_redis_url") or None
        pattern = p.get("cache_key_pattern") or None
        if bool(redis_url) != bool(pattern):
            raise ConfigError("cache_redis_url and cache_key_pattern go together")
        if pattern is not None and (not isinstance(pattern, str) or pattern.strip("*") == ""):
            raise ConfigError("cache_key_pattern must name a key prefix; a bare '*' would clear the whole cache")

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
            lock_timeout_seconds=_float(p, "lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT_SECONDS, 0.001, 3600),
            statement_timeout_seconds=_float(
                p, "statement_timeout_seconds", DEFAULT_STATEMENT_TIMEOUT_SECONDS, 0.1, 86_400
            ),
            dual_write=dual_write,
            dual_write_updated_column=updated_col if dual_write == "check" else None,
            dual_write_window_minutes=_float(p, "dual_write_window_minutes", 10.0, 0.1, 10_080),
            thresholds=thresholds,
            drop_legacy=drop_legacy,
            legacy_columns=legacy_columns,
            reclaim_storage=reclaim,
            routing_flag=routing_flag,
            replica_wait_timeout_seconds=_float(p, "replica_wait_timeout_seconds", 600.0, 1, 86_400),
            cache_redis_url=redis_url,
            cache_key_pattern=pattern,
            run_id=run_id,
        )

    # ------------------------------------------------------------------ derived
    def rate_per_partition(self) -> float | None:
        """Rows/s ceiling of one partition: the run's ceiling shared by all partitions.

        Partitions run in parallel, so each gets ``max_rows_per_second / partitions``
        (rows/s); ``None`` when unthrottled.
        """
        if self.max_rows_per_second is None:
            return None
        return self.max_rows_per_second / self.partitions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the resolved config (profile and thresholds expanded), safe to
        log: a password in ``cache_redis_url`` is masked."""
        d = dataclasses.asdict(self)
        d["profile"] = self.profile.name
        d["cache_redis_url"] = _mask_password(self.cache_redis_url)
        d["replica_conn_ids"] = list(self.replica_conn_ids)
        d["legacy_columns"] = list(self.legacy_columns)
        return d


# ---------------------------------------------------------------------- helpers
def _mask_password(url: str | None) -> str | None:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    if not url:
        return url
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


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


def _bool(p: Mapping[str, Any], name: str, default: bool) -> bool:
    v = p.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return v
