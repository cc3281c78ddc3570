"""Where the time of one batch goes (issue 9), on PostgreSQL and MariaDB.

    PYTHONPATH=include:scripts:bench .venv/bin/python bench/profile_batch.py

Starts (or reuses) a primary + replica pair per engine under .local/profile, seeds
PROFILE_ROWS rows of users_legacy (the bench's shape), then:

1. **breakdown**: the engine copies one partition (batch PROFILE_BATCH, no throttle) with
   every statement timed on the client (chunk-end read, the INSERT, the checkpoint UPDATE,
   COMMIT, live-control reads, ...); client Python time is the wall time the statements do
   not account for. A cProfile run lists the top Python functions.
2. **statements**: one batch's INSERT in its variants (shared lock or not, ON CONFLICT /
   ON DUPLICATE KEY vs anti-join vs plain INSERT): PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS,
   WAL)``, MariaDB the statement's time; each on fresh chunks, rolled back, median of several.
3. **variants**: whole-table copies, alternating A/B PROFILE_ROUNDS times in this one run, the
   monolithic ``INSERT ... SELECT`` between them: the copy paths (``PartitionCopier.batch_path``)
   as ratios of monolithic, medians.

Env: PROFILE_ROWS (300000), PROFILE_BATCH (1000), PROFILE_ROUNDS (3), PROFILE_ENGINES
(postgres,mysql), PROFILE_SECTIONS (breakdown,statements,variants), PROFILE_VARIANTS
(the batch paths compared; default all), PROFILE_OUT (bench/results/profile_batch.md).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "include", ROOT / "scripts", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import common  # noqa: E402

import localdb  # noqa: E402
from zdt_backfill.config import RunConfig  # noqa: E402
from zdt_backfill.copying.chunker import Partition  # noqa: E402
from zdt_backfill.copying.copier import PartitionCopier  # noqa: E402
from zdt_backfill.db import Database  # noqa: E402
from zdt_backfill.lifecycle.preflight import run_preflight  # noqa: E402

ROWS = int(os.environ.get("PROFILE_ROWS", "300000"))
BATCH = int(os.environ.get("PROFILE_BATCH", "1000"))
ROUNDS = int(os.environ.get("PROFILE_ROUNDS", "3"))
ENGINES = [e for e in os.environ.get("PROFILE_ENGINES", "postgres,mysql").split(",") if e]
SECTIONS = set(os.environ.get("PROFILE_SECTIONS", "breakdown,statements,variants").split(","))
OUT = Path(os.environ.get("PROFILE_OUT") or ROOT / "bench" / "results" / "profile_batch.md")
BASE = ROOT / ".local" / "profile"

lines: list[str] = []


def emit(s: str = "") -> None:
    print(s, flush=True)
    lines.append(s)


# ---------------------------------------------------------------------- statement timing
class Recorder:
    """Client-side time per statement kind, for the thread that copies (others: ``bg:``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.main = threading.main_thread()
        self.on = False

    def add(self, kind: str, dt: float) -> None:
        if not self.on:
            return
        if threading.current_thread() is not self.main:
            kind = "bg: " + kind
        self.seconds[kind] += dt
        self.count[kind] += 1


def classify(sql: str) -> str:
    s = " ".join(sql.split())
    low = s.lower()
    if "insert into" in low and "users_new" in low and "update zdt_backfill_checkpoints" in low.replace('"', ""):
        return "fused chunk+INSERT+checkpoint"
    if "insert into" in low and "users_new" in low:
        return "INSERT ... SELECT (the copy)"
    if low.startswith("select max(") or "limit %s) as b" in low:
        return "chunk-end read"
    if "update" in low and "zdt_backfill_checkpoints" in low.replace('"', "") and "watermark = %s" in low:
        return "checkpoint UPDATE"
    if "select control" in low:
        return "live-control read"
    if "zdt_heartbeat" in low:
        return "heartbeat"
    if "pg_stat" in low or "show global status" in low:
        return "load signals"
    if "lease" in low or "zdt_backfill_runs" in low.replace('"', ""):
        return "run state / lease"
    return "other: " + s[:40]


class TimedCursor:
    def __init__(self, cur: Any, rec: Recorder) -> None:
        self._cur, self._rec = cur, rec

    def execute(self, sql: str, params: Any = None) -> Any:
        self._kind = classify(sql)
        t = time.perf_counter()
        try:
            return self._cur.execute(sql, params)
        finally:
            self._rec.add(self._kind, time.perf_counter() - t)

    def nextset(self) -> Any:  # the later statements of a MySQL multi-statement run here
        t = time.perf_counter()
        try:
            return self._cur.nextset()
        finally:
            self._rec.seconds[self._kind] += (time.perf_counter() - t) if self._rec.on else 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class TimedConn:
    def __init__(self, conn: Any, rec: Recorder) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_rec", rec)

    def cursor(self, *a: Any, **k: Any) -> TimedCursor:
        return TimedCursor(self._conn.cursor(*a, **k), self._rec)

    def commit(self) -> None:
        t = time.perf_counter()
        try:
            self._conn.commit()
        finally:
            self._rec.add("COMMIT", time.perf_counter() - t)

    def rollback(self) -> None:
        t = time.perf_counter()
        try:
            self._conn.rollback()
        finally:
            self._rec.add("ROLLBACK", time.perf_counter() - t)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


def timed_db(db: Database, rec: Recorder) -> Database:
    return Database(connect=lambda: TimedConn(db.connect(), rec), dialect=db.dialect, schema=db.schema, name=db.name)


# ---------------------------------------------------------------------- the engine's copy
def config(run_id: str, batch: int = BATCH) -> RunConfig:
    return RunConfig.from_params({
        "conn_id": "bench", "source_table": "users_legacy", "target_table": "users_new", "key": "id",
        "columns": common.COLUMNS, "profile": "dev", "batch_size": batch, "partitions": 1,
        "dual_write": "assumed", "max_replica_lag_seconds": 0, "target_batch_seconds": 0,
    }, run_id=run_id)


def engine_copy(db: Database, path: str | None = None, batch: int = BATCH, rec: Recorder | None = None,
                profiler: cProfile.Profile | None = None) -> tuple[float, int]:
    """Pre-flight (not timed), then the copy of the one partition: (seconds, batches)."""
    cfg = config(f"profile-{time.time_ns()}", batch)
    plan = run_preflight(cfg, db, [])
    n = [0]
    copier_db = timed_db(db, rec) if rec else db
    (part,) = plan.partitions
    copier = PartitionCopier(cfg, copier_db, Partition.from_dict(part), plan.key_index,
                             on_batch=lambda *a: n.__setitem__(0, n[0] + 1))
    if path is not None:
        copier.batch_path = path
    if rec:
        rec.on = True
    if profiler:
        profiler.enable()
    t = time.perf_counter()
    copier.run()
    dt = time.perf_counter() - t
    if profiler:
        profiler.disable()
    if rec:
        rec.on = False
    return dt, n[0]


def reset(db: Database, pair: localdb.Pair) -> None:
    common.reset_target(db)
    with db.session() as c:
        if db.dialect.name == "postgres":
            db.execute(c, "CHECKPOINT")  # every variant starts from the same WAL position (full-page images)
        c.commit()
    localdb.wait_replica_caught_up(pair, timeout=600)


def has_fused(db: Database) -> bool:
    """Whether the engine has a fused batch statement (PostgreSQL); MariaDB always runs ``statements``."""
    return db.dialect.fused_copy_batch_sql("a", "b", "id", {}, lambda *a: "") is not None


def breakdown(name: str, db: Database, pair: localdb.Pair) -> None:
    emit(f"\n### {name}: per batch (batch {BATCH:,}, {ROWS:,} rows, one partition, current batch path)\n")
    paths = [p for p in PartitionCopier.BATCH_PATHS if p != "fused" or has_fused(db)]
    for path in paths:
        reset(db, pair)
        rec = Recorder()
        wall, batches = engine_copy(db, path, rec=rec)
        emit(f"batch path `{path}`: {batches} batches, {wall:.2f} s, {ROWS / wall:,.0f} rows/s\n")
        emit("| where | ms per batch | share of the batch | statements per batch |")
        emit("|---|---|---|---|")
        fg = {k: v for k, v in rec.seconds.items() if not k.startswith("bg: ")}
        per = wall / max(batches, 1)
        for k, v in sorted(fg.items(), key=lambda kv: -kv[1]):
            emit(f"| {k} | {1000 * v / batches:.3f} | {100 * v / wall:.1f} % | {rec.count[k] / batches:.2f} |")
        py = wall - sum(fg.values())
        emit(f"| client Python (wall minus statements) | {1000 * py / batches:.3f} | {100 * py / wall:.1f} % | |")
        emit(f"| **whole batch** | **{1000 * per:.3f}** | 100 % | "
             f"{sum(c for k, c in rec.count.items() if not k.startswith('bg: ')) / batches:.2f} |")
        bg = {k: v for k, v in rec.seconds.items() if k.startswith("bg: ")}
        if bg:
            emit("\nbackground threads (own connections, in parallel): " + ", ".join(
                f"{k[4:]} {rec.count[k]}x {1000 * v / rec.count[k]:.2f} ms" for k, v in sorted(bg.items())))
        emit()
    reset(db, pair)
    prof = cProfile.Profile()
    wall, batches = engine_copy(db, PartitionCopier.batch_path, profiler=prof)
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s).sort_stats("tottime")
    st.print_stats(14)
    emit(f"cProfile of the copy ({batches} batches, {wall:.2f} s under the profiler), top functions by own time:\n")
    emit("```")
    body = s.getvalue().splitlines()
    start = next((i for i, ln in enumerate(body) if "ncalls" in ln), 0)
    for ln in body[start:start + 16]:
        emit(ln.rstrip()[:150])
    emit("```")


# ---------------------------------------------------------------------- single statements
def pg_variants() -> dict[str, str]:
    cols = "id, email_normalized, data_hash"
    sel = "SELECT s.id, lower(trim(s.email)), md5(s.legacy_data) FROM users_legacy s WHERE s.id > %s AND s.id <= %s"
    ne = " AND NOT EXISTS (SELECT 1 FROM users_new t WHERE t.id = s.id)"
    ins = f"INSERT INTO users_new ({cols}) "
    return {
        "current: FOR SHARE + ON CONFLICT DO NOTHING": f"{ins}{sel} FOR SHARE ON CONFLICT (id) DO NOTHING",
        "no lock + ON CONFLICT DO NOTHING": f"{ins}{sel} ON CONFLICT (id) DO NOTHING",
        "FOR KEY SHARE + ON CONFLICT DO NOTHING": f"{ins}{sel} FOR KEY SHARE ON CONFLICT (id) DO NOTHING",
        "FOR SHARE + anti-join + ON CONFLICT DO NOTHING": f"{ins}{sel}{ne} FOR SHARE OF s ON CONFLICT (id) DO NOTHING",
        "FOR SHARE + anti-join, plain INSERT": f"{ins}{sel}{ne} FOR SHARE OF s",
        "FOR SHARE, plain INSERT": f"{ins}{sel} FOR SHARE",
        "plain INSERT (monolithic's statement)": f"{ins}{sel}",
    }


def my_variants() -> dict[str, str]:
    cols = "id, email_normalized, data_hash"
    sel = ("SELECT s.id, lower(trim(s.email)), md5(s.legacy_data) FROM users_legacy s FORCE INDEX (PRIMARY)"
           " WHERE s.id > %s AND s.id <= %s")
    ne = " AND NOT EXISTS (SELECT 1 FROM users_new t WHERE t.id = s.id)"
    ins = f"INSERT INTO users_new ({cols}) "
    odk = " ON DUPLICATE KEY UPDATE id = users_new.id"
    return {
        "current: LOCK IN SHARE MODE NOWAIT + ON DUPLICATE KEY": f"{ins}{sel} LOCK IN SHARE MODE NOWAIT{odk}",
        "no lock + ON DUPLICATE KEY": f"{ins}{sel}{odk}",
        "lock + anti-join + ON DUPLICATE KEY": f"{ins}{sel}{ne} LOCK IN SHARE MODE NOWAIT{odk}",
        "lock + anti-join, plain INSERT": f"{ins}{sel}{ne} LOCK IN SHARE MODE NOWAIT",
        "lock, plain INSERT": f"{ins}{sel} LOCK IN SHARE MODE NOWAIT",
        "plain INSERT (monolithic's statement)": f"{ins}{sel}",
    }


def statements(name: str, db: Database, pair: localdb.Pair) -> None:
    reps = 7
    variants = pg_variants() if name == "postgres" else my_variants()
    emit(f"\n### {name}: one batch's INSERT ({BATCH:,} keys, empty target, rolled back; median of {reps} chunks)\n")
    reset(db, pair)
    pg = name == "postgres"
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    lo = 1000
    with db.session() as c:
        if pg:
            db.execute(c, "SET enable_seqscan = off")
        else:
            db.execute(c, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        c.commit()
        for _ in range(reps):
            for label, sql in variants.items():  # interleaved; each on chunks of its own
                params = (lo, lo + BATCH)
                lo += BATCH
                if pg:
                    t = time.perf_counter()
                    plan = db.query(c, "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + sql, params)[0][0]
                    wall = time.perf_counter() - t
                    p = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
                    top = p["Plan"]
                    results[label].append({
                        "ms": p["Execution Time"], "wall_ms": 1000 * wall, "plan_ms": p.get("Planning Time", 0),
                        "wal_records": top.get("WAL Records", 0), "wal_fpi": top.get("WAL FPI", 0),
                        "wal_bytes": top.get("WAL Bytes", 0),
                        "dirtied": top.get("Shared Dirtied Blocks", 0) + top.get("Local Dirtied Blocks", 0),
                        "hit": top.get("Shared Hit Blocks", 0),
                    })
                else:
                    t = time.perf_counter()
                    db.execute(c, sql, params)
                    results[label].append({"ms": 1000 * (time.perf_counter() - t)})
                c.rollback()
    base = statistics.median(r["ms"] for r in results[next(iter(variants))])
    if pg:
        emit("| INSERT variant | execution ms | vs current | WAL records | WAL FPI | WAL bytes | blocks dirtied |")
        emit("|---|---|---|---|---|---|---|")
        for label, rs in results.items():
            def med(k: str, rs: list = rs) -> float:
                return statistics.median(r[k] for r in rs)
            emit(f"| {label} | {med('ms'):.2f} | {med('ms') / base:.2f} | {med('wal_records'):.0f} | {med('wal_fpi'):.0f}"
                 f" | {med('wal_bytes'):,.0f} | {med('dirtied'):.0f} |")
    else:
        emit("| INSERT variant | statement ms (client) | vs current |")
        emit("|---|---|---|")
        for label, rs in results.items():
            m = statistics.median(r["ms"] for r in rs)
            emit(f"| {label} | {m:.2f} | {m / base:.2f} |")


# ---------------------------------------------------------------------- whole copies
def monolithic(db: Database) -> None:
    common.monolithic(db)


def variants(name: str, db: Database, pair: localdb.Pair) -> None:
    paths = [p for p in os.environ.get("PROFILE_VARIANTS", ",".join(PartitionCopier.BATCH_PATHS)).split(",")
             if p and (p != "fused" or has_fused(db))]
    emit(f"\n### {name}: whole-table copies, {ROWS:,} rows, batch {BATCH:,}, {ROUNDS} alternating rounds\n")
    secs: dict[str, list[float]] = defaultdict(list)
    ratios: dict[str, list[float]] = defaultdict(list)
    for r in range(ROUNDS):
        order = paths if r % 2 == 0 else list(reversed(paths))
        reset(db, pair)
        m = common.timed(lambda: monolithic(db))
        secs["monolithic"].append(m)
        for p in order:
            reset(db, pair)
            s, _ = engine_copy(db, p)
            secs[p].append(s)
            ratios[p].append(m / s)
        print(f"  round {r + 1}: monolithic {m:.2f}s; " + ", ".join(f"{p} {secs[p][-1]:.2f}s" for p in order), flush=True)
    emit("| copy | median s | rows/s | vs monolithic (median of per-round ratios) | per round |")
    emit("|---|---|---|---|---|")
    m = statistics.median(secs["monolithic"])
    emit(f"| monolithic INSERT ... SELECT | {m:.2f} | {ROWS / m:,.0f} | 1.000 | |")
    for p in paths:
        s = statistics.median(secs[p])
        emit(f"| engine, batch path `{p}` | {s:.2f} | {ROWS / s:,.0f} | **{statistics.median(ratios[p]):.3f}** | "
             + " / ".join(f"{x:.3f}" for x in ratios[p]) + " |")


def main() -> int:
    BASE.mkdir(parents=True, exist_ok=True)
    emit(f"# Per-batch profile ({ROWS:,} rows, batch {BATCH:,}, {os.cpu_count()} cores, "
         f"{time.strftime('%Y-%m-%d %H:%M')})")
    for name in ENGINES:
        start = localdb.start_postgres_pair if name == "postgres" else localdb.start_mariadb_pair
        pair = start(BASE / ("pg" if name == "postgres" else "mariadb"))
        db = Database.from_url(common.url(pair.primary))
        print(f"[{name}] seeding {ROWS:,} rows", flush=True)
        common.seed(db, ROWS)
        localdb.wait_replica_caught_up(pair, timeout=600)
        if "breakdown" in SECTIONS:
            breakdown(name, db, pair)
        if "statements" in SECTIONS:
            statements(name, db, pair)
        if "variants" in SECTIONS:
            variants(name, db, pair)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
