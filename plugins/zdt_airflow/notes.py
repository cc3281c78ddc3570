"""The DAG run's note, set from task code through Airflow's public REST API.

Airflow 3 task code cannot write the metadata database, and the Task SDK's execution API has
no route for a run's note; the supported way is the public REST API,
``PATCH /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}`` with body ``{"note": ...}`` and a JWT
(``POST /auth/token`` with a user's name and password, the simple and FAB auth managers'
token route). Credentials come from the optional Airflow connection ``zdt_airflow_api``:

- ``host`` (with ``schema`` http/https and ``port``), or ``extra.base_url``: the API server,
  e.g. ``http://localhost:8080``;
- ``login`` / ``password``: a user allowed to edit DAG runs; or ``extra.token``: a JWT.

Without that connection the note is skipped, and the report task's log says so.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

NOTE_CONN_ID = "zdt_airflow_api"
#: A DAG run note holds at most 1000 characters in Airflow's UI and database.
MAX_NOTE_CHARS = 1000
HTTP_TIMEOUT_SECONDS = 10.0


def api_settings(conn_id: str = NOTE_CONN_ID) -> dict[str, Any] | None:
    """``{"base_url", "login", "password", "token"}`` from the connection, ``None`` when it is not defined."""
    from airflow.sdk import BaseHook

    try:
        c = BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException, or no connection backend at all
        return None
    extra = c.extra_dejson or {}
    base = extra.get("base_url")
    if not base:
        scheme = c.schema if c.schema in ("http", "https") else "http"
        base = f"{scheme}://{c.host}" + (f":{c.port}" if c.port else "")
    return {"base_url": base.rstrip("/"), "login": c.login, "password": c.password, "token": extra.get("token")}


def set_dag_run_note(dag_id: str, run_id: str, note: str, settings: dict[str, Any] | None) -> str:
    """Set the DAG run's note; never raises (a note is not worth failing the report for).

    :param settings: from :func:`api_settings`; ``None`` skips.
    :returns: what happened, for the task log: ``"set"``, ``"skipped: ..."`` or ``"failed: ..."``.
    """
    if settings is None:
        return f"skipped: no Airflow connection {NOTE_CONN_ID!r} (API base URL and a user, see the README)"
    base = settings["base_url"]
    try:
        with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_SECONDS) as client:
            token = settings.get("token")
            if not token:
                r = client.post("/auth/token", json={"username": settings.get("login"),
                                                     "password": settings.get("password")})
                r.raise_for_status()
                token = r.json()["access_token"]
            r = client.patch(
                f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}", params={"update_mask": "note"},
                json={"note": note[:MAX_NOTE_CHARS]}, headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
    except Exception as exc:  # the API server down, wrong credentials: the report is still stored
        return f"failed: {type(exc).__name__}: {exc}"[:500]
    return "set"
