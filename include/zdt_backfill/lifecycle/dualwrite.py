"""Dual-write confirmation.

Before the backfill starts, the application (or a trigger) must already write both
schemas, or rows changed during the backfill would be lost. With
``dual_write: "check"`` this module verifies it from the data: every source row
changed in the last ``dual_write_window_minutes`` (by ``dual_write_updated_column``)
must already be present in the target with the expected values. With
``dual_write: "assumed"`` nothing is checked and the report records the assumption.
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
    """``(recent_rows, mismatched_rows)`` over source rows changed in the window.

    Params: ``(window_seconds,)``. A recent row mismatches when the target has no row
    with its key (copy mode) or a target column differs from its expected value: the
    typed projection (the expression cast to the column's type, ``types`` from
    :func:`~zdt_backfill.verify.checksum.target_casts`), compared on the checksum's encodings, so a correctly
    dual-written ``balance * 100`` in a ``DECIMAL(16,0)`` column is equal.
    """
    d, c = db.dialect, config
    k = d.quote(c.key)
    uc = d.quote(c.dual_write_updated_column)
    src = d.table(c.source_table, db.schema)
    since = "now() - make_interval(secs => %s)" if d.name == "postgres" else "now(6) - INTERVAL %s SECOND"
    names = [d.quote(f"zdt_c{i}") for i in range(len(c.columns))]
    types = types or {}
    proj = ", ".join(f"{e} AS {n}" for e, n in zip(d.typed_projection(c.columns, types), names, strict=True))
    equal = " AND ".join(
        d.null_safe_equal(f"t.{d.quote(col)}", f"s.{n}", types.get(col)) for col, n in zip(c.columns, names, strict=True)
    )
    tgt = d.table(c.target_table, db.schema)
    return (
        f"SELECT count(*), coalesce(sum(CASE WHEN t.{k} IS NULL OR NOT ({equal}) THEN 1 ELSE 0 END), 0)"
        f" FROM (SELECT {k}, {proj} FROM {src} WHERE {uc} >= {since}) AS s"
        f" LEFT JOIN {tgt} AS t ON t.{k} = s.{k}"
    )


def confirm_dual_write(config: RunConfig, db: Database) -> DualWriteResult:
    """Confirm the application writes both schemas (or record that it is assumed).

    :returns: a :class:`DualWriteResult` (rows checked, rows that failed).
    :raises PreflightError: no source row changed within the window (nothing to prove
        it with), or some recent rows are missing/different in the target.
    """
    c = config
    if c.dual_write == "assumed":
        return DualWriteResult("assumed", detail="dual-write assumed by conf (dual_write=assumed); not verified")
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
