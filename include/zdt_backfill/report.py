"""The run report: one JSON document and its Markdown summary.

The JSON's top-level keys are stable and may only grow (later issues add batch
time percentiles, charts, throttle accuracy...). Written to
``<reports_dir>/<run_id>/report.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .checkpoint import PartitionProgress


def summarize(
    config: dict[str, Any],
    plan: dict[str, Any] | None,
    partitions: list[PartitionProgress],
    dual_write: dict[str, Any] | None,
    validation: dict[str, Any] | None,
    decision: dict[str, Any] | None,
    outcome: dict[str, Any],
    wall_seconds: float,
    throttled: dict[str, float],
    max_lag_seconds: float | None,
    backfill_seconds: float,
) -> dict[str, Any]:
    """Assemble the report dict.

    :param partitions: checkpoint rows of the run (rows in rows, seconds in s).
    :param throttled: seconds throttled, by reason (``rate``, ``replica-lag``...).
    :param wall_seconds: from the start of pre-flight to now (s).
    :param backfill_seconds: from the first partition's start to the last batch (s).
    :returns: the JSON-ready report. ``rows_per_second`` is keys processed / backfill seconds.
    """
    rows = sum(p.rows_written for p in partitions)
    keys = sum(p.keys_scanned for p in partitions)
    batches = sum(p.batches for p in partitions)
    retries = sum(p.retries for p in partitions)
    copy_seconds = backfill_seconds
    return {
        "run_id": config.get("run_id"),
        "engine": (plan or {}).get("engine"),
        "mode": config.get("mode"),
        "source_table": config.get("source_table"),
        "target_table": config.get("target_table"),
        "profile": config.get("profile"),
        "branch": (decision or {}).get("branch"),
        "decision_reasons": (decision or {}).get("reasons", []),
        "outcome": outcome,
        "rows_written": rows,
        "keys_scanned": keys,
        "batches": batches,
        "retries": retries,
        "partitions": len(partitions),
        "backfill_seconds": round(copy_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "rows_per_second": round(keys / copy_seconds, 1) if copy_seconds else None,
        "throttled_seconds": {k: round(v, 3) for k, v in sorted(throttled.items())},
        "max_replica_lag_seconds": max_lag_seconds,
        "dual_write": dual_write,
        "checksum": validation,
        "preflight_checks": (plan or {}).get("checks", []),
        "partition_detail": [p.to_dict() for p in partitions],
        "config": config,
    }


def to_markdown(r: dict[str, Any]) -> str:
    """A short human summary of a report dict."""
    v = r.get("checksum") or {}
    dw = r.get("dual_write") or {}
    lines = [
        f"# Backfill report: {r.get('source_table')} -> {r.get('target_table')}",
        "",
        f"- run: `{r.get('run_id')}` on {r.get('engine')}, mode {r.get('mode')}, profile {r.get('profile')}",
        f"- branch taken: **{r.get('branch') or 'none'}** ({'; '.join(r.get('decision_reasons') or []) or 'no decision'})",
        f"- rows written: {r.get('rows_written'):,} of {r.get('keys_scanned'):,} keys scanned, "
        f"in {r.get('batches'):,} batches over {r.get('partitions')} partition(s); retries: {r.get('retries')}",
        f"- backfill time: {r.get('backfill_seconds')} s, throughput: {r.get('rows_per_second')} rows/s; "
        f"wall time: {r.get('wall_seconds')} s",
        f"- throttled: {r.get('throttled_seconds') or 'never'}; max replica lag seen: {r.get('max_replica_lag_seconds')} s",
        f"- dual-write: {dw.get('mode')} ({dw.get('detail', '')})",
        f"- checksum: {'MATCH' if v.get('mismatched') == 0 else 'MISMATCH'}, match {v.get('match_pct')}%, "
        f"source rows {v.get('source_rows')}, target rows {v.get('target_rows')}, missing {v.get('missing')}, "
        f"different {v.get('different')}, extra {v.get('extra')}",
    ]
    if v.get("sample_keys"):
        lines.append(f"- differing keys (sample): {v['sample_keys']}")
    lines.append(f"- outcome: {_outcome_text(r.get('outcome') or {})}")
    return "\n".join(lines) + "\n"


def _outcome_text(o: dict[str, Any]) -> str:
    state = o.get("state", "unknown")
    if state == "contracted":
        c = o.get("contract") or {}
        flag = c.get("flip_routing") or {}
        dropped = (c.get("drop_legacy") or {}).get("dropped") or []
        reclaim = (c.get("reclaim_storage") or {}).get("statement")
        return (f"contracted: routing flag {flag.get('flag')} -> {flag.get('to')}; "
                f"{'dropped ' + ', '.join(dropped) if dropped else 'legacy schema kept'}; "
                f"{reclaim or 'no storage reclaim'}")
    if state == "rolled_back":
        rb = o.get("rollback") or {}
        flag = rb.get("flip_routing") or {}
        emptied = (rb.get("empty_target") or {}).get("statement")
        caches = (rb.get("clear_caches") or {}).get("cleared", 0)
        return (f"rolled back: routing flag {flag.get('flag')} -> {flag.get('to')}; {emptied}; "
                f"sequences reset: {(rb.get('reset_sequences') or {}).get('sequences') or 'none'}; cache keys cleared: {caches}")
    return f"{state}: {o.get('hint', '')}"


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
