"""The run report: one JSON document and its Markdown summary, built from the database.

Every figure comes from the run-state and checkpoint tables (:mod:`zdt_backfill.state.runstate`,
:mod:`zdt_backfill.state.checkpoint`), never from one attempt's XComs: the state machine's transitions,
every validation, every destructive statement, the compatibility windows, and the
partitions' counters and their attempts (``attempt`` / ``attempt_end`` events: an attempt
without an end crashed). The JSON's top-level keys are stable and may only grow. Stored as a
row of ``zdt_backfill_reports`` in the target database (:func:`store`: reachable from every
worker and by the rehearsal comparison), and as ``<reports_dir>/<run_id>/report.json`` and
``report.md`` on the worker that wrote it (an extra copy).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..copying.progress import THROTTLE_WORDS
from ..db import Database
from ..dialects.schema import REPORTS
from ..state.checkpoint import CheckpointStore, PartitionProgress
from ..state.runstate import Event, RunHandle

log = logging.getLogger(__name__)




#: Chart samples kept in a report (thinned evenly beyond it).
MAX_SAMPLES = 2_000


def from_state(config: RunConfig, db: Database, ending: dict[str, Any]) -> dict[str, Any]:
    """Assemble the report of a run from the state and checkpoint tables.

    :param ending: how the run ended (:func:`~zdt_backfill.lifecycle.finish_run`): ``state``, ``reason``, ``success``.
    :returns: the JSON-ready report (see :func:`from_rows`).
    """
    handle = RunHandle(db, config)
    events = handle.events()
    with db.session() as conn:
        store = CheckpointStore(db)
        progress = store.progress(conn, config.run_id)
        span = store.span_seconds(conn, config.run_id)
    return from_rows(config.to_dict(), db.dialect.name, events, progress, span, ending)


def _attempts(events: list[Event]) -> dict[int, dict[str, int]]:
    """Per copy partition: ``tries`` (attempts started), ``crashes`` (an attempt that never recorded
    its end: its worker died), ``failed`` (ended on an error), ``resumes`` (started past its
    first key, from the checkpoint's watermark)."""
    out: dict[int, dict[str, int]] = {}
    open_: dict[int, bool] = {}
    for e in events:
        if e.kind not in ("attempt", "attempt_end") or e.detail.get("phase", "copy") != "copy":
            continue
        n = int(e.detail.get("partition", -1))
        c = out.setdefault(n, {"tries": 0, "crashes": 0, "failed": 0, "resumes": 0})
        if e.kind == "attempt":
            if open_.get(n):
                c["crashes"] += 1
            open_[n] = True
            c["tries"] += 1
            c["resumes"] += bool(e.detail.get("resumed"))
        else:
            open_[n] = False
            c["failed"] += e.detail.get("outcome") != "done"
    for n, still_open in open_.items():
        if still_open:  # the report runs after every partition task: nobody is copying any more
            out[n]["crashes"] += 1
    return out


def from_rows(
    config: dict[str, Any], engine: str, events: list[Event], progress: list[PartitionProgress],
    copy_span_seconds: float, ending: dict[str, Any],
) -> dict[str, Any]:
    """The report from the run's state rows: pure, so it is tested on crafted rows.

    :param config: :meth:`RunConfig.to_dict`.
    :param events: the run's ``zdt_backfill_events`` rows, oldest first.
    :param progress: the run's checkpoint rows.
    :param copy_span_seconds: first partition start to last checkpoint update (s).
    :returns: rows in rows, times in seconds, rates in rows/s. ``copy_seconds`` (the copy's
        wall time) is never longer than ``wall_seconds`` (the run's); ``rows_per_second`` is
        rows written over the copy's wall time, ``None`` when nothing was written.
    """
    def last(kind: str) -> dict[str, Any] | None:
        found = [e for e in events if e.kind == kind]
        return found[-1].detail if found else None

    windows: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.kind == "window":
            windows.setdefault(e.detail["window"], {})[e.detail["edge"]] = e.at.isoformat()
    dual = [e for e in events if e.kind == "dual_write"]
    trig = [e.detail for e in events if e.kind == "trigger"]
    by_reason: dict[str, float] = {}
    for e in events:
        if e.kind == "throttle":
            for kind, secs in (e.detail.get("seconds") or {}).items():
                by_reason[kind] = round(by_reason.get(kind, 0.0) + float(secs), 3)
    stamped = [e.at for e in events if e.at is not None]
    wall = (max(stamped) - min(stamped)).total_seconds() if len(stamped) > 1 else 0.0
    copy_seconds = max(0.0, min(copy_span_seconds or 0.0, wall) if wall else copy_span_seconds or 0.0)
    rows = sum(p.rows_written for p in progress)
    keys = sum(p.keys_scanned for p in progress)
    attempts = _attempts(events)
    partitions = []
    for p in progress:
        a = attempts.get(p.partition_no, {"tries": 0, "crashes": 0, "failed": 0, "resumes": 0})
        partitions.append({**p.to_dict(), **a})
    validations = [e.detail for e in events if e.kind == "validation"]
    samples = [e.detail for e in events if e.kind == "sample"]
    if len(samples) > MAX_SAMPLES:  # a long run: every n-th sample, the last one kept
        step = -(-len(samples) // MAX_SAMPLES)
        samples = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return {
        "samples": samples,
        "run_id": config.get("run_id"),
        "engine": engine,
        "mode": config.get("mode"),
        "source_table": config.get("source_table"),
        "target_table": config.get("target_table"),
        "profile": config.get("profile"),
        "state": ending.get("state"),
        "reason": ending.get("reason"),
        "success": bool(ending.get("success")),
        "decision": last("decision"),
        "rows_written": rows,
        "keys_scanned": keys,
        "batches": sum(p.batches for p in progress),
        "yields": sum(p.retries for p in progress),
        "data_errors": sum(p.data_errors for p in progress),
        "partitions": len(progress),
        "tries": sum(a["tries"] for a in attempts.values()),
        "crashes": sum(a["crashes"] for a in attempts.values()),
        "failed_attempts": sum(a["failed"] for a in attempts.values()),
        "resumes": sum(a["resumes"] for a in attempts.values()),
        "copy_seconds": round(copy_seconds, 3),
        "backfill_seconds": round(copy_seconds, 3),  # former name of copy_seconds, kept for readers
        "partition_seconds": round(sum(p.seconds for p in progress), 3),
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / copy_seconds, 1) if rows and copy_seconds > 0 else None,
        "throttled_seconds": round(sum(p.throttled_seconds for p in progress), 3),
        "throttled_by_reason": by_reason,
        "validation_seconds": round(sum(float(v.get("seconds") or 0) for v in validations), 3),
        "max_replica_lag_seconds": max(
            (float(e.detail["max_replica_lag_seconds"]) for e in events
             if e.kind == "attempt_end" and e.detail.get("max_replica_lag_seconds") is not None), default=None),
        "data_error_keys": [k for e in events if e.kind == "data_error" for k in e.detail.get("keys", [])],
        "dual_write": {"detail": dual[-1].reason, **dual[-1].detail} if dual else None,
        # dual_write trigger: installed, and still installed unless a remove came last (a halted run)
        "triggers": {"names": trig[-1].get("triggers"), "installed": trig[-1].get("action") == "install",
                     "remove_with": next((t.get("remove_with") for t in reversed(trig) if t.get("remove_with")), [])}
        if trig else None,
        "validation": validations[-1] if validations else None,
        "validations": len(validations),
        "repair": last("repair"),
        "approvals": [e.detail for e in events if e.kind == "approval"],
        "legacy_kept": next((e.reason for e in reversed(events) if e.kind == "legacy_kept"), None),
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
        "takeover": next(({"previous_run": e.detail.get("previous_run"), "previous_state": e.detail.get("previous_state"),
                           "adopted_partitions": len(e.detail.get("adopted_partitions") or [])}
                          for e in events if e.kind == "lock" and e.detail.get("mode") == "takeover"), None),
        "partition_detail": partitions,
        "config": config,
    }


def _secs(x: Any) -> str:
    return f"{float(x or 0):,.1f} s"


def to_markdown(r: dict[str, Any]) -> str:
    """A short human summary of a report dict (words and tables, no Python dicts)."""
    v = r.get("validation")
    dec = r.get("decision") or {}
    rate = r.get("rows_per_second")
    by_reason = r.get("throttled_by_reason") or {}
    lines = [
        f"# Backfill report: {r.get('source_table')} -> {r.get('target_table')}",
        "",
        f"- run: `{r.get('run_id')}` on {r.get('engine')}, mode {r.get('mode')}, profile {r.get('profile')}",
        f"- ended: **{r.get('state')}** ({r.get('reason') or 'no reason recorded'})"
        + ("" if r.get("success") else " - the Airflow run is marked failed"),
        f"- decision: {(dec.get('decision') or {}).get('branch', 'none')} "
        f"({'; '.join((dec.get('decision') or {}).get('reasons', [])) or 'no decision taken'})",
        f"- rows written: {r.get('rows_written') or 0:,} of {r.get('keys_scanned') or 0:,} keys scanned, "
        f"in {r.get('batches') or 0:,} batches over {r.get('partitions')} partition(s); "
        f"transient yields (retried, not errors): {r.get('yields')}; data errors: {r.get('data_errors')}",
        f"- partition attempts: {r.get('tries', 0)}; crashed (worker died, no end recorded): {r.get('crashes', 0)}; "
        f"failed: {r.get('failed_attempts', 0)}; resumed from a checkpoint: {r.get('resumes', 0)}",
        f"- copy wall time: {_secs(r.get('copy_seconds', r.get('backfill_seconds')))} "
        f"(first partition start to last partition end) of {_secs(r.get('wall_seconds'))} for the whole run; "
        + (f"effective rate {rate:,.1f} rows/s" if rate else "effective rate: n/a (no rows written)"),
        f"- throttled: {_secs(r.get('throttled_seconds'))} summed over partitions"
        + (" (" + ", ".join(f"{THROTTLE_WORDS.get(k, k)} {_secs(x)}" for k, x in sorted(by_reason.items())) + ")"
           if by_reason else ""),
    ]
    if r.get("takeover"):
        t = r["takeover"]
        lines.append(f"- took over run `{t.get('previous_run')}` (stopped in {t.get('previous_state')}, its lease "
                     f"expired or released) and resumed its {t.get('adopted_partitions')} partition checkpoint(s)")
    if r.get("dual_write"):
        lines.append(f"- dual-write: {r['dual_write'].get('detail')}")
    if (t := r.get("triggers")) and t.get("installed"):
        lines.append(f"- dual-write triggers {t.get('names')} are STILL INSTALLED on the source: they keep the target in "
                     "step for the run that takes over. To remove them by hand: `" + "; ".join(t.get("remove_with") or [])
                     + "`")
    elif t:
        lines.append(f"- dual-write triggers {t.get('names')} removed")
    if v and v.get("mismatched") is not None:
        lines.append(
            f"- validation: {'MATCH' if v.get('mismatched') == 0 else 'MISMATCH'}, {v.get('source_rows')} source rows, "
            f"{v.get('target_rows')} target rows, missing {v.get('missing')}, different {v.get('different')}, "
            f"extra {v.get('extra')}" + (" (after repair)" if v.get("after_repair") else "")
            + (f", in {_secs(v.get('seconds'))}" if v.get("seconds") else "")
        )
        if v.get("chunks_checked"):
            lines.append(f"  - {v.get('mode', 'full')} validation read on the {v.get('source', 'primary')} in "
                         f"{v['chunks_checked']:,} chunk(s) (+{v.get('subchunks_checked', 0):,} bisected), the largest "
                         f"{v.get('chunk_rows_max', 0):,} rows; {v.get('cleared_by_recheck', 0):,} difference(s) "
                         "cleared by the re-check")
        if v.get("sampling"):
            sm = v["sampling"]
            lines.append(f"  - sample: {sm.get('sample_rows'):,} rows for {sm.get('confidence', 0) * 100:g} % confidence "
                         f"of seeing a {sm.get('detect_pct'):g} % mismatch rate; {sm.get('method')}")
        if v.get("sample_keys"):
            lines.append("- differing keys (up to 20 of each kind): " + "; ".join(
                f"{kind} {', '.join(str(k) for k in keys)}" for kind, keys in v["sample_keys"].items() if keys))
    else:
        lines.append("- validation: not run")
    for item in (v or {}).get("checklist") or []:
        detail = f": {item.get('detail')}" if item.get("detail") else ""
        lines.append(f"  - [{'x' if item.get('status') in ('pass', 'ok', 'passed') else ' '}] "
                     f"{item.get('name')} - {item.get('status')}{detail}")
    if r.get("repair"):
        lines.append(f"- repaired: {r['repair'].get('repaired')}, keys that could not be written: "
                     f"{r['repair'].get('failed_keys') or 'none'}")
    for a in r.get("approvals") or []:
        lines.append(f"- approval ({a.get('what')}): {a.get('option')} by {a.get('user')}")
    if (r.get("config") or {}).get("allow_unwatched_ramp"):
        lines.append("- override: allow_unwatched_ramp (the read ramp may run with no error signal)")
    if r.get("legacy_kept"):
        lines.append(f"- legacy schema kept: {r['legacy_kept']}")
    lines.append("- states: " + " -> ".join([str(t["to"]) for t in r.get("transitions") or []] or ["(none)"]))
    for dstep in r.get("destructive") or []:
        lines.append(f"- destructive [{dstep['step']}] at {dstep['at']}: `{dstep['sql']}`")
    for name, w in (r.get("windows") or {}).items():
        lines.append(f"- window {name}: {w.get('start', '?')} -> {w.get('end', 'open')}")
    for f in r.get("failures") or []:
        lines.append(f"- failure: {f}")
    reh = r.get("rehearsal")
    if reh:
        lines += ["", "## Staging rehearsal", ""]
        restore = reh.get("restore") or {}
        lines.append(f"- staging restored: {restore.get('summary') or restore.get('error') or 'not recorded'}")
        cmp_ = reh.get("comparison") or {}
        if cmp_.get("figures"):
            lines.append(f"- compared with {len(cmp_.get('previous_runs') or [])} previous rehearsal(s) (median); "
                         f"regression threshold {cmp_.get('regression_pct')} %: "
                         + (f"**REGRESSION** in {', '.join(cmp_['regressions'])}" if cmp_.get("regressions")
                            else "no regression"))
            for name, f in cmp_["figures"].items():
                change = "n/a" if f.get("change_pct") is None else f"{f['change_pct']:+.1f} %"
                lines.append(f"  - {name}: {f['now']} vs {f['baseline']} ({change})"
                             + (" REGRESSION" if f.get("regression") else ""))
        else:
            lines.append("- no previous rehearsal to compare with")
    parts = r.get("partition_detail") or []
    if parts:
        lines += ["", "| partition | keys | rows written | keys scanned | batches | tries | crashes | resumes "
                      "| yields | throttled | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in parts:
            lines.append(
                f"| p{p.get('partition_no')} | {p.get('lo')}..{p.get('hi')} | {p.get('rows_written', 0):,} "
                f"| {p.get('keys_scanned', 0):,} | {p.get('batches', 0):,} | {p.get('tries', 0)} "
                f"| {p.get('crashes', 0)} | {p.get('resumes', 0)} | {p.get('retries', 0)} "
                f"| {_secs(p.get('throttled_seconds'))} | {p.get('status')} |"
            )
    return "\n".join(lines) + "\n"


def summary(r: dict[str, Any]) -> str:
    """One line for the DAG run's note and the task log: state, reason, rows, rate, validation."""
    v = r.get("validation")
    if v and v.get("mismatched") is not None:
        check = "validation exact" if v.get("mismatched") == 0 else f"validation {v.get('mismatched')} differing row(s)"
    else:
        check = "validation not run"
    rate = r.get("rows_per_second")
    crashes = f", {r['crashes']} crashed attempt(s) resumed" if r.get("crashes") else ""
    return (f"{r.get('state')}: {r.get('reason') or 'no reason recorded'}; {r.get('rows_written') or 0:,} rows "
            f"written" + (f" at {rate:,.1f} rows/s" if rate else "") + f"{crashes}; {check}")


# ---------------------------------------------------------------------- rehearsal comparison
#: Figures a staging rehearsal is compared on, and whether more is better.
COMPARED = {"rows_per_second": True, "throttled_seconds": False, "max_replica_lag_seconds": False,
            "validation_seconds": False}


def compare(current: dict[str, Any], previous: list[dict[str, Any]], regression_pct: float) -> dict[str, Any]:
    """Compare a rehearsal's report with earlier rehearsals' (newest first).

    The baseline of each figure is the median over the previous reports that have it; a figure
    worse than its baseline by more than ``regression_pct`` percent is a regression (lower
    throughput; more throttled, lag or validation time). A baseline of 0 cannot regress by a
    percentage and is skipped.

    :returns: ``{"previous_runs", "regression_pct", "figures": {name: {"now", "baseline",
        "change_pct", "regression"}}, "regressions": [names]}``.
    """
    import statistics

    figures: dict[str, dict[str, Any]] = {}
    for name, more_is_better in COMPARED.items():
        now = current.get(name)
        past = [float(p[name]) for p in previous if p.get(name) is not None]
        if now is None or not past:
            continue
        base = statistics.median(past)
        change = (float(now) - base) / base * 100 if base else None
        worse = change is not None and (-change if more_is_better else change) > regression_pct
        figures[name] = {"now": now, "baseline": round(base, 3),
                         "change_pct": round(change, 1) if change is not None else None, "regression": worse}
    return {"previous_runs": [p.get("run_id") for p in previous], "regression_pct": regression_pct,
            "figures": figures, "regressions": [n for n, f in figures.items() if f["regression"]]}


# ---------------------------------------------------------------------- the reports table
def create_table(db: Database) -> str:
    """Create ``zdt_backfill_reports`` in the target database if absent (bounded lock wait, retried).

    Columns: ``id``, ``run_id``, ``source_table``, ``target_table``, ``state``, ``created_at``,
    ``report_json``, ``report_md``. Every worker and anyone with the connection can read it.
    :returns: the quoted table name.
    """
    d = db.dialect
    table = d.table(REPORTS, db.schema)
    db.run_ddl([(d.control_table_sql(REPORTS, db.schema), ())], tag="zdt_backfill:report")
    with db.session() as conn:
        cols = {r[0] for r in db.query(conn, d.columns_sql(), (db.schema, REPORTS))}
        conn.rollback()
    if "report_html" not in cols:  # a table made by an earlier version of this package
        db.run_ddl([(d.add_column_sql(REPORTS, "report_html", d.added_columns(REPORTS)["report_html"], db.schema), ())],
                   tag="zdt_backfill:report")
    return table


def store(db: Database, report: dict[str, Any]) -> str:
    """Insert the report (JSON, Markdown and HTML with its charts) as a new row of ``zdt_backfill_reports``.

    A report written again for the same run (a cleared report task) is a new row; readers take
    the newest. :returns: where it is, e.g. ``zdt_backfill_reports (run_id = '...', id 3)`` .
    """
    table = create_table(db)
    with db.session() as conn:
        db.execute(
            conn,
            f"INSERT INTO {table} (run_id, source_table, target_table, state, created_at, report_json, report_md,"
            f" report_html) VALUES (%s, %s, %s, %s, {db.dialect.now}, %s, %s, %s)",
            (str(report.get("run_id")), report.get("source_table"), report.get("target_table"), report.get("state"),
             json.dumps(report, default=str), to_markdown(report), to_html(report)),
        )
        rows = db.query(conn, f"SELECT max(id) FROM {table} WHERE run_id = %s", (str(report.get("run_id")),))
        conn.commit()
    return f"{REPORTS} (run_id = {report.get('run_id')!r}, id {rows[0][0]})"


def load(db: Database, run_id: str) -> dict[str, Any] | None:
    """The newest stored report of ``run_id``, or ``None``."""
    return next(iter(history(db, run_id=run_id, limit=1)), None)


def history(db: Database, target_table: str | None = None, run_id: str | None = None,
            limit: int = 10) -> list[dict[str, Any]]:
    """Stored reports, newest first, of one run or of every run on ``target_table``."""
    d = db.dialect
    table = d.table(REPORTS, db.schema)
    where, params = ("run_id = %s", (run_id,)) if run_id is not None else ("target_table = %s", (target_table,))
    with db.session() as conn:
        if not db.query(conn, d.columns_sql(), (db.schema, REPORTS)):
            return []
        rows = db.query(conn, f"SELECT report_json FROM {table} WHERE {where} ORDER BY id DESC LIMIT %s",
                        (*params, max(0, int(limit))))
        conn.rollback()
    return [json.loads(r[0]) for r in rows]


def write(report: dict[str, Any], reports_dir: Path) -> Path:
    """Write ``report.json``, ``report.md`` and ``report.html`` under ``reports_dir/<run_id>/``; return that folder.

    The run id is made filesystem-safe (``:`` and ``+`` from timestamps become ``_``).
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(report.get("run_id") or "run"))
    out = Path(reports_dir) / safe
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(to_markdown(report))
    (out / "report.html").write_text(to_html(report))
    return out


def to_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page with its charts (:mod:`zdt_backfill.report.html`)."""
    from .html import to_html as page

    c = report.get("config") or {}
    title = f"Backfill report {report.get('run_id')}"
    try:
        return page(to_markdown(report), report.get("samples") or [], c.get("max_replica_lag_seconds"),
                    c.get("halt_lag_seconds"), title)
    except Exception as exc:  # the charts never cost the report itself
        log.warning("report charts not drawn: %s", exc)
        return page(to_markdown(report), [], title=title)
