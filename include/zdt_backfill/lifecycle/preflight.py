"""Pre-flight: read-only checks before anything is written.

Every check reads; none writes. Only when all fatal checks pass does
:func:`run_preflight` create the control tables and take the run lock (the first
write of a run), so a run refused here leaves the database exactly as it was.

Checks (fatal unless marked *warn*):

- the source (and in copy mode the target) is a table (a view is refused as a view) and
  exists, and every named column;
- the key is an integer, ``NOT NULL`` column (a unique index allows NULLs, and rows with a
  NULL key are neither copied nor validated) with a unique single-column index on the
  source (and on the target in copy mode, which ``ON CONFLICT``/``ON DUPLICATE KEY``
  needs); these key checks run, and refuse, before any check of the columns, so a refusal
  names the real cause; the key is not listed among the columns;
- every column expression is a pure function of the source row, parsed per dialect by
  :func:`~.expressions.expression_problems`: column references, literals, operators,
  ``CASE``, ``CAST`` and allow-listed deterministic functions only (no subquery, no other
  table, no ``now()``/``random()``, no ``pg_sleep``/``sleep``), so validation can trust
  that evaluating it twice gives the same value;
- the target columns are nullable (fatal in fill mode, which finds unfilled rows by
  ``IS NULL``; *warn* in copy mode);
- fill mode: no target column is read by a column expression (that is an in-place
  rewrite, not a backfill of a new column, and rollback would NULL the original data);
- copy mode: the target holds no key absent from the source (it is a fresh expand
  target, with at most dual-written rows, so rollback may truncate it), and on MySQL
  it has no unique index besides the key (``ON DUPLICATE KEY`` would silently skip
  rows colliding on it);
- MySQL: the binlog is not statement-based (READ COMMITTED batches need row events);
- ``EXPLAIN`` of the real batch statement reads the source through the key index
  (an index range scan, never a full table scan); this also proves the column
  expressions parse;
- health: every replica reachable with lag under the gate, and the server not
  overloaded (active sessions / ``Threads_running`` under ``MAX_THREADS_RUNNING``);
- settings (*warn*): the server's lock wait settings, per the seed (MySQL
  ``innodb_lock_wait_timeout`` >= 30 s so application transactions outwait a batch).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import RunConfig
from ..copying.chunker import Partition, partition_count, partitions_at, plan_partitions
from ..db import Database
from ..errors import PreflightError
from ..expressions import expression_problems, function_names, query_problems
from ..keys import key_problem
from ..signals import heartbeat
from ..signals.lag import LagProbe, max_lag
from ..state.checkpoint import CheckpointStore
from ..state.runstate import HALTED, POST_FLIP, PostFlipError, RunHandle, RunStateStore, post_flip_refusal

log = logging.getLogger(__name__)

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint", "int", "tinyint", "mediumint"})
#: gh-ost's default --max-load: Threads_running=25. Also used for active PostgreSQL backends.
MAX_THREADS_RUNNING = 25
#: The seed: "innodb_lock_wait_timeout > 30s" for the application's sessions.
MIN_SERVER_LOCK_WAIT_SECONDS = 30


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Plan:
    """The outcome of pre-flight: what the backfill will do.

    ``partitions`` are dicts (:meth:`~zdt_backfill.copying.chunker.Partition.to_dict`) ready for Airflow's
    dynamic task mapping; the rest goes into the run report.
    """

    engine: str
    key_index: str
    min_key: int | None
    max_key: int | None
    rows_estimate: int
    partitions: list[dict[str, Any]]
    checks: list[Check] = field(default_factory=list)
    explain: Any = None
    lock: dict[str, Any] = field(default_factory=dict)
    #: ``dual_write: trigger``: the triggers installed (or adopted), by name
    triggers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["checks"] = [c.to_dict() for c in self.checks]
        return d


class _Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []

    def add(self, name: str, ok: bool, detail: str, fatal: bool = True) -> bool:
        self.items.append(Check(name, ok, detail, fatal))
        (log.info if ok else log.warning if not fatal else log.error)(
            "pre-flight %-18s %s  %s", name, "ok" if ok else ("WARN" if not fatal else "FAIL"), detail
        )
        return ok

    def raise_if_failed(self) -> None:
        failed = [c for c in self.items if c.fatal and not c.ok]
        if failed:
            raise PreflightError("pre-flight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))


def _columns(db: Database, conn: Any, table: str) -> dict[str, tuple[str, bool]]:
    rows = db.query(conn, db.dialect.columns_sql(), (db.schema, table))
    return {r[0]: (str(r[1]).lower(), bool(r[2])) for r in rows}


def _relation_kind(db: Database, conn: Any, table: str) -> str | None:
    """The catalog's kind of a relation (:meth:`~zdt_backfill.dialects.catalog.Catalog.relation_kind_sql`),
    ``None`` when there is none of that name."""
    rows = db.query(conn, db.dialect.relation_kind_sql(), (db.schema, table))
    if not rows:
        return None
    kind = rows[0][0]
    return kind.decode() if isinstance(kind, (bytes, bytearray)) else str(kind)


def _is_table(checks: "_Checks", name: str, label: str, kind: str | None, db: Database) -> bool:
    """Add the check that a relation is a table; False (and a failed check) when it is not."""
    what = db.dialect.NOT_A_TABLE.get(kind or "")
    if what:
        return checks.add(name, False, f"{label} is {what}, not a table: give the table it reads")
    return True


def inspect(config: RunConfig, db: Database, conn: Any, probes: list[LagProbe]) -> Plan:
    """Run every read-only check and plan the partitions.

    :returns: the :class:`Plan` (with every check's outcome).
    :raises PreflightError: one or more fatal checks failed (all are listed in the message).
    """
    d, c = db.dialect, config
    checks = _Checks()
    where = f"{c.schema}." if c.schema else ""

    if not _is_table(checks, "source_table", f"{where}{c.source_table}", _relation_kind(db, conn, c.source_table), db):
        checks.raise_if_failed()
    src_cols = _columns(db, conn, c.source_table)
    if not checks.add("source_table", bool(src_cols), f"{where}{c.source_table} {'exists' if src_cols else 'not found'}"):
        checks.raise_if_failed()
    if c.mode == "copy":
        if not _is_table(checks, "target_table", f"{where}{c.target_table}", _relation_kind(db, conn, c.target_table), db):
            checks.raise_if_failed()
        tgt_cols = _columns(db, conn, c.target_table)
        if not checks.add("target_table", bool(tgt_cols), f"{where}{c.target_table} {'exists' if tgt_cols else 'not found'}"):
            checks.raise_if_failed()
    else:
        tgt_cols = src_cols

    # The key first: a refusal must name the key's problem, not a consequence of it.
    if c.key is None:  # the conf left it out and the primary key is not one column (keys.resolve_key)
        checks.add("key", False, key_problem(db, conn, c.source_table))
        checks.raise_if_failed()
    key_type, key_nullable = src_cols.get(c.key, ("", False))
    if not checks.add("key", c.key in src_cols, f"key column {c.key!r} {'found' if c.key in src_cols else 'not found'} in source"):
        checks.raise_if_failed()
    checks.add(
        "key_type",
        key_type in INTEGER_TYPES,
        f"key {c.key!r} is {key_type}"
        + ("" if key_type in INTEGER_TYPES else ": only integer keys are supported (composite and non-integer keys are not yet)"),
    )
    checks.add(
        "key_not_null",
        not key_nullable,
        f"key column {c.key!r} of {c.source_table} is NULL-able: a unique index allows NULLs, and rows with a NULL "
        "key are neither copied nor validated; make it NOT NULL (or the primary key)"
        if key_nullable else f"key column {c.key!r} is NOT NULL",
    )
    if c.mode == "copy":
        if checks.add("target_key", c.key in tgt_cols, f"key column {c.key!r} {'found' if c.key in tgt_cols else 'not found'} in target"):
            checks.add(
                "target_key_not_null",
                not tgt_cols[c.key][1],
                f"key column {c.key!r} of {c.target_table} is NULL-able: rows the application writes with a NULL key "
                "would never be validated; make it NOT NULL (or the primary key)"
                if tgt_cols[c.key][1] else f"target key column {c.key!r} is NOT NULL",
            )
    checks.raise_if_failed()
    checks.add(
        "key_not_in_columns",
        c.key not in c.columns,
        f"the key {c.key!r} is copied as is; do not list it in columns" if c.key in c.columns
        else "the key is copied as is",
    )
    unsafe = {
        col: problems for col, e in c.columns.items()
        if (problems := expression_problems(e, d.name, c.allow_functions, c.source_table))
    }
    checks.add(
        "expressions",
        not unsafe,
        " ".join(f"expression for {col!r} ({c.columns[col]}): {'; '.join(p)}." for col, p in unsafe.items())
        if unsafe else f"{len(c.columns)} expression(s) read only the source row, deterministically",
    )
    queries = {f: q for f, q in (("throttle_query", c.throttle_query), ("error_signal_sql", c.error_signal_sql)) if q}
    bad_probes = {f: problems for f, q in queries.items() if (problems := query_problems(q, d.name))}
    checks.add(
        "probe_queries",
        not bad_probes,
        " ".join(f"{f} ({queries[f]}): {'; '.join(p)}." for f, p in bad_probes.items())
        if bad_probes else f"{len(queries)} probe quer{'y' if len(queries) == 1 else 'ies'}: one read-only SELECT each",
    )
    shadow_sql = d.shadowed_functions_sql()
    called = sorted(set().union(*(function_names(q, d.name) for q in [*c.columns.values(), *queries.values()])))
    if shadow_sql and called:
        shadows = db.query(conn, shadow_sql, (called,))
        checks.add(
            "functions_unshadowed",
            not shadows,
            " ".join(f"{name}() would run {schema}.{name}, not the built-in: schema {schema} is ahead of pg_catalog "
                     "on the search path (put pg_catalog first in the role's search_path, or drop the function)."
                     for name, schema in shadows)
            if shadows else f"{len(called)} function name(s) resolve to the built-ins",
        )
    missing = [col for col in c.columns if col not in tgt_cols]
    checks.add("target_columns", not missing, f"missing in target: {missing}" if missing else f"{len(c.columns)} target column(s) found")
    not_nullable = [col for col in c.columns if col in tgt_cols and not tgt_cols[col][1]]
    checks.add(
        "target_nullable",
        not not_nullable,
        f"NOT NULL target column(s): {not_nullable}" if not_nullable else "target column(s) nullable",
        fatal=c.mode == "fill",
    )
    if c.mode == "fill":
        read = sorted(
            col for col in c.columns
            if any(re.search(rf"\b{re.escape(col)}\b", e, re.IGNORECASE) for e in c.columns.values())
        )
        checks.add(
            "fill_columns_new",
            not read,
            f"column(s) {read} are read by the expressions: fill mode fills new columns, and its rollback "
            "NULLs them" if read else "target columns are not read by the expressions",
        )
    if c.dual_write == "check":
        uc = c.dual_write_updated_column
        checks.add("dual_write_column", uc in src_cols, f"source column {uc!r} {'found' if uc in src_cols else 'not found'} (dual_write_updated_column)")
    checks.raise_if_failed()

    indexes = [r[0] for r in db.query(conn, d.key_index_sql(), (db.schema, c.source_table, c.key))]
    unique_src = db.query(conn, d.unique_key_sql(), (db.schema, c.source_table, c.key))[0][0]
    checks.add("key_indexed", bool(indexes) and unique_src > 0, f"unique index on {c.key!r}: {indexes[0] if indexes else 'none'}")
    if c.mode == "copy":
        unique_tgt = db.query(conn, d.unique_key_sql(), (db.schema, c.target_table, c.key))[0][0]
        checks.add("target_key_unique", unique_tgt > 0, f"target has a unique index on {c.key!r}" if unique_tgt else f"target has no unique index on {c.key!r} (needed for insert-if-absent)")
        if d.upsert_matches_any_unique_index:
            others = [r[0] for r in db.query(conn, d.other_unique_indexes_sql(), (db.schema, c.target_table, c.key))]
            checks.add(
                "target_other_unique",
                not others,
                f"target has unique index(es) {others} besides the key: MySQL's ON DUPLICATE KEY would "
                "silently skip rows colliding on them" if others else "no other unique index on the target",
            )
    checks.raise_if_failed()
    if c.mode == "copy":
        foreign = db.query(conn, d.keys_absent_from_sql(c.target_table, c.source_table, c.key, db.schema))[0][0]
        checks.add(
            "target_is_fresh",
            foreign == 0,
            f"target holds {foreign} row(s) whose key is not in the source: not a fresh expand target "
            "(a rollback would truncate it)" if foreign else "target holds no key absent from the source",
        )
        checks.raise_if_failed()
    key_index = indexes[0]

    # Bounds and partitions
    bounds = db.query(conn, *d.key_bounds_sql(c.source_table, c.key, db.schema))
    min_key, max_key, est = bounds[0]
    est = int(est or 0)
    if min_key is not None and est <= 0:
        est = max_key - min_key + 1  # never analysed: assume dense
    partitions = _plan_by_rows(db, conn, c, min_key, max_key, est)

    # Server settings before the EXPLAIN: a setting that refuses the run (binlog_format=STATEMENT)
    # also makes the batch statement fail to run, and the setting is the reason to name.
    for name, ok, detail, fatal in d.preflight_settings(lambda sql, params: db.query(conn, sql, params),
                                                        MIN_SERVER_LOCK_WAIT_SECONDS):
        checks.add(name, ok, detail, fatal=fatal)
    checks.raise_if_failed()

    # EXPLAIN the real batch statement under the batch's own session settings.
    explain = None
    if min_key is not None:
        lo, hi = min_key - 1, min(max_key, min_key - 1 + c.batch_size)
        if c.mode == "copy":
            stmt = d.copy_batch_sql(c.source_table, c.target_table, c.key, c.columns, db.schema, key_index)
        else:
            stmt = d.fill_batch_sql(c.source_table, c.key, c.columns, db.schema)
        try:
            explain = explain_plan(db, conn, stmt, (lo, hi))
            ok, detail = d.index_range_scan(explain, c.source_table, key_index)
        except Exception as exc:  # the expression does not parse, a column is wrong...
            checks.add("explain", False, f"the batch statement does not run: {exc}".strip())
            checks.raise_if_failed()
        checks.add("explain", ok, detail)
    else:
        checks.add("explain", True, "source is empty: nothing to copy", fatal=False)

    if c.dual_write == "trigger":  # the up triggers are created after these checks, by this user
        ok, detail = db.query(conn, d.trigger_privilege_sql(), d.trigger_privilege_params(db.schema, c.source_table))[0]
        checks.add("trigger_privilege", bool(ok), str(detail), fatal=d.TRIGGER_PRIVILEGE_FATAL)

    # Health
    if probes:
        worst, readings = max_lag(probes)
        gate = c.max_replica_lag_seconds
        text = ", ".join(f"{n}={'unreachable' if v is None else f'{v:.1f}s'}" for n, v in readings.items())
        healthy = worst is not None and (gate is None or worst <= gate)
        checks.add("replica_lag", healthy, f"{text} (gate {gate}s)")
        checks.add(*_replicas_read_only(probes))
    running = d.active_sessions(lambda sql, params: db.query(conn, sql, params))
    checks.add("load", running < MAX_THREADS_RUNNING, f"active sessions/Threads_running={running} (< {MAX_THREADS_RUNNING})")
    checks.raise_if_failed()

    conn.rollback()
    return Plan(
        engine=d.name, key_index=key_index, min_key=min_key, max_key=max_key, rows_estimate=est,
        partitions=[p.to_dict() for p in partitions], checks=checks.items, explain=explain,
    )


def target_sequences(config: RunConfig, db: Database, conn: Any) -> dict[str, Any]:
    """The target's sequences now (copy mode), which rollback restores.

    PostgreSQL: ``{"sequences": {name: {"last_value": n | None, "start": n, "column": c}}}`` for the
    sequences owned by the target's columns; MySQL: ``{"auto_increment": n | None}``.
    """
    if config.mode != "copy":
        return {}
    return db.dialect.read_sequences(lambda sql, params: db.query(conn, sql, params), config.target_table, db.schema)


#: Above this many estimated rows the partition plan falls back to equal key widths: walking the
#: key index to its quantiles reads every index entry once (about 0.3 s per million rows here).
QUANTILE_WALK_MAX_ROWS = 50_000_000


def _plan_by_rows(db: Database, conn: Any, c: RunConfig, min_key: int | None, max_key: int | None,
                  est: int) -> list[Partition]:
    """Partitions balanced by rows: cut at the key index's quantiles.

    Walks the source's key index from ``min_key`` in steps of ``est / partitions`` keys with the
    copy's own chunk-end statement (a bounded range scan of the index, LIMIT ``step``; the last
    key of each step is a cut), so skewed or sparse keys still give partitions of about equal
    rows, where equal key widths gave one partition nearly all of them. Each statement runs
    under the pre-flight session's statement timeout. Above :data:`QUANTILE_WALK_MAX_ROWS`
    estimated rows it falls back to equal key widths (:func:`~zdt_backfill.copying.chunker.plan_partitions`).

    :returns: contiguous partitions covering ``[min_key, max_key]``; ``[]`` for an empty table.
        Each one's ``rows``: ``step`` for a partition ending at a cut (the walk counted them),
        the counted rest or the estimate's rest for the last one.
    """
    wanted = partition_count(min_key, max_key, est, c.partitions, c.batch_size)
    if wanted <= 1 or est > QUANTILE_WALK_MAX_ROWS:
        return plan_partitions(min_key, max_key, est, c.partitions, c.batch_size)
    step = max(1, -(-est // wanted))
    sql = db.dialect.chunk_end_sql(c.source_table, c.key, db.schema)
    cuts: list[int] = []
    watermark = min_key - 1
    last_rows = None  # the last partition's rows, when the walk counted them
    for _ in range(wanted - 1):
        last, keys = db.query(conn, sql, (watermark, max_key, step))[0]
        if last is None or int(keys) < step or int(last) >= max_key:
            last_rows = int(keys or 0)  # fewer rows than the estimate: the rest is the last partition
            break
        cuts.append(int(last))
        watermark = int(last)
    # each cut partition holds exactly ``step`` keys; the last one the counted rest, else the estimate's
    rows = [step] * len(cuts) + [last_rows if last_rows is not None else max(est - step * len(cuts), 1)]
    return partitions_at(min_key, max_key, cuts, rows)


def explain_plan(db: Database, conn: Any, stmt: str, params: tuple) -> Any:
    """The parsed JSON plan of ``stmt`` (a batch statement) under the batch sessions' plan pinning
    and the dialect's EXPLAIN settings, in ``conn``'s transaction, which is rolled back.

    :raises Exception: the driver's error when the statement does not run (rolled back too).
    """
    d = db.dialect
    try:
        for s in d.explain_session():
            with contextlib.suppress(Exception):  # a server without the setting
                db.execute(conn, s)
        for s in d.plan_pinning():  # undone by the rollback below (SET is transactional)
            db.execute(conn, s)
        doc = db.query(conn, d.explain_sql(stmt), params)[0][0]
    finally:
        conn.rollback()
    return d.parse_plan(doc)


def _replicas_read_only(probes: list[LagProbe]) -> tuple[str, bool, str, bool]:
    """``replicas_read_only`` (a warning): each probed replica refuses client writes (PostgreSQL in
    recovery; MySQL ``super_read_only``, MariaDB ``read_only``). Read on the replica itself."""
    writable, seen = [], []
    for probe in probes:
        rdb = getattr(probe, "db", None)
        if rdb is None or not rdb.dialect.REPLICA_WRITABLE_SQL:
            continue
        try:
            with rdb.session() as rc:
                can_write, detail = rdb.query(rc, rdb.dialect.REPLICA_WRITABLE_SQL)[0]
        except Exception as exc:  # noqa: BLE001 - unreachable: the lag check says so
            seen.append(f"{rdb.name}: unreadable ({str(exc).splitlines()[0][:120]})")
            continue
        seen.append(f"{rdb.name}: {detail}")
        if can_write:
            writable.append(rdb.name)
    text = "; ".join(seen) or "no replica probed"
    if writable:
        text = (f"replica(s) {', '.join(writable)} take client writes: a write there drifts from the primary "
                f"and the copy read on it proves nothing ({text})")
    return "replicas_read_only", not writable, text, False


def run_preflight(
    config: RunConfig, db: Database, probes: list[LagProbe], owner: str = "preflight", parity_db: Database | None = None,
) -> Plan:
    """Check, plan, then create the control tables and take the run lock.

    A run whose lock row names an expired or halted run takes it over and adopts its
    checkpoints (see :meth:`~zdt_backfill.state.runstate.RunHandle.acquire`); the partitions then come from
    those checkpoints, never from a fresh plan, which could move bounds past watermarks.
    A failure after the lock was taken releases it (the run goes to ``halted``).

    :returns: the :class:`Plan` (``plan.lock`` says how the lock was taken).
    :raises PreflightError: a fatal check failed; nothing was written.
    :raises ConcurrentRunError: another run holds a live lease on the target table; nothing was written.
    :raises PreflightError: also on a fatal staging/production parity difference (``parity_db``: the
        other environment, from ``parity_conn_id``), before anything is written.
    """
    if parity_db is not None:
        from ..verify.parity import compare

        tables = [config.source_table] + ([config.target_table] if config.mode == "copy" else [])
        report = compare(parity_db, db, tables)  # staging = parity_db, production = this run's db
        for d in report.warnings:
            log.warning("environment parity: %s", d.line())
        report.raise_if_fatal()
    handle = RunHandle(db, config, owner)
    # Bounded like a batch: every statement under the statement timeout; a lock waited for at most
    # that long too (the run row's FOR UPDATE waits for a fenced batch in flight, which its own
    # statement timeout bounds).
    t = config.statement_timeout_seconds
    with db.session(f"zdt_backfill:{config.run_id}:preflight", t, t) as conn:
        row = RunStateStore(db).read(conn, handle.lock_key(conn))
        conn.rollback()
        if row is not None and row.state in POST_FLIP and row.run_id != config.run_id:
            raise PostFlipError(post_flip_refusal(f"a new run on {row.lock_key}", f"run {row.run_id!r} is {row.state}"))
        plan = inspect(config, db, conn, probes)
        sequences = target_sequences(config, db, conn)
        conn.rollback()
        RunStateStore(db).create_tables(conn)  # the first write of a run, after every check passed
        store = CheckpointStore(db)
        store.create_tables(conn)
        heartbeat.create_table(db, conn)
        plan.lock = handle.acquire(conn, sequences)
        try:
            existing = store.progress(conn, config.run_id)
            conn.rollback()
            if existing:
                # A re-run of pre-flight (a cleared task) or a takeover: the checkpoints own the key
                # ranges. A fresh plan could move partition bounds past stored watermarks and skip keys.
                # Each keeps the rows its first plan estimated (progress counts against them),
                # from the table's plan events (a takeover's are the adopted run's).
                earlier = {(int(q["index"]), int(q["lo"]), int(q["hi"])): q["rows"]
                           for e in handle.events("plan", this_run_only=False)
                           for q in (e.detail or {}).get("partitions") or [] if q.get("rows") is not None}
                plan.partitions = [Partition(p.partition_no, p.lo, p.hi, rows=earlier.get((p.partition_no, p.lo, p.hi)))
                                   .to_dict() for p in existing]
                log.info("run %s has checkpoints: resuming its %d partition(s)", config.run_id, len(existing))
            for p in plan.partitions:  # the plan is persisted: every partition gets its checkpoint now
                store.open_partition(conn, config.run_id, p["index"], p["lo"], p["hi"])
            handle.record("plan", f"{len(plan.partitions)} partition(s), key index {plan.key_index}", {
                "key_index": plan.key_index, "partitions": plan.partitions, "rows_estimate": plan.rows_estimate,
                "min_key": plan.min_key, "max_key": plan.max_key, "lock": plan.lock,
            })
            if config.dual_write == "trigger":  # after every check and the lock, before any batch
                from . import triggers

                done = triggers.install(config, db, handle)
                plan.triggers = {"triggers": done["triggers"], "adopted": done["adopted"]}
        except BaseException as exc:
            conn.rollback()
            handle.release(HALTED, f"pre-flight failed after taking the lock: {exc}")
            raise
    return plan
