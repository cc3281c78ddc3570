"""Parity classification without a server: which differences are fatal and which warn."""

from __future__ import annotations

import copy

import pytest

from zdt_backfill.dialects import dialect_for
from zdt_backfill.errors import PreflightError
from zdt_backfill.verify import parity
from zdt_backfill.verify.parity import Snapshot, diff_snapshots


def pg(**settings):
    base = {"lock_timeout": "0", "statement_timeout": "0", "shared_buffers": "128MB", "work_mem": "4MB",
            "wal_level": "replica", "max_connections": "100", "default_transaction_isolation": "read committed"}
    tables = {"t": {"columns": [("id", "bigint", False), ("v", "text", True)],
                    "indexes": {"t_pkey": "UNIQUE btree (id)", "t_v": "btree (v)"}}}
    return Snapshot("postgres", "PostgreSQL", "15.4", {**base, **settings}, tables)


def my(flavour="MariaDB", version="10.11.6", **settings):
    base = {"innodb_lock_wait_timeout": "50", "lock_wait_timeout": "86400", "innodb_buffer_pool_size": "134217728",
            "binlog_format": "ROW", "transaction_isolation": "REPEATABLE-READ", "max_connections": "151",
            "sql_mode": "STRICT_TRANS_TABLES"}
    return Snapshot("mysql", flavour, version, {**base, **settings}, {})


def one(a, b):
    (d,) = diff_snapshots(a, b)
    return d


def test_same_is_empty():
    assert diff_snapshots(pg(), pg()) == [] and diff_snapshots(my(), my()) == []


@pytest.mark.parametrize("name, value, severity", [
    ("lock_timeout", "5s", "warn"), ("statement_timeout", "1min", "warn"), ("shared_buffers", "8GB", "warn"),
    ("work_mem", "64MB", "warn"), ("max_connections", "500", "warn"), ("wal_level", "logical", "fatal"),
    ("default_transaction_isolation", "serializable", "fatal"),
])
def test_pg_settings(name, value, severity):
    d = one(pg(), pg(**{name: value}))
    assert (d.kind, d.name, d.production, d.severity) == ("setting", name, value, severity)


@pytest.mark.parametrize("name, value, severity", [
    ("innodb_lock_wait_timeout", "7", "warn"), ("lock_wait_timeout", "5", "warn"),
    ("innodb_buffer_pool_size", "1", "warn"), ("max_connections", "1000", "warn"),
    ("binlog_format", "MIXED", "fatal"), ("transaction_isolation", "READ-COMMITTED", "fatal"),
    ("sql_mode", "", "fatal"),
])
def test_mysql_settings(name, value, severity):
    d = one(my(), my(**{name: value}))
    assert (d.name, d.staging, d.production, d.severity) == (name, my().settings[name], value, severity)


def test_versions_and_flavours():
    assert one(pg(), Snapshot("postgres", "PostgreSQL", "15.6", pg().settings, pg().tables)).severity == "warn"
    d = one(pg(), Snapshot("postgres", "PostgreSQL", "16.1", pg().settings, pg().tables))
    assert (d.kind, d.staging, d.production, d.severity) == ("version", "PostgreSQL 15.4", "PostgreSQL 16.1", "fatal")
    assert one(my(version="10.11.6"), my(version="10.11.8")).severity == "warn"
    assert one(my(version="10.6.16"), my(version="10.11.6")).severity == "fatal"
    assert one(my(flavour="MySQL", version="8.0.36"), my(flavour="MySQL", version="8.4.0")).severity == "fatal"
    d = one(my(), my(flavour="MySQL", version="10.11.6"))
    assert (d.kind, d.severity) == ("flavour", "fatal")
    assert one(pg(), my()).kind == "flavour"  # settings of different engines are not compared


def test_mysql_version_parsing():
    my, pg = dialect_for("mysql"), dialect_for("postgres")
    assert my.parse_version(("10.11.6-MariaDB-log",)) == ("MariaDB", "10.11.6")
    assert my.parse_version(("5.5.5-10.11.6-MariaDB",)) == ("MariaDB", "10.11.6")
    assert my.parse_version(("8.0.36",)) == ("MySQL", "8.0.36")
    assert pg.parse_version(("15.4 (Debian 15.4-1)", "150004")) == ("PostgreSQL", "15.4")


def test_schema_differences():
    prod = pg()
    t = copy.deepcopy(prod.tables)
    t["t"]["columns"] = [("v", "character varying(10)", False), ("id", "bigint", False), ("w", "int", True)]
    del t["t"]["indexes"]["t_v"]
    t["t"]["indexes"]["t_pkey"] = "btree (id)"
    got = {(d.kind, d.name): d for d in diff_snapshots(pg(), Snapshot("postgres", "PostgreSQL", "15.4",
                                                                        prod.settings, t))}
    assert got[("column_type", "t.v")].production == "character varying(10)"
    assert (got[("column_nullable", "t.v")].staging, got[("column_nullable", "t.v")].production) == ("NULL", "NOT NULL")
    assert (got[("column", "t.w")].staging, got[("column", "t.w")].production) == (None, "int")
    assert got[("column_order", "t")].severity == "warn"
    assert (got[("index", "t.t_v")].staging, got[("index", "t.t_v")].production) == ("btree (v)", None)
    assert got[("index", "t.t_pkey")].severity == "fatal"
    assert {d.severity for k, d in got.items() if k[0] != "column_order"} == {"fatal"}


def test_missing_table_and_report():
    gone = Snapshot("postgres", "PostgreSQL", "15.4", pg().settings, {"t": None})
    diffs = diff_snapshots(pg(), gone)
    assert [(d.kind, d.staging, d.production, d.severity) for d in diffs] == [("table", "present", None, "fatal")]
    assert diff_snapshots(gone, gone) == []
    report = parity.ParityReport("s", "p", ["t"], diffs + [one(pg(), pg(work_mem="1GB"))])
    assert not report.ok and len(report.fatal) == 1 and len(report.warnings) == 1
    assert report.to_dict()["differences"][1] == {"kind": "setting", "name": "work_mem", "staging": "4MB",
                                                  "production": "1GB", "severity": "warn"}
    with pytest.raises(PreflightError, match=r"1 fatal difference.*table t") as err:
        report.raise_if_fatal()
    assert "work_mem" not in str(err.value)
    parity.ParityReport("s", "p", ["t"], [one(pg(), pg(work_mem="1GB"))]).raise_if_fatal()


def test_describe_index():
    assert parity.describe_index(["a", "b"], True, "x > 0", "btree") == "UNIQUE btree (a, b) WHERE x > 0"
    assert parity.describe_index(["a"], False, None, "BTREE", valid=False) == "btree (a) INVALID"
