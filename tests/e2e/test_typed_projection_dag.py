"""One typed projection through the whole DAG: ``balance * 100`` into ``DECIMAL(16,0)`` /
``numeric(16,0)``, with ``dual_write: check`` and a live dual-writer, ends in contract with a
byte-exact comparison on every key (before the typed projection, MariaDB hashed the source side
as ``-16763788.00`` and the target as ``-16763788``, and rolled an exact copy back)."""

from __future__ import annotations

import random
import threading

import pytest

from conftest import cte_depth, run_dag, seq

pytestmark = pytest.mark.e2e

ROWS = 20_000


def seed(env):
    if env.engine == "postgres":
        env.sql("CREATE TABLE accounts_legacy (id bigint PRIMARY KEY, balance numeric(12,2) NOT NULL,"
                " updated_at timestamptz NOT NULL DEFAULT now());\n"
                "CREATE TABLE accounts_new (id bigint PRIMARY KEY, balance_cents numeric(16,0))")
        env.sql("INSERT INTO accounts_legacy SELECT g, round(((g * 7919) %% 20000000 - 10000000) / 100.0, 2),"
                " now() - interval '1 day' FROM generate_series(1, %s) g", (ROWS,))
    else:
        env.sql("CREATE TABLE accounts_legacy (id BIGINT PRIMARY KEY, balance DECIMAL(12,2) NOT NULL,"
                " updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));\n"
                "CREATE TABLE accounts_new (id BIGINT PRIMARY KEY, balance_cents DECIMAL(16,0) NULL)")
        env.sql(cte_depth(env) + "INSERT INTO accounts_legacy SELECT seq, ROUND(((CAST(seq AS SIGNED) * 7919) %% 20000000"
                " - 10000000) / 100.0, 2), CURRENT_TIMESTAMP(6) - INTERVAL 1 DAY FROM " + seq(env, ROWS))


class DualWriter(threading.Thread):
    """The application: each write changes the legacy row, then upserts the new one, in one transaction."""

    def __init__(self, env):
        super().__init__(daemon=True)
        self.env, self.stop_event, self.writes, self.error = env, threading.Event(), 0, None
        pg = env.engine == "postgres"
        self.upsert = (
            "INSERT INTO accounts_new (id, balance_cents) SELECT id, balance * 100 FROM accounts_legacy WHERE id = %s"
            + (" ON CONFLICT (id) DO UPDATE SET balance_cents = EXCLUDED.balance_cents" if pg
               else " ON DUPLICATE KEY UPDATE balance_cents = VALUES(balance_cents)"))
        self.now = "now()" if pg else "CURRENT_TIMESTAMP(6)"

    def run(self):
        rnd, db = random.Random(7), self.env.db
        conn = db.connect()
        try:
            while not self.stop_event.is_set():
                key = rnd.randint(1, ROWS)
                try:
                    db.execute(conn, f"UPDATE accounts_legacy SET balance = %s, updated_at = {self.now} WHERE id = %s",
                               (f"{rnd.randint(-10**9, 10**9) / 100:.2f}", key))
                    db.execute(conn, self.upsert, (key,))
                    conn.commit()
                    self.writes += 1
                except Exception as exc:
                    conn.rollback()
                    if not db.is_transient(exc):
                        raise
                self.stop_event.wait(0.005)
        except BaseException as exc:
            self.error = exc
        finally:
            conn.close()


def byte_exact_differences(env) -> int:
    if env.engine == "postgres":
        src = "SELECT id, convert_to(CAST(balance * 100 AS numeric(16,0))::text, 'UTF8') FROM accounts_legacy"
        tgt = "SELECT id, convert_to(balance_cents::text, 'UTF8') FROM accounts_new"
        return int(env.scalar(f"SELECT count(*) FROM (({src} EXCEPT {tgt}) UNION ALL ({tgt} EXCEPT {src})) d"))
    return int(env.scalar(
        "SELECT (SELECT count(*) FROM accounts_legacy s LEFT JOIN accounts_new t ON t.id = s.id WHERE t.id IS NULL"
        " OR NOT (CAST(CAST(s.balance * 100 AS DECIMAL(16,0)) AS BINARY) <=> CAST(t.balance_cents AS BINARY)))"
        " + (SELECT count(*) FROM accounts_new t LEFT JOIN accounts_legacy s ON s.id = t.id WHERE s.id IS NULL)"))


def test_balance_times_100_into_decimal_16_0_contracts_exactly_under_live_dual_writes(env, backfill_dag, monkeypatch):
    seed(env)
    writer = DualWriter(env)
    writer.start()
    try:
        writer.stop_event.wait(1.5)  # recent dual-writes for the check
        conf = {"conn_id": env.conn_id, "replica_conn_ids": [env.replica_conn_id], "source_table": "accounts_legacy",
                "target_table": "accounts_new", "key": "id", "columns": {"balance_cents": "balance * 100"},
                "profile": "dev", "batch_size": 2_000, "partitions": 2, "dual_write": "check",
                "dual_write_updated_column": "updated_at"}
        dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    finally:
        writer.stop_event.set()
        writer.join(30)
    assert writer.error is None and writer.writes > 50, (writer.error, writer.writes)
    assert str(dr.state) == "success", states
    assert report["state"] == "contracted" and report["dual_write"]["mismatched_rows"] == 0
    assert report["validation"]["mismatched"] == 0 and report["validation"]["source_rows"] == ROWS
    assert byte_exact_differences(env) == 0
