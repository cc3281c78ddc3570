"""The run report: one JSON document and its Markdown summary, built from the database.

Every figure comes from the run-state and checkpoint tables (:mod:`.runstate`,
:mod:`.checkpoint`), never from one attempt's XComs: the state machine's transitions,
every validation, every destructive statement, the compatibility windows, and the
partitions' counters. The JSON's top-level keys are stable and may only grow. Written to
``<reports_dir>/<run_id>/report.json`` and ``report.md``, and recorded as a ``report``
event in the state table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointStore
from .config import RunConfig
from .db import Database
from .runstate import RunHandle


def from_state(config: RunConfig, db: Database, ending: dict[str, Any]) -> dict[str, Any]:
    """Assemble the report of a run from the state and checkpoint tables.

    :param ending: how the run ended (:func:`~.lifecycle.finish_run`): ``state``, ``reason``, ``success``.
    :returns: the JSON-ready report: rows in rows, times in seconds, rates in rows/s.
    """
    handle = RunHandle(db, config)
    events = handle.events()
    with db.session() as conn:
        store = CheckpointStore(db)
        progress = store.progress(conn, config.run_id)
        span = store.span_seconds(conn, config.run_id)

    def last(kind: str) -> dict[str, Any] | None:
        found = [e for e in events if e.kind == kind]
        return found[-1].detail if found else None

    windows: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.kind == "window":
            windows.setdefault(e.detail["window"], {})[e.detail["edge"]] = e.at.isoformat()
    dual = [e for e in events if e.kind == "dual_write"]
    by_reason: dict[str, float] = {}
    for e in events:
        if e.kind == "throttle":
            for kind, secs in (e.detail.get("seconds") or {}).items():
                by_reason[kind] = round(by_reason.get(kind, 0.0) + float(secs), 3)
    keys = sum(p.keys_scanned for p in progress)
    validation = last("validation")
    return {
        "run_id": config.run_id,
        "engine": db.dialect.name,
        "mode": config.mode,
        "source_table": config.source_table,
        "target_table": config.target_table,
        "profile": config.profile.name,
        "state": ending.get("state"),
        "reason": ending.get("reason"),
        "success": bool(ending.get("success")),
        "decision": last("decision"),
        "rows_written": sum(p.rows_written for p in progress),
        "keys_scanned": keys,
        "batches": sum(p.batches for p in progress),
        "yields": sum(p.retries for p in progress),
        "data_errors": sum(p.data_errors for p in progress),
        "partitions": len(progress),
        "backfill_seconds": round(span, 3),
        "wall_seconds": round((events[-1].at - events[0].at).total_seconds(), 3) if len(events) > 1 else 0.0,
        "rows_per_second": round(keys / span, 1) if span and keys else None,
        "throttled_seconds": round(sum(p.throttled_seconds for p in progress), 3),
        "throttled_by_reason": by_reason,
        "data_error_keys": [k for e in events if e.kind == "data_error" for k in e.detail.get("keys", [])],
        "dual_write": {"detail": dual[-1].reason, **dual[-1].detail} if dual else None,
        "validation": validation,
        "validations": len([e for e in events if e.kind == "validation"]),
        "repair": last("repair"),
        "approvals": [e.detail for e in events if e.kind == "approval"],
        "transitions": [
            {"at": e.at.isoformat(), "from": e.state_from, "to": e.state_to, "reason": e.reason}
            for e in events if e.kind == "transition"
        ],
        "destructive": [
            {"at": e.at.isoformat(), "step": e.detail.get("step"), "sql": e.detail.get("sql"), "reason": e.reason}
            for e in events if e.kind == "destructive"
        ],
        "windows": windows,
        "failures": [e.reason for e in events if e.kind == "failure"],
        "plan": last("plan"),
        "partition_detail": [p.to_dict() for p in progress],
        "config": config.to_dict(),
    }


def to_markdown(r: dict[str, Any]) -> str:
    """A short human summary of a report dict."""
    v = r.get("validation")
    dec = r.get("decision") or {}
    lines = [
        f"# Backfill report: {r.get('source_table')} -> {r.get('target_table')}",
        "",
        f"- run: `{r.get('run_id')}` on {r.get('engine')}, mode {r.get('mode')}, profile {r.get('profile')}",
        f"- ended: **{r.get('state')}** ({r.get('reason') or 'no reason recorded'})"
        + ("" if r.get("success") else " - the Airflow run is marked failed"),
        f"- decision: {(dec.get('decision') or {}).get('branch', 'none')} "
        f"({'; '.join((dec.get('decision') or {}).get('reasons', [])) or 'no decision taken'})",
        f"- rows written: {r.get('rows_written'):,} of {r.get('keys_scanned'):,} keys scanned, "
        f"in {r.get('batches'):,} batches over {r.get('partitions')} partition(s); "
        f"transient yields (retried, not errors): {r.get('yields')}; data errors: {r.get('data_errors')}",
        f"- backfill time: {r.get('backfill_seconds')} s, throughput: {r.get('rows_per_second') or 'n/a'} rows/s; "
        f"throttled {r.get('throttled_seconds')} s"
        + (" (" + ", ".join(f"{k} {v:g} s" for k, v in sorted((r.get("throttled_by_reason") or {}).items())) + ")"
           if r.get("throttled_by_reason") else ""),
    ]
    if r.get("dual_write"):
        lines.append(f"- dual-write: {r['dual_write'].get('detail')}")
    if v:
        lines.append(
            f"- validation: {'MATCH' if v.get('mismatched') == 0 else 'MISMATCH'}, {v.get('source_rows')} source rows, "
            f"{v.get('target_rows')} target rows, missing {v.get('missing')}, different {v.get('different')}, "
            f"extra {v.get('extra')}" + (" (after repair)" if v.get("after_repair") else "")
        )
        if v.get("sample_keys"):
            lines.append(f"- differing keys (sample): {v['sample_keys']}")
    else:
        lines.append("- validation: not run")
    if r.get("repair"):
        lines.append(f"- repaired: {r['repair'].get('repaired')}, keys that could not be written: "
                     f"{r['repair'].get('failed_keys') or 'none'}")
    for a in r.get("approvals") or []:
        lines.append(f"- approval ({a.get('what')}): {a.get('option')} by {a.get('user')}")
    lines.append("- states: " + " -> ".join([t["to"] for t in r.get("transitions") or []] or ["(none)"]))
    for dstep in r.get("destructive") or []:
        lines.append(f"- destructive [{dstep['step']}] at {dstep['at']}: `{dstep['sql']}`")
    for name, w in (r.get("windows") or {}).items():
        lines.append(f"- window {name}: {w.get('start', '?')} -> {w.get('end', 'open')}")
    for f in r.get("failures") or []:
        lines.append(f"- failure: {f}")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], reports_dir: Path) -> Path:
    """Write ``report.json`` and ``report.md`` under ``reports_dir/<run_id>/``; return that folder.

    The run id is made filesystem-safe (``:`` and ``+`` from timestamps become ``_``).
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(report.get("run_id") or "run"))
    out = Path(reports_dir) / safe
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(to_markdown(report))
    return out
