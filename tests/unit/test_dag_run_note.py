"""The DAG run's note goes through the public REST API with a JWT (a local stand-in API server
records the calls); without the ``zdt_airflow_api`` connection the note is skipped, and a dead
API server never fails the report."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from zdt_airflow.notes import api_settings, set_dag_run_note


@pytest.fixture
def api():
    calls: list[tuple[str, str, dict, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def _reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            body = self._body()
            calls.append(("POST", self.path, body, None))
            ok = body == {"username": "admin", "password": "pw"}
            self._reply(201 if ok else 401, {"access_token": "jwt-1"} if ok else {"detail": "bad"})

        def do_PATCH(self):  # noqa: N802
            calls.append(("PATCH", self.path, self._body(), self.headers.get("Authorization")))
            self._reply(200, {})

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()
    server.server_close()


def test_the_note_is_patched_with_a_jwt_from_the_token_route(api):
    base, calls = api
    out = set_dag_run_note("zero_downtime_backfill", "manual__1", "contracted: done; 10 rows written",
                           {"base_url": base, "login": "admin", "password": "pw", "token": None})
    assert out == "set"
    assert calls[0][:3] == ("POST", "/auth/token", {"username": "admin", "password": "pw"})
    method, path, body, auth = calls[1]
    assert (method, path) == ("PATCH", "/api/v2/dags/zero_downtime_backfill/dagRuns/manual__1?update_mask=note")
    assert body == {"note": "contracted: done; 10 rows written"} and auth == "Bearer jwt-1"


def test_wrong_credentials_or_no_server_are_reported_not_raised(api):
    base, _ = api
    assert set_dag_run_note("d", "r", "n", {"base_url": base, "login": "x", "password": "y"}).startswith(
        "failed: HTTPStatusError")
    assert set_dag_run_note("d", "r", "n", {"base_url": "http://127.0.0.1:9", "token": "t"}).startswith("failed: ")


def test_without_the_connection_the_note_is_skipped(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_ZDT_AIRFLOW_API", raising=False)
    assert set_dag_run_note("d", "r", "n", api_settings()).startswith("skipped: no Airflow connection 'zdt_airflow_api'")


def test_the_connection_gives_base_url_and_user(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ZDT_AIRFLOW_API", json.dumps(
        {"conn_type": "http", "host": "localhost", "port": 8080, "login": "admin", "password": "pw"}))
    s = api_settings()
    assert s["base_url"] == "http://localhost:8080" and (s["login"], s["password"]) == ("admin", "pw")
