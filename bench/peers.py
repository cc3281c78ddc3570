"""Peer tools and the throttle, measured in the same run as the engine (`make bench`).

- ``throttle``: the engine (dev profile, two planned partitions) under a rows/s ceiling for about
  BENCH_THROTTLE_SECONDS; achieved = keys scanned / copy seconds (the ceiling is charged on keys
  scanned). Issue 6's target: within 5 % of the ceiling.
- ``pt_archiver`` (MariaDB only): Percona's ``pt-archiver --limit 1000 --commit-each --bulk-insert
  --no-delete`` copying users_legacy into an empty ``LIKE`` copy. It copies columns as they are
  (no transform), which flatters it; PostgreSQL: not applicable (pt-archiver is MySQL-only).
- ``reladiff``: reladiff 0.6 (its own virtualenv, bench/setup.sh), hashdiff (the cross-database
  form, so it bisects by checksums as it would between two servers) between users_new and
  users_new_expected (the monolithic copy), on equal tables and with one changed row; against
  the engine's own validation of the same copy, in the same run.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import common

import localdb
from zdt_backfill.db import Database

RELADIFF = common.ROOT / ".local" / "bench" / "reladiff-venv" / "bin" / "reladiff"


def throttle(db: Database) -> dict[str, Any]:
    common.reset_target(db)
    target = common.THROTTLE_RPS
    cfg = common.engine_config(db, "dev", f"bench-throttle-{time.time()}", max_rows_per_second=target, partitions=2)
    run = common.engine_copy(db, cfg, deadline=time.monotonic() + common.THROTTLE_SECONDS)
    achieved = run.keys / run.seconds if run.seconds else 0.0
    return {"throttle_target_rows_per_s": round(target), "throttle_achieved_rows_per_s": round(achieved),
            "throttle_error_pct": round(100.0 * (achieved - target) / target, 2), "throttle_seconds": round(run.seconds, 2),
            "throttle_partitions": run.partitions}


def pt_archiver(db: Database, server: localdb.Server) -> dict[str, Any]:
    exe = shutil.which("pt-archiver")
    if db.dialect.name != "mysql":
        return {"pt_archiver_rows_per_s": None, "pt_archiver_note": "pt-archiver is MySQL/MariaDB only"}
    if exe is None:
        return {"pt_archiver_rows_per_s": None, "pt_archiver_note": "pt-archiver not installed (bench/setup.sh)"}
    common.execute(db, "DROP TABLE IF EXISTS users_legacy_pta")
    common.execute(db, "CREATE TABLE users_legacy_pta LIKE users_legacy")
    dsn = f"h={server.host},P={server.port},u={server.user},D={server.database},L=1"
    if server.password:
        dsn += f",p={server.password}"
    cmd = [exe, "--source", f"{dsn},t=users_legacy", "--dest", "t=users_legacy_pta", "--where", "1=1",
           "--limit", "1000", "--commit-each", "--bulk-insert", "--no-delete", "--no-check-charset", "--statistics"]
    # --bulk-insert is LOAD DATA LOCAL INFILE, which Oracle MySQL refuses by default (local_infile
    # OFF since 8.0): on the bench's own private server only, allowed for the measurement
    oracle = db.ensure_flavour().flavour == "mysql"
    if oracle:
        common.execute(db, "SET GLOBAL local_infile = ON")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        seconds = time.perf_counter() - t
        if oracle:
            common.execute(db, "SET GLOBAL local_infile = OFF")
    with db.session() as c:
        copied = int(db.query(c, "SELECT count(*) FROM users_legacy_pta")[0][0])
    common.execute(db, "DROP TABLE IF EXISTS users_legacy_pta")
    if proc.returncode != 0 or copied == 0:
        return {"pt_archiver_rows_per_s": None, "pt_archiver_note": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
    return {"pt_archiver_rows_per_s": round(copied / seconds), "pt_archiver_seconds": round(seconds, 2),
            "pt_archiver_note": "--limit 1000 --commit-each --bulk-insert --no-delete; no transform (columns as they are)"}


def _reladiff(uri: str) -> tuple[float, str]:
    cmd = [str(RELADIFF), uri, "users_new", uri, "users_new_expected", "-k", "id", "-c", "email_normalized",
           "-c", "data_hash"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"reladiff exit {proc.returncode}: {proc.stderr[-400:]}")
    return time.perf_counter() - t, proc.stdout.strip()


def reladiff(db: Database, server: localdb.Server, changed_key: int) -> dict[str, Any]:
    """Run after the engine's validation section: users_new is the engine's copy with the row
    ``changed_key`` changed; users_new_expected is built here by one monolithic insert."""
    if not RELADIFF.exists():
        return {"reladiff_rows_per_s": None, "reladiff_note": "reladiff not installed (bench/setup.sh)"}
    common.execute(db, "DROP TABLE IF EXISTS users_new_expected")
    if db.dialect.name == "postgres":
        common.execute(db, "CREATE TABLE users_new_expected (LIKE users_new INCLUDING ALL)")
    else:
        common.execute(db, "CREATE TABLE users_new_expected LIKE users_new")
    common.monolithic(db, "users_new_expected")
    scheme = "postgresql" if db.dialect.name == "postgres" else "mysql"
    uri = f"{scheme}://{server.user}@{server.host}:{server.port}/{server.database}"
    one_changed, out = _reladiff(uri)
    found = str(changed_key) in out
    common.execute(db, "UPDATE users_new SET data_hash = (SELECT data_hash FROM users_new_expected e WHERE e.id = %s)"
                   " WHERE id = %s" if db.dialect.name == "postgres" else
                   "UPDATE users_new n JOIN users_new_expected e ON e.id = n.id SET n.data_hash = e.data_hash"
                   " WHERE n.id = %s", (changed_key, changed_key) if db.dialect.name == "postgres" else (changed_key,))
    equal, _ = _reladiff(uri)
    common.execute(db, "DROP TABLE IF EXISTS users_new_expected")
    return {"reladiff_rows_per_s": round(common.ROWS / equal), "reladiff_seconds_equal": round(equal, 3),
            "reladiff_seconds_to_find_one_changed_row": round(one_changed, 3), "reladiff_found_the_key": found,
            "reladiff_note": "reladiff 0.6.0 hashdiff (cross-database form) users_new vs users_new_expected"}
