"""Routing flag stores and error signals against real servers: the flag table and a SQL
signal on PostgreSQL and MariaDB, the HTTP store and signal against a real local HTTP
server; the seed's ramp (1 %, back to legacy above 0.1 % 5xx) driven through each."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import unquote

import httpx
import pytest

from conftest import JsonHandler
from zdt_backfill.errors import ConfigError
from zdt_backfill.routing.flags import FLAGS, LEGACY, NEW, FlagValue, HttpFlagStore, TableFlagStore
from zdt_backfill.routing.ramp import ramp
from zdt_backfill.signals.errorsignal import HttpErrorSignal, SqlErrorSignal
from zdt_backfill.signals.load import ThrottleQuery

pytestmark = pytest.mark.integration

STEP = FlagValue("new", 1)
RATE_SQL = "SELECT 100.0 * errors_5xx / total FROM app_http_stats"


def flag_row(env, flag):
    rows = env.sql(f"SELECT value, percent, run_id FROM {FLAGS} WHERE flag = %s", (flag,))
    return tuple(rows[0]) if rows else None


# ---------------------------------------------------------------------- table store + SQL signal
def test_table_flag_store_round_trips(env):
    store = TableFlagStore(env.db)
    assert store.get("users_new_read_path") is None  # no table yet
    store.set("users_new_read_path", STEP, "run-1")
    assert store.get("users_new_read_path") == STEP
    assert store.get("other_flag") is None  # table, no row
    assert flag_row(env, "users_new_read_path") == ("new", 1, "run-1")
    store.set("users_new_read_path", NEW, "run-2")  # overwrite
    assert store.get("users_new_read_path") == NEW
    assert flag_row(env, "users_new_read_path") == ("new", 100, "run-2")
    store.set("users_new_read_path", LEGACY, "run-3")
    assert store.get("users_new_read_path") == LEGACY
    assert int(env.scalar(f"SELECT count(*) FROM {FLAGS}")) == 1
    assert env.scalar(f"SELECT updated_at FROM {FLAGS}") is not None


def test_table_flag_store_upgrades_the_earlier_layout(env):
    ts = "timestamptz" if env.engine == "postgres" else "timestamp(6)"
    env.sql(f"CREATE TABLE {FLAGS} (flag varchar(128) PRIMARY KEY, value varchar(64) NOT NULL,"
            f" run_id varchar(250), updated_at {ts} NULL)")
    env.sql(f"INSERT INTO {FLAGS} (flag, value) VALUES ('a', 'new')")
    env.sql(f"INSERT INTO {FLAGS} (flag, value) VALUES ('b', 'legacy')")
    store = TableFlagStore(env.db)
    assert store.get("a") == NEW and store.get("b") == LEGACY  # no percent column: implied by the path
    store.set("c", STEP, "run-1")
    assert flag_row(env, "a")[:2] == ("new", 100) and flag_row(env, "b")[:2] == ("legacy", 0)
    assert store.get("c") == STEP


def make_stats(env, total, errors):
    env.sql("CREATE TABLE app_http_stats (total int, errors_5xx int)")
    env.sql("INSERT INTO app_http_stats VALUES (%s, %s)", (total, errors))


def test_sql_signal_reads_a_rate_read_only(env):
    make_stats(env, 10_000, 5)
    assert SqlErrorSignal(env.db, RATE_SQL).read() == pytest.approx(0.05)
    # a literal % in the query is fine
    assert SqlErrorSignal(env.db, "SELECT 1.5 WHERE 'a%' LIKE 'a%'").read() == pytest.approx(1.5)
    # NULL, no row, a string, a failing query: nan
    assert math.isnan(SqlErrorSignal(env.db, "SELECT NULL").read())
    assert math.isnan(SqlErrorSignal(env.db, "SELECT total FROM app_http_stats WHERE total < 0").read())
    assert math.isnan(SqlErrorSignal(env.db, "SELECT 'x'").read())
    assert math.isnan(SqlErrorSignal(env.db, "SELECT * FROM no_such_table").read())
    # a write is refused before it runs (the query guard) ...
    with pytest.raises(ConfigError, match="one plain SELECT"):
        SqlErrorSignal(env.db, "UPDATE app_http_stats SET errors_5xx = 0")
    # ... and the session is read-only and rolled back all the same: a write slipped past the
    # guard changes nothing
    signal = SqlErrorSignal(env.db, "SELECT 1")
    signal.query = "UPDATE app_http_stats SET errors_5xx = 0"
    assert math.isnan(signal.read())
    assert env.scalar("SELECT errors_5xx FROM app_http_stats") == 5


#: A read that passes the guard and runs for minutes: a three-way cross join of the catalog.
SLOW_SQL = {
    "postgres": "SELECT count(*) FROM pg_catalog.pg_attribute a, pg_catalog.pg_attribute b, pg_catalog.pg_attribute c",
    "mysql": "SELECT count(*) FROM information_schema.COLUMNS a, information_schema.COLUMNS b, information_schema.COLUMNS c",
}


@pytest.mark.parametrize("probe", ["throttle_query", "error_signal_sql"])
def test_a_slow_probe_query_is_cut_off_by_its_statement_timeout_and_reads_as_failing(env, probe):
    """Issue 22: a probe query runs read-only under a statement timeout on every engine (MySQL's
    max_execution_time, MariaDB's max_statement_time), so a slow one cannot wedge the batch loop."""
    sql = SLOW_SQL[env.engine]
    reader = (ThrottleQuery(env.db, sql, timeout_seconds=1.0) if probe == "throttle_query"
              else SqlErrorSignal(env.db, sql, timeout_seconds=1.0))
    start = time.monotonic()
    value = reader.read()
    took = time.monotonic() - start
    assert math.isnan(value) and took < 4.0, (value, took)
    # nothing of it is left running on the server
    if env.engine == "postgres":
        left = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_attribute a, pg_catalog%%' AND pid <> pg_backend_pid()"
    else:
        left = ("SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%%COLUMNS a, information_schema%%' "
                "AND ID <> CONNECTION_ID()")
    assert env.scalar(left) == 0


@pytest.mark.parametrize("probe", ["throttle_query", "error_signal_sql"])
def test_a_probe_query_that_writes_kills_or_sleeps_is_refused_before_it_runs(env, probe):
    make_stats(env, 10_000, 5)
    cls = ThrottleQuery if probe == "throttle_query" else SqlErrorSignal
    kill = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity" if env.engine == "postgres"
            else "SELECT SLEEP(100000)")
    for bad in (kill, "WITH gone AS (DELETE FROM app_http_stats RETURNING 1) SELECT count(*) FROM gone"):
        with pytest.raises(ConfigError, match=probe):
            cls(env.db, bad)
    assert env.scalar("SELECT count(*) FROM app_http_stats") == 1


@pytest.mark.parametrize("errors, ok", [(5, True), (50, False)])  # 0.05 % forward, 0.5 % back to legacy
def test_ramp_over_the_table_store_and_a_sql_signal(env, errors, ok):
    make_stats(env, 10_000, errors)
    store = TableFlagStore(env.db)
    r = ramp(store, "users_new_read_path", "run-ramp", SqlErrorSignal(env.db, RATE_SQL),
             watch_seconds=0.3, poll_seconds=0.1)
    assert r.ok is ok
    if ok:
        assert r.final == NEW and len(r.readings) >= 3
        assert all(p == pytest.approx(0.05) for _, p in r.readings)
        assert flag_row(env, "users_new_read_path") == ("new", 100, "run-ramp")
    else:
        assert r.final == LEGACY and r.reason == "5xx rate 0.5% > 0.1% at 1% of reads"
        assert len(r.readings) == 1
        assert flag_row(env, "users_new_read_path") == ("legacy", 0, "run-ramp")
    assert [c["to"] for c in r.changes] == [STEP.to_dict(), (NEW if ok else LEGACY).to_dict()]


def test_ramp_rolls_back_when_the_rate_rises_during_the_watch(env):
    make_stats(env, 10_000, 0)
    store = TableFlagStore(env.db)
    signal = SqlErrorSignal(env.db, RATE_SQL)
    reads = []

    class Worsening:
        name = "worsening"

        def read(self):
            reads.append(1)
            if len(reads) == 3:  # the application starts failing at 1 % of reads
                env.sql("UPDATE app_http_stats SET errors_5xx = 20")
            return signal.read()

    r = ramp(store, "f", "run-x", Worsening(), watch_seconds=5.0, poll_seconds=0.05)
    assert not r.ok and [p for _, p in r.readings] == pytest.approx([0.0, 0.0, 0.2])
    assert flag_row(env, "f") == ("legacy", 0, "run-x")


# ---------------------------------------------------------------------- HTTP store + HTTP signal
class FlagService(ThreadingHTTPServer):
    """An application team's flag service and metrics endpoint, in a thread on a free port."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FlagHandler)
        self.flags: dict[str, dict] = {}
        self.puts: list[tuple[str, dict]] = []
        self.error_rate: object = 0.0
        self.token = "Bearer s3cret"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class FlagHandler(JsonHandler):
    server: FlagService

    def do_GET(self):
        if self.path == "/metrics":
            return self.reply(200, {"error_rate_pct": self.server.error_rate, "window_s": 60})
        if self.path == "/broken":
            return self.reply(500, {"error": "boom"})
        if self.headers.get("Authorization") != self.server.token:
            return self.reply(401, {"error": "unauthorized"})
        if self.path.startswith("/flags/"):
            flag = unquote(self.path[len("/flags/"):])
            if flag in self.server.flags:
                return self.reply(200, self.server.flags[flag])
        return self.reply(404, {"error": "not found"})

    def do_PUT(self):
        if self.headers.get("Authorization") != self.server.token:
            return self.reply(401, {"error": "unauthorized"})
        if not self.path.startswith("/flags/") or self.headers.get("Content-Type") != "application/json":
            return self.reply(400, {"error": "bad request"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        flag = unquote(self.path[len("/flags/"):])
        self.server.flags[flag] = body
        self.server.puts.append((flag, body))
        return self.reply(204)


@pytest.fixture
def service():
    s = FlagService()
    s.thread.start()
    yield s
    s.shutdown()
    s.server_close()


def test_http_flag_store_round_trips(service):
    store = HttpFlagStore(service.base + "/flags", headers={"Authorization": service.token})
    assert store.get("users_new_read_path") is None  # 404
    store.set("users_new_read_path", STEP, "run-1")
    assert service.flags["users_new_read_path"] == {"path": "new", "percent": 1, "run_id": "run-1"}
    assert store.get("users_new_read_path") == STEP
    store.set("users_new_read_path", NEW, "run-2")
    assert store.get("users_new_read_path") == NEW
    store.set("odd name/1", LEGACY, "run-3")  # URL-encoded into one path segment
    assert service.flags["odd name/1"]["path"] == "legacy" and store.get("odd name/1") == LEGACY
    with pytest.raises(httpx.HTTPStatusError):  # a store that refuses is an error, not "no flag"
        HttpFlagStore(service.base + "/flags").get("users_new_read_path")
    with pytest.raises(httpx.HTTPStatusError):
        HttpFlagStore(service.base + "/flags").set("users_new_read_path", LEGACY, "run-4")
    assert store.get("users_new_read_path") == NEW


def test_http_error_signal(service):
    service.error_rate = 0.02
    assert HttpErrorSignal(service.base + "/metrics").read() == pytest.approx(0.02)
    assert HttpErrorSignal(service.base + "/metrics", json_key="window_s").read() == 60
    for bad in (None, "0.02", [0.02]):
        service.error_rate = bad
        assert math.isnan(HttpErrorSignal(service.base + "/metrics").read())
    service.error_rate = 0.02
    assert math.isnan(HttpErrorSignal(service.base + "/metrics", json_key="missing").read())
    assert math.isnan(HttpErrorSignal(service.base + "/broken").read())
    assert math.isnan(HttpErrorSignal("http://127.0.0.1:9/metrics", timeout_seconds=0.5).read())  # refused


@pytest.mark.parametrize("rate, ok", [(0.05, True), (0.5, False), (None, False)])
def test_ramp_over_http(service, rate, ok):
    service.error_rate = rate
    store = HttpFlagStore(service.base + "/flags", headers={"Authorization": service.token})
    r = ramp(store, "users_new_read_path", "run-http", HttpErrorSignal(service.base + "/metrics"),
             watch_seconds=0.3, poll_seconds=0.1)
    assert r.ok is ok
    final = NEW if ok else LEGACY
    assert [FlagValue.from_dict(b) for _, b in service.puts] == [STEP, final]
    assert all(b["run_id"] == "run-http" for _, b in service.puts)
    assert store.get("users_new_read_path") == final
    if rate == 0.5:
        assert r.reason == "5xx rate 0.5% > 0.1% at 1% of reads"
    if rate is None:
        assert "unreadable" in r.reason and r.to_dict()["readings"][0][1] is None
