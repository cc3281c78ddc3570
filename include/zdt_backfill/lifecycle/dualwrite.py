"""Dual-write confirmation.

Before the backfill starts, the application (or a trigger) must already write both
schemas, or rows changed during the backfill would be lost. With
``dual_write: "check"`` this module verifies it from the data: every source row
changed in the last ``dual_write_window_minutes`` (by ``dual_write_updated_column``)
must already be present in the target with the expected values. With
``dual_write: "assumed"`` nothing is checked and the report records the assumption. With
``dual_write: "trigger"`` the run's own triggers (:mod:`.triggers`) write the target, and this
step checks in the catalog that every one of them is on the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..db import Database
from ..dialects import ColumnType
from ..errors import PreflightError
from ..verify.checksum import target_casts


@dataclass
class DualWriteResult:
    mode: str
    recent_rows: int = 0
    mismatched_rows: int = 0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def dual_write_check_sql(config: RunConfig, db: Database, types: dict[str, ColumnType] | None = None) -> str:
    """``(recent_rows, mismatched_rows)`` over source rows changed in the window (params
    ``(window_seconds,)``): :meth:`~zdt_backfill.dialects.compare.Compare.dual_write_check_sql`
    with the run's tables, key, timestamp column and typed projection."""
    c = config
    return db.dialect.dual_write_check_sql(c.source_table, c.target_table, c.key, c.dual_write_updated_column,
                                           c.columns, db.schema, types)


def confirm_dual_write(config: RunConfig, db: Database) -> DualWriteResult:
    """Confirm the application writes both schemas (or record that it is assumed).

    :returns: a :class:`DualWriteResult` (rows checked, rows that failed).
    :raises PreflightError: no source row changed within the window (nothing to prove
        it with), or some recent rows are missing/different in the target; ``trigger``: the
        run's triggers are not all on the source (read from the catalog).
    """
    c = config
    if c.dual_write == "assumed":
        return DualWriteResult("assumed", detail="dual-write assumed by conf (dual_write=assumed); not verified")
    if c.dual_write == "trigger":  # read from the catalog, right before the copy relies on them
        from .triggers import installed, trigger_names

        names = trigger_names(c, db)
        present = installed(c, db)
        if present != names:
            raise PreflightError(f"dual-write triggers missing on {c.source_table}: expected {names}, found "
                                 f"{present}; clear pre-flight to install them again")
        return DualWriteResult("trigger", detail=f"dual-write by the triggers {present} on {c.source_table}")
    window = c.dual_write_window_minutes * 60
    with db.session() as conn:
        types = target_casts(c, db, conn)
        recent, bad = db.query(conn, dual_write_check_sql(c, db, types), (window,))[0]
        recent, bad = int(recent), int(bad)
        conn.rollback()
    if recent == 0:
        raise PreflightError(
            f"cannot confirm dual-write: no source row has {c.dual_write_updated_column} within the last "
            f"{c.dual_write_window_minutes:g} minutes. Widen dual_write_window_minutes, or set "
            'dual_write: "assumed" if the application is known to write both schemas'
        )
    if bad:
        raise PreflightError(
            f"dual-write is not in place: {bad} of {recent} source rows changed in the last "
            f"{c.dual_write_window_minutes:g} minutes are missing or different in {c.target_table}. "
            "Switch the application to write both schemas before the backfill"
        )
    return DualWriteResult("check", recent, bad, f"{recent} recently changed rows present and equal in target")
