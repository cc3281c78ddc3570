"""No credentials anywhere (issue 22, item 11): a DAG run configured with secrets in every place a
secret can go (an HTTP flag store URL with ``user:password@``, an error-signal Airflow connection
with a password and a token in its endpoint's query string, a Redis cache connection with a
password) contracts, and none of the secrets appears in its task logs, its events, its stored
config, its report (stored and local), or its XComs; the conf-id ones are not in the DagRun conf
either."""

from __future__ import annotations

import json
import os
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import JsonHandler, run_dag, seed_users, users_conf

pytestmark = pytest.mark.e2e

FLAG_PASSWORD = "FlagPassw0rd-7f3a"
SIGNAL_PASSWORD = "SignalPassw0rd-91c2"
SIGNAL_TOKEN = "SignalT0ken-5d6e"
REDIS_PASSWORD = "RedisPassw0rd-aa01"
SECRETS = (FLAG_PASSWORD, SIGNAL_PASSWORD, SIGNAL_TOKEN, REDIS_PASSWORD)


class Handler(JsonHandler):
    """A flag service (``/flags/<flag>``, GET and PUT) and a 5xx-rate endpoint (``/metrics``)."""

    flags: dict = {}
    seen_auth: list = []

    def do_GET(self):
        self.seen_auth.append(self.headers.get("Authorization"))
        path = urlsplit(self.path).path
        if path == "/metrics":
            return self.reply(200, {"error_rate_pct": 0.0})
        flag = unquote(path.removeprefix("/flags/"))
        return self.reply(200, self.flags[flag]) if flag in self.flags else self.reply(404, {})

    def do_PUT(self):
        self.seen_auth.append(self.headers.get("Authorization"))
        flag = unquote(urlsplit(self.path).path.removeprefix("/flags/"))
        self.flags[flag] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        return self.reply(204)


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.flags, Handler.seen_auth = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _latest_report_dir() -> Path:
    reports = sorted((Path(os.environ["AIRFLOW_HOME"]) / "backfill_reports").glob("*/report.json"),
                     key=lambda p: p.stat().st_mtime)
    return reports[-1].parent


def _xcoms(run_id):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [str(v) for v in session.scalars(select(XComModel.value).where(XComModel.run_id == run_id))]


def _dag_run_conf(run_id):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return json.dumps(session.scalar(select(DagRun.conf).where(DagRun.run_id == run_id)))


@pytest.mark.parametrize("env", ["postgres"], indirect=True)
def test_a_run_configured_with_secrets_shows_none_of_them_anywhere(env, backfill_dag, monkeypatch, service, capfd):
    monkeypatch.setenv("AIRFLOW_CONN_ZDT_TEST_SIGNAL", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": service, "login": "metrics", "password": SIGNAL_PASSWORD,
        "extra": {"endpoint": f"metrics?api_token={SIGNAL_TOKEN}"}}))
    monkeypatch.setenv("AIRFLOW_CONN_ZDT_TEST_CACHE", json.dumps({
        "conn_type": "redis", "host": "127.0.0.1", "port": 6379, "password": REDIS_PASSWORD, "extra": {"db": 0}}))
    seed_users(env, 500)
    conf = users_conf(env, flag_store="http", flag_store_url=f"http://flags:{FLAG_PASSWORD}@127.0.0.1:{service}/flags",
                      error_signal_conn_id="zdt_test_signal", cache_conn_id="zdt_test_cache",
                      cache_key_pattern="users:*", ramp_watch_minutes=0.02)
    dr, states, report = run_dag(backfill_dag, env, monkeypatch, conf)
    logs = capfd.readouterr()
    assert str(dr.state) == "success", states
    assert report["state"] == "contracted"
    # the secrets were really used: basic auth reached the services, the signal was watched
    assert Handler.flags["users_new_write_path"]["path"] == "new"
    assert any(a and a.startswith("Basic ") for a in Handler.seen_auth)

    places = {
        "task logs": logs.out + logs.err,
        "events": json.dumps(env.sql("SELECT kind, reason, detail FROM zdt_backfill_events"), default=str),
        "stored config": json.dumps(env.sql("SELECT config FROM zdt_backfill_runs"), default=str),
        "stored report": json.dumps(env.sql("SELECT report_json, report_md FROM zdt_backfill_reports"), default=str),
        "local report": "".join(p.read_text() for p in _latest_report_dir().glob("*")
                                if p.is_file() and p.suffix in (".json", ".md", ".html")),
        "xcoms": " ".join(_xcoms(dr.run_id)),
    }
    assert all(places.values()), [k for k, v in places.items() if not v]  # every place was read
    assert "5xx rate at most 0%" in places["events"]  # the signal behind the connection was watched
    leaks = {where: [s for s in SECRETS if s in text] for where, text in places.items()}
    assert not any(leaks.values()), leaks
    # the masked forms are what is shown
    assert f"http://flags:***@127.0.0.1:{service}/flags" in places["stored config"]
    # a secret behind a connection id never enters the DagRun conf at all
    run_conf = _dag_run_conf(dr.run_id)
    assert SIGNAL_PASSWORD not in run_conf and SIGNAL_TOKEN not in run_conf and REDIS_PASSWORD not in run_conf
