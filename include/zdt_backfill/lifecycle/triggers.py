"""``dual_write: trigger``: the database keeps the target in step while the application writes
only the legacy schema (pt-online-schema-change's and pgroll's triggers, the "up" direction).

Lifecycle of the triggers (each step recorded as a ``trigger`` event with its exact DDL):

- **install**: pre-flight, after every check passed and the run's lock is held, before any
  batch. A refused pre-flight installs nothing. The DDL runs through
  :meth:`~zdt_backfill.db.Database.run_ddl`: ``CREATE TRIGGER`` takes a SHARE ROW EXCLUSIVE
  lock on PostgreSQL and a metadata lock on MySQL, and every writer queues behind a waiting one,
  so each attempt waits at most ``lock_timeout_seconds`` and is retried. Once it commits, every
  later write to the legacy table fires it; a transaction that wrote before holds the lock the
  DDL waits for, so its rows are committed before the copy reads them.
- **adopt**: the triggers are named after the run's table (:func:`trigger_base`), not its run
  id: a run that takes over a dead one re-installs the same names (idempotent), never a second set.
- **keep**: a halted run keeps its triggers, since the target is still being kept in step;
  the report lists them, and the README says how to remove them by hand.
- **remove**: the write flip (the new schema is authoritative from then on: a late legacy write
  mirrored into it would overwrite a newer one, and fill mode's trigger would recompute the new
  columns the application now writes); contract's legacy action (before the legacy table or columns are renamed or
  dropped: a trigger must never outlive a table it writes into, nor read a column that is gone)
  and its finish; rollback before it empties the target (fill mode: before it NULLs the new
  columns, which the ``BEFORE UPDATE`` trigger would fill again); the staging rehearsal's restore
  before it truncates.

Copy mode's triggers are ``AFTER`` triggers on the legacy table writing the target; fill mode's
is pgroll's "up" trigger, ``BEFORE INSERT OR UPDATE``, setting the new columns in the same row
(:mod:`zdt_backfill.dialects.triggers`).

Why the copy stays exact with the triggers firing (the README's dual-write section says it at
length): a batch reads its chunk under a shared row lock, so an application update or delete of
a row the batch holds waits for the batch's commit and then fires its trigger, which overwrites
(or deletes) the target row the batch wrote; a row the application changed before the batch read
it is read in its new version, and the batch's insert-if-absent leaves the trigger's row alone.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from ..config import RunConfig
from ..db import Database
from ..errors import PreflightError
from ..state.runstate import RunHandle
from ..verify.checksum import target_casts

log = logging.getLogger(__name__)


def trigger_base(config: RunConfig) -> str:
    """The name the run's triggers derive theirs from: ``zdt_up_<source>_<hash>``, the hash of both
    tables, at most 50 characters, a plain identifier. Not of the schema: a trigger lives in its
    table's schema, and a conf naming it and one leaving it to the connection must find one set."""
    digest = hashlib.sha1(f"{config.source_table}>{config.target_table}".encode()).hexdigest()
    return f"zdt_up_{config.source_table[:30]}_{digest[:8]}"


def trigger_names(config: RunConfig, db: Database, fill: bool | None = None) -> list[str]:
    """The names of the run's triggers on this engine, sorted (fill mode's are ``BEFORE`` triggers);
    ``fill`` overrides the conf's mode."""
    return sorted(db.dialect.trigger_names(trigger_base(config), config.mode == "fill" if fill is None else fill))


def installed(config: RunConfig, db: Database, any_mode: bool = False) -> list[str]:
    """The run's triggers on the source now, read from the catalog (names; empty when none).

    :param any_mode: the names of either mode (a run whose conf changed since they were installed)."""
    names = {n for fill in ((True, False) if any_mode else (None,)) for n in trigger_names(config, db, fill)}
    with db.session() as conn:
        rows = db.query(conn, db.dialect.triggers_on_sql(), (db.schema, config.source_table))
    return sorted(str(r[0]) for r in rows if str(r[0]) in names)


def install(config: RunConfig, db: Database, handle: RunHandle) -> dict[str, Any]:
    """Install (or adopt) the up triggers on the source, under the run's fence.

    :returns: ``{"triggers": names, "statements": the DDL run}`` (no statements: all adopted).
    :raises PreflightError: the trigger's statement does not resolve where it will run (PostgreSQL:
        under the function's ``search_path``); nothing was installed (the run halts).
    :raises Exception: the last lock-wait timeout after the retries (nothing half-installed on
        PostgreSQL; on MySQL a retry completes the set), or a permanent error such as a missing
        ``TRIGGER`` privilege (the run halts; nothing else was written).
    """
    c, d, base, fill = config, db.dialect, trigger_base(config), config.mode == "fill"
    with db.session() as conn:
        schema = db.resolved_schema(conn)
        existing = [tuple(r) for r in db.query(conn, d.triggers_on_sql(), (db.schema, c.source_table))]
        table_columns = [str(r[0]) for r in db.query(conn, d.columns_sql(), (db.schema, c.source_table))]
        types = target_casts(c, db, conn)  # the copy's (the fill's) typed projection, the same casts
        for sql in d.definer_session():  # the check's names resolved as inside the trigger function
            db.execute(conn, sql)
        check = d.check_trigger_sql(c.source_table, c.target_table, c.key, c.columns, schema, types, fill)
        if check:
            try:
                db.query(conn, check)
            except Exception as exc:
                conn.rollback()
                raise PreflightError(
                    f"the dual-write trigger's statement does not resolve inside a trigger function (search_path "
                    f"pg_catalog, pg_temp): {exc}. Qualify the function or type with its schema in columns; "
                    "nothing was installed") from None
            conn.rollback()
    if fill:
        statements = d.install_fill_sql(c.source_table, c.columns, schema, types, base, table_columns, existing)
    else:
        statements = d.install_up_sql(c.source_table, c.target_table, c.key, c.columns, schema, types, base, existing)
    names = d.trigger_names(base, fill)
    adopted = sorted(set(names) & {str(r[0]) for r in existing})
    handle.record("trigger", f"installing the dual-write triggers {names} on {c.source_table}"
                  + (f" (adopting {adopted})" if adopted else ""),
                  {"action": "install", "triggers": names, "adopted": adopted, "statements": statements,
                   "remove_with": d.drop_up_sql(c.source_table, schema, base, fill)})
    if statements:
        db.run_ddl([(s, ()) for s in statements], f"zdt_backfill:{c.run_id}:triggers",
                   lock_wait_s=c.lock_timeout_seconds, fence=handle.fencer(), log_fn=log.info)
    return {"triggers": names, "adopted": adopted, "statements": statements}


def remove(config: RunConfig, db: Database, handle: RunHandle, why: str) -> dict[str, Any]:
    """Remove the table's up triggers (a no-op when none is installed), under the run's fence.

    Read from the catalog whatever this conf's ``dual_write`` and ``mode`` say: a run that took over
    one installed with another conf must not leave them writing into a table it empties or drops.

    :param why: the step removing them, for the log and the event.
    :returns: ``{"removed": names that were present, "statements": the DDL run}``.
    """
    c = config
    present = installed(c, db, any_mode=True)
    if not present:
        return {"removed": [], "statements": []}
    with db.session() as conn:
        schema = db.resolved_schema(conn)
    # copy mode's names cover fill mode's (each DROP ... IF EXISTS)
    statements = db.dialect.drop_up_sql(c.source_table, schema, trigger_base(c), fill=False)
    handle.record("trigger", f"{why}: removing the dual-write triggers {present}",
                  {"action": "remove", "triggers": present, "statements": statements})
    db.run_ddl([(s, ()) for s in statements], f"zdt_backfill:{c.run_id}:triggers",
               lock_wait_s=c.lock_timeout_seconds, fence=handle.fencer(), log_fn=log.info)
    return {"removed": present, "statements": statements}
