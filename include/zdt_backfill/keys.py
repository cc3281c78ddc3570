"""The run's key: the column keyset chunks walk, found in the catalog when the conf leaves it out.

A conf without ``key`` means "the source table's primary key" (pgroll's, gh-ost's and Spirit's
default: they all chunk on the primary key). Once a run's pre-flight resolved it, the run's row
in ``zdt_backfill_runs`` keeps it, and its later tasks read it there (the legacy table may be
renamed or dropped by then); before that it is read from the database's catalog, by each
task's :class:`~zdt_backfill.lifecycle.runner.Runner` (and by the dry run and ``zdt-backfill
plan``) before its first step, so every task of a run reads the same truth and nothing is
carried between tasks. Pre-flight then checks the key it got like a named one (integer, NOT
NULL, a unique single-column index) and refuses, naming the primary key's columns, a table
whose primary key is missing or is not one column: keys of other shapes are issue 19's work.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import RunConfig
from .db import Database


def primary_key(db: Database, conn: Any, table: str) -> list[str]:
    """The primary key's columns of ``table`` (in ``db``'s schema), in the index's order.

    :returns: column names; empty when the table has no primary key or does not exist.
    """
    return [str(r[0]) for r in db.query(conn, db.dialect.primary_key_sql(), (db.schema, table))]


def resolve_key(config: RunConfig, db: Database) -> RunConfig:
    """``config`` with its key: as named, or the source's primary key when the conf left it out.

    One catalog read (a short, read-only session) when ``key`` is unset; none otherwise.

    :returns: ``config`` itself when it names its key, or when the primary key is missing or
        not one column (``key`` stays ``None``, and pre-flight's ``key`` check refuses, naming
        what it found: :func:`key_problem`); else a copy whose ``key`` is the primary key's column.
    """
    if config.key is not None:
        return config
    recorded = _recorded_key(config, db)
    if recorded:
        return dataclasses.replace(config, key=recorded)
    with db.session() as conn:
        pk = primary_key(db, conn, config.source_table)
    return dataclasses.replace(config, key=pk[0]) if len(pk) == 1 else config


def _recorded_key(config: RunConfig, db: Database) -> str | None:
    """The key this run resolved at its pre-flight, from its run row (``zdt_backfill_runs.config``):
    after a legacy rename or drop the source's catalog has no primary key left to read, and a run's
    later tasks must keep the key its copy was made by."""
    from .state.runstate import RunHandle

    row = RunHandle(db, config, "keys").row()
    if row is None or row.run_id != config.run_id or not isinstance(row.config, dict):
        return None
    key = row.config.get("key")
    return key if isinstance(key, str) and key else None


def key_problem(db: Database, conn: Any, table: str) -> str:
    """Why a conf without ``key`` has none: ``table`` has no primary key, or a composite one.

    :returns: one sentence naming the primary key's columns and what to do.
    """
    pk = primary_key(db, conn, table)
    if not pk:
        return (f"no key given and {table} has no primary key: name a unique, NOT NULL integer column in key")
    return (f"no key given and the primary key of {table} is ({', '.join(pk)}): a composite key is not supported "
            "yet; name a unique, NOT NULL integer column in key")
