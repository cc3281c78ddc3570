"""The application load of issue 6: point reads and updates on users_legacy by random id at a FIXED rate.

PostgreSQL: ``pgbench -n -R <rate> -T <s> -f <script> -l --log-prefix`` (per-transaction log,
parsed by :func:`stats.parse_pgbench_log`; pgbench measures ``--rate`` latency from the scheduled
start). MariaDB: this module run as a subprocess (``python bench/oltp.py load ...``): an open-loop
schedule (:func:`stats.open_loop_schedule`) served by a few threads, latency measured from each
transaction's scheduled start, so a stall is not hidden by the load backing off (coordinated
omission). Both run outside the benchmark's own process, so the engine's threads and the load
do not share a GIL.

:func:`start` returns a handle; :meth:`Load.result` waits and gives ``{"p50_ms", "p99_ms",
"transactions", "not_done"}``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stats  # noqa: E402

PGBENCH_SCRIPT = """\\set id random(1, :rows)
BEGIN;
SELECT email, legacy_data FROM users_legacy WHERE id = :id;
UPDATE users_legacy SET updated_at = now() WHERE id = :id;
END;
"""
CLIENTS = 4


def find_pgbench() -> str:
    """pgbench from PATH, else from the PostgreSQL server's bin directory."""
    found = shutil.which("pgbench") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)), None)
    if not found:
        raise FileNotFoundError("pgbench not found: run bash bench/setup.sh")
    return found


class Load:
    """A running fixed-rate load in a subprocess."""

    def __init__(self, proc: subprocess.Popen, workdir: Path, kind: str) -> None:
        self.proc, self.workdir, self.kind = proc, workdir, kind

    def result(self) -> dict:
        out, _ = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.kind} load failed (exit {self.proc.returncode}): {out[-2000:]}")
        if self.kind == "pgbench":
            lat: list[float] = []
            not_done = 0
            for f in sorted(self.workdir.glob("oltp.*")):
                got, nd = stats.parse_pgbench_log(f.read_text().splitlines())
                lat += got
                not_done += nd
        else:
            data = json.loads(out.strip().splitlines()[-1])
            lat, not_done = data["latencies_ms"], data["not_done"]
        shutil.rmtree(self.workdir, ignore_errors=True)
        return summary(lat, not_done)


def summary(latencies_ms: list[float], not_done: int) -> dict:
    p50, p99 = stats.percentile(latencies_ms, 50), stats.percentile(latencies_ms, 99)
    return {"transactions": len(latencies_ms), "not_done": not_done,
            "p50_ms": round(p50, 2) if p50 is not None else None, "p99_ms": round(p99, 2) if p99 is not None else None}


def start(server, rows: int, rate: float, seconds: float) -> Load:
    """Start the load against ``server`` (a localdb.Server) for ``seconds`` at ``rate`` transactions/s."""
    work = Path(tempfile.mkdtemp(prefix="zdt-bench-oltp-"))
    if server.engine == "postgres":
        script = work / "script.sql"
        script.write_text(PGBENCH_SCRIPT)
        cmd = [find_pgbench(), "-n", "-R", str(rate), "-T", str(max(1, round(seconds))), "-c", str(CLIENTS), "-j", "1",
               "-D", f"rows={rows}", "-f", str(script), "-l", f"--log-prefix={work / 'oltp'}",
               "-h", server.host, "-p", str(server.port), "-U", server.user, server.database]
        env = {**os.environ, "PGPASSWORD": server.password or ""}
        return Load(subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                    work, "pgbench")
    cmd = [sys.executable, __file__, "load", "--host", server.host, "--port", str(server.port), "--user", server.user,
           "--password", server.password or "", "--database", server.database, "--rows", str(rows),
           "--rate", str(rate), "--seconds", str(seconds)]
    return Load(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), work, "python")


def run_mysql_load(a: argparse.Namespace) -> dict:
    """Open-loop load on MariaDB/MySQL: CLIENTS threads take scheduled slots from a queue."""
    import MySQLdb

    slots: queue.Queue[float | None] = queue.Queue()
    latencies: list[float] = []
    not_done = [0]
    lock = threading.Lock()
    t0 = time.monotonic() + 0.5  # time for the connections to open
    for off in stats.open_loop_schedule(a.rate, a.seconds):
        slots.put(t0 + off)

    def worker() -> None:
        conn = MySQLdb.connect(host=a.host, port=a.port, user=a.user, password=a.password, database=a.database,
                               connect_timeout=10)
        cur = conn.cursor()
        rnd = random.Random()
        while True:
            try:
                at = slots.get_nowait()
            except queue.Empty:
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            key = rnd.randint(1, a.rows)
            try:
                cur.execute("SELECT email, legacy_data FROM users_legacy WHERE id = %s", (key,))
                cur.fetchall()
                cur.execute("UPDATE users_legacy SET updated_at = CURRENT_TIMESTAMP(6) WHERE id = %s", (key,))
                conn.commit()
                ms = (time.monotonic() - at) * 1000.0  # from the scheduled start
                with lock:
                    latencies.append(ms)
            except MySQLdb.Error:
                conn.rollback()
                with lock:
                    not_done[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"latencies_ms": latencies, "not_done": not_done[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description="fixed-rate MariaDB/MySQL application load (bench)")
    ap.add_argument("command", choices=["load"])
    for name, typ in (("host", str), ("port", int), ("user", str), ("password", str), ("database", str),
                      ("rows", int), ("rate", float), ("seconds", float)):
        ap.add_argument(f"--{name}", type=typ, required=True)
    print(json.dumps(run_mysql_load(ap.parse_args())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
