"""Shared set-up of `make bench`: knobs (env vars), connections, seeding, and the engine runs.

Every duration and size is an env var so a small run fits a busy machine:

| env var | default | what |
|---|---|---|
| BENCH_ROWS | 1,000,000 | rows of users_legacy per engine |
| BENCH_LOOP_ROWS | 50,000 | rows the seed's row-by-row loop copies (it is slow) |
| BENCH_RSS_ROWS | 5,000,000 | the large size of the worker peak RSS measurement |
| BENCH_ENGINES | postgres,mariadb,mysql | the engines measured (MySQL 9.7: `bash scripts/bootstrap.sh mysql`) |
| BENCH_RSS_LARGE_ENGINES | postgres,mariadb,mysql | engines measured at BENCH_RSS_ROWS (comma list; "" = none) |
| BENCH_OLTP_SECONDS | 30 | length of each application-load window |
| BENCH_OLTP_RATE | 200 | application transactions/s (point read + update by random id) |
| BENCH_THROTTLE_SECONDS | 60 | copying time the throttled run aims at |
| BENCH_THROTTLE_RPS | BENCH_ROWS / BENCH_THROTTLE_SECONDS | its rows/s ceiling |
| BENCH_PARTITIONS | 1,2 | partition counts tried for the unthrottled engine run |
| BENCH_ROUNDS | 3 | alternating rounds of the throughput table's copies (run.py) and of wal_cost.py (fastest kept) |
| BENCH_SKIP | "" | comma list of sections to skip: oltp, throttle, triggers, dag, rss, peers |
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "include", ROOT / "scripts", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import localdb  # noqa: E402
from zdt_backfill.config import RunConfig  # noqa: E402
from zdt_backfill.db import Database  # noqa: E402
from zdt_backfill.lifecycle import Runner  # noqa: E402
from zdt_backfill.signals.throttler import StopRequestedError  # noqa: E402


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, "") or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, "") or default)


ROWS = env_int("BENCH_ROWS", 1_000_000)
LOOP_ROWS = min(ROWS, env_int("BENCH_LOOP_ROWS", 50_000))
RSS_ROWS = env_int("BENCH_RSS_ROWS", 5_000_000)
BENCH_ENGINES = [e for e in os.environ.get("BENCH_ENGINES", "postgres,mariadb,mysql").split(",") if e]
RSS_LARGE_ENGINES = [e for e in os.environ.get("BENCH_RSS_LARGE_ENGINES", "postgres,mariadb,mysql").split(",") if e]
OLTP_SECONDS = env_float("BENCH_OLTP_SECONDS", 30)
OLTP_RATE = env_float("BENCH_OLTP_RATE", 200)
THROTTLE_SECONDS = env_float("BENCH_THROTTLE_SECONDS", 60)
THROTTLE_RPS = env_float("BENCH_THROTTLE_RPS", max(1, round(ROWS / THROTTLE_SECONDS)))
ROUNDS = max(1, env_int("BENCH_ROUNDS", 3))
PARTITIONS = [int(x) for x in os.environ.get("BENCH_PARTITIONS", "1,2").split(",") if x]
SKIP = {s for s in os.environ.get("BENCH_SKIP", "").split(",") if s}
COLUMNS = {"email_normalized": "lower(trim(email))", "data_hash": "md5(legacy_data)"}
#: Oracle MySQL 9.7 (Debian's build) has no MD5(): there the same 32-character hash column is
#: SHA-256 cut to 32 characters, natively (a stored md5() shim would tax every approach's rows).
ORACLE_MYSQL_COLUMNS = {"email_normalized": "lower(trim(email))", "data_hash": "left(sha2(legacy_data, 256), 32)"}
#: the engines `make bench` measures: its name in the results, the localdb pair, the label
ENGINES = (("postgres", "start_postgres_pair", "PostgreSQL"), ("mariadb", "start_mariadb_pair", "MariaDB 10.11"),
           ("mysql", "start_mysql_pair", "MySQL 9.7"))
BASE = ROOT / ".local" / "bench"
OUT = ROOT / "bench" / "results"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def url(server: localdb.Server) -> str:
    """``postgresql://`` / ``mysql://`` URL of a localdb server, as Database.from_url takes it."""
    scheme = "postgresql" if server.engine == "postgres" else "mysql"
    cred = server.user + (f":{server.password}" if server.password else "")
    return f"{scheme}://{cred}@{server.host}:{server.port}/{server.database}"


def columns(db: Database) -> dict[str, str]:
    """The bench's projection on ``db``'s server: :data:`COLUMNS`, or :data:`ORACLE_MYSQL_COLUMNS`."""
    return ORACLE_MYSQL_COLUMNS if db.ensure_flavour().flavour == "mysql" else COLUMNS


def select_list(db: Database, alias: str = "") -> str:
    """``id, <email_normalized>, <data_hash>`` over users_legacy (``alias.`` prefixed), for the
    baselines' hand-written copies: the same expressions the engine is given."""
    a = f"{alias}." if alias else ""
    cols = columns(db)
    return ", ".join([f"{a}id"] + [re.sub(r"\b(email|legacy_data)\b", rf"{a}\1", cols[k])
                                   for k in ("email_normalized", "data_hash")])


def py_digest(db: Database, data: str) -> str:
    """The data_hash the seed's Python loop computes, as the server's expression would."""
    import hashlib

    if db.ensure_flavour().flavour == "mysql":
        return hashlib.sha256(data.encode()).hexdigest()[:32]
    return hashlib.md5(data.encode()).hexdigest()


def seed(db: Database, rows: int) -> None:
    """Drop and create users_legacy with ``rows`` rows (the demo's shape) and an empty users_new."""
    with db.session() as c:
        for t in ("users_new", "users_legacy", "users_new_expected", "users_legacy_pt_copy",
                  "zdt_backfill_checkpoints", "zdt_backfill_runs"):
            db.execute(c, f"DROP TABLE IF EXISTS {db.dialect.quote(t)}")
        if db.dialect.name == "postgres":
            db.execute(c, "CREATE TABLE users_legacy (id bigint PRIMARY KEY, email text NOT NULL, legacy_data text,"
                          " updated_at timestamptz DEFAULT now())")
            db.execute(c, "INSERT INTO users_legacy SELECT g, '  User' || g || '@Example.COM ', repeat(md5(g::text), 2)"
                          " FROM generate_series(1, %s) g", (rows,))
            db.execute(c, "CREATE TABLE users_new (id bigint PRIMARY KEY, email_normalized text, data_hash text)")
        else:
            db.execute(c, "CREATE TABLE users_legacy (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL, legacy_data TEXT,"
                          " updated_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
            if db.dialect.flavour == "mariadb":
                db.execute(c, "INSERT INTO users_legacy (id, email, legacy_data) SELECT seq,"
                              " CONCAT('  User', seq, '@Example.COM '),"
                              f" REPEAT(MD5(seq), 2) FROM seq_1_to_{int(rows)}")
            else:  # Oracle MySQL: no sequence engine, no MD5(); a recursive CTE of 10,000 x a cross join
                db.execute(c, "SET SESSION cte_max_recursion_depth = 10001")
                db.execute(c, "INSERT INTO users_legacy (id, email, legacy_data)"
                              " WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 9999)"
                              " SELECT g, CONCAT('  User', g, '@Example.COM '), REPEAT(LEFT(SHA2(g, 256), 32), 2)"
                              " FROM (SELECT hi.n * 10000 + lo.n + 1 AS g FROM d hi JOIN d lo WHERE hi.n <= %s) s"
                              " WHERE g <= %s", ((rows - 1) // 10000, rows))
            db.execute(c, "CREATE TABLE users_new (id BIGINT PRIMARY KEY, email_normalized VARCHAR(255), data_hash CHAR(32))")
        c.commit()
        db.query(c, "ANALYZE users_legacy" if db.dialect.name == "postgres" else "ANALYZE TABLE users_legacy")
        c.commit()


def reset_target(db: Database) -> None:
    """Empty users_new and drop the run-state tables, so each approach starts from the expand step."""
    with db.session() as c:
        db.execute(c, "TRUNCATE TABLE users_new")
        for t in ("zdt_backfill_checkpoints", "zdt_backfill_runs"):
            db.execute(c, f"DROP TABLE IF EXISTS {db.dialect.quote(t)}")
        c.commit()


def execute(db: Database, sql: str, params: tuple = ()) -> None:
    with db.session() as c:
        db.execute(c, sql, params)
        c.commit()


def monolithic(db: Database, table: str = "users_new") -> None:
    """One ``INSERT ... SELECT`` of every row: the upper bound, never for production."""
    execute(db, f"INSERT INTO {db.dialect.quote(table)} (id, email_normalized, data_hash)"
                f" SELECT {select_list(db)} FROM users_legacy")


def seed_rowwise(db: Database, rows: int) -> None:
    """The seed's loop: SELECT a 500-key range, INSERT each row, commit."""
    upsert = ("INSERT INTO users_new (id, email_normalized, data_hash) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING"
              if db.dialect.name == "postgres" else
              "INSERT INTO users_new (id, email_normalized, data_hash) VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE id = id")
    with db.session() as c:
        for lo in range(1, rows + 1, 500):
            got = db.query(c, "SELECT id, email, legacy_data FROM users_legacy WHERE id BETWEEN %s AND %s ORDER BY id",
                           (lo, min(lo + 499, rows)))
            for id_, email, data in got:
                db.execute(c, upsert, (id_, email.strip().lower(), py_digest(db, data)))
            c.commit()


@dataclass
class EngineRun:
    """One engine copy: wall seconds of the copy (pre-flight excluded), keys scanned, batch seconds."""

    seconds: float
    keys: int
    partitions: int
    batch_seconds: list[float] = field(default_factory=list)
    rows_written: int = 0
    stopped: bool = False


def engine_config(db: Database, profile: str, run_id: str, **params: Any) -> RunConfig:
    """The bench's run on ``db`` (its server's :func:`columns`) in ``profile`` with ``params`` over it."""
    p = {"conn_id": "bench", "source_table": "users_legacy", "target_table": "users_new", "key": "id",
         "columns": columns(db), "profile": profile, "dual_write": "assumed", **params}
    return RunConfig.from_params(p, run_id=run_id)


def engine_copy(db: Database, cfg: RunConfig, probes: list | None = None, deadline: float | None = None) -> EngineRun:
    """Pre-flight, then every planned partition copied in its own thread (as mapped tasks would).

    ``deadline`` (time.monotonic) stops the copy through live control once passed.
    :returns: an :class:`EngineRun`; ``keys`` are the keys the batches scanned (from each chunk).
    """
    plan = Runner(cfg, db, owner="bench", probes=probes).preflight()
    batches: list[float] = []
    scanned = [0]
    written = [0]
    lock = threading.Lock()
    stopped = [False]
    errors: list[BaseException] = []

    def on_batch(progress: Any, chunk: Any, rows: int, seconds: float) -> None:
        with lock:
            batches.append(seconds)
            written[0] += rows
            scanned[0] += _chunk_keys(chunk)

    def control() -> dict[str, Any]:
        return {"stop": deadline is not None and time.monotonic() >= deadline, "source": "bench deadline"}

    def one(p: dict) -> None:
        try:
            # one Runner per thread, as each mapped task builds its own
            Runner(cfg, db, owner=f"bench p{p['index']}", probes=probes, control=control,
                   on_batch=on_batch).copy_partition(p)
        except StopRequestedError:
            stopped[0] = True
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    t = time.perf_counter()
    threads = [threading.Thread(target=one, args=(p,)) for p in plan["partitions"]]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t
    if errors:
        raise errors[0]
    return EngineRun(seconds, scanned[0], len(plan["partitions"]), batches, written[0], stopped[0])


def _chunk_keys(chunk: Any) -> int:
    """Keys a chunk covered: its ``keys``, else ``hi - lo`` (chunks are ``(lo, hi]``, integer keys)."""
    keys = getattr(chunk, "keys", 0)
    if isinstance(keys, int) and keys > 0:
        return keys
    lo, hi = getattr(chunk, "lo", None), getattr(chunk, "hi", None)
    return hi - lo if isinstance(lo, int) and isinstance(hi, int) else 0


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
