"""Reading the optimizer's plan: ``EXPLAIN`` (never ``ANALYZE``: the statement is not executed)
of the real batch statement, in JSON, and what it says about the source table: an index range
scan on the key index (what pre-flight requires), a full scan (what the dry run flags), the
access in words and the optimizer's cost.

PostgreSQL: ``EXPLAIN (FORMAT JSON)``, plan nodes with ``Node Type``, ``Relation Name`` and
``Index Name``. MySQL/MariaDB: ``EXPLAIN FORMAT=JSON``, table accesses with ``table_name``,
``access_type`` and ``key``.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from .base import DialectBase

#: Plan node types that read through an index (PostgreSQL EXPLAIN JSON).
PG_INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})
#: MySQL access types that read a bounded part of an index.
MYSQL_RANGE_ACCESS = frozenset({"range", "ref", "eq_ref", "const"})


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside a JSON plan document, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


class Explain(DialectBase):
    """The shared part of the explain role."""

    def explain_session(self) -> list[str]:
        """Session statements run before :meth:`explain_sql` (in the EXPLAIN's own transaction,
        which rolls back); a statement the server does not know is skipped by the caller."""
        return []

    def explain_sql(self, statement: str) -> str:
        """``statement`` prefixed to return its plan as one JSON document (one row, one column)."""
        raise NotImplementedError

    def parse_plan(self, value: Any) -> Any:
        """The JSON document of an ``EXPLAIN`` row's value (text, bytes or already parsed)."""
        if isinstance(value, (bytes, bytearray)):
            value = value.decode()
        return json.loads(value) if isinstance(value, str) else value

    def index_range_scan(self, plan: Any, table: str, index: str) -> tuple[bool, str]:
        """Whether the plan reads ``table`` through ``index`` and never by a full scan, with the
        reason in words (pre-flight's ``explain`` check)."""
        raise NotImplementedError

    def full_scans(self, plan: Any, table: str) -> list[dict[str, Any]]:
        """The plan's full scans of ``table`` (PostgreSQL ``Seq Scan``, MySQL ``access_type: ALL``)."""
        raise NotImplementedError

    def access_summary(self, plan: Any, table: str) -> str:
        """One line naming how ``table`` is read in the plan."""
        raise NotImplementedError

    def plan_cost(self, plan: Any) -> float | None:
        """The optimizer's total cost of the plan; ``None`` when the server reports none."""
        raise NotImplementedError

    def without_index_hint(self, statement: str) -> str | None:
        """The statement without its index hint (what the optimizer would do on its own), or
        ``None`` when this engine's batches carry no hint."""
        return None


class PostgresExplain(Explain):
    """The Postgres part of the explain role."""

    def explain_sql(self, statement):
        return "EXPLAIN (FORMAT JSON) " + statement

    def _nodes(self, plan: Any, table: str) -> list[dict[str, Any]]:
        return [n for n in walk(plan) if "Node Type" in n and n.get("Relation Name") == table]

    def index_range_scan(self, plan, table, index):
        nodes = [n for n in walk(plan) if "Node Type" in n]
        seq = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == table]
        idx = [n for n in nodes if n["Node Type"] in PG_INDEX_SCANS and n.get("Index Name") == index]
        if seq or not idx:
            return False, f"plan reads {table} with a sequential scan, not index {index!r}: add an index on the key"
        return True, f"index range scan on {index} ({idx[0]['Node Type']})"

    def full_scans(self, plan, table):
        return [n for n in walk(plan) if n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == table]

    def access_summary(self, plan, table):
        nodes = self._nodes(plan, table)
        if not nodes:
            return f"no scan of {table} in the plan"
        return ", ".join(n["Node Type"] + (f" using {n['Index Name']}" if n.get("Index Name") else "") for n in nodes)

    def plan_cost(self, plan):
        try:
            doc = plan[0] if isinstance(plan, list) else plan
            return float(doc["Plan"]["Total Cost"])
        except (KeyError, IndexError, TypeError, ValueError):
            return None


#: Oracle MySQL's JSON plan format 2 (``explain_json_format_version=2``, the 9.x default): an
#: access node's ``index_access_type`` -> the ``access_type`` of format 1 (and of MariaDB).
MYSQL_V2_INDEX_ACCESS = {
    "index_range_scan": "range", "index_lookup": "ref", "single_row_index_lookup": "eq_ref",
    "full_index_scan": "index", "index_scan": "index",
}


def _v1_access(node: dict[str, Any]) -> dict[str, Any]:
    """An access node of either MySQL JSON plan format, in format 1's terms (``access_type``,
    ``key``). Format 2 nodes carry an ``operation``: ``access_type`` ``table`` is a full scan
    (``ALL``), ``index`` says how in ``index_access_type``, and the index is ``index_name``."""
    if "operation" not in node:
        return node
    kind = node.get("access_type")
    if kind == "table":
        kind = "ALL"
    elif kind == "index":
        kind = MYSQL_V2_INDEX_ACCESS.get(str(node.get("index_access_type")), "index")
    return {**node, "access_type": kind, "key": node.get("index_name")}


class MySQLExplain(Explain):
    """The MySQL part of the explain role (MySQL's and MariaDB's JSON plans)."""

    def explain_session(self):
        # Oracle MySQL 9's default JSON format 2 cannot explain a single-table UPDATE ("not
        # executable by iterator executor"): format 1, which MariaDB's resembles (8.3+; older
        # servers have only format 1 and refuse the variable, which the caller skips).
        return ["SET SESSION explain_json_format_version = 1"]

    def explain_sql(self, statement):
        return "EXPLAIN FORMAT=JSON " + statement

    def _accesses(self, plan: Any, table: str) -> list[dict[str, Any]]:
        return [_v1_access(n) for n in walk(plan) if n.get("table_name") == table and "access_type" in n]

    def index_range_scan(self, plan, table, index):
        nodes = self._accesses(plan, table)
        if not nodes:
            return False, f"EXPLAIN shows no access to {table}"
        r = nodes[0]
        ok = all(n.get("key") == index and n.get("access_type") in MYSQL_RANGE_ACCESS for n in nodes)
        return ok, f"access type={r.get('access_type')} key={r.get('key')} (want a range scan on {index})"

    def full_scans(self, plan, table):
        return [n for n in self._accesses(plan, table) if n.get("access_type") == "ALL"]

    def access_summary(self, plan, table):
        nodes = self._accesses(plan, table)
        if not nodes:
            return f"no access to {table} in the plan"
        return ", ".join(f"access_type={n.get('access_type')} key={n.get('key')}" for n in nodes)

    def plan_cost(self, plan):
        try:
            for n in walk(plan):
                if isinstance(n.get("cost_info"), dict) and "query_cost" in n["cost_info"]:
                    return float(n["cost_info"]["query_cost"])
                if "cost" in n and isinstance(n["cost"], (int, float)):  # MariaDB 11
                    return float(n["cost"])
        except (KeyError, TypeError, ValueError):
            return None
        return None

    def without_index_hint(self, statement):
        start = statement.find(" FORCE INDEX (")
        if start < 0:
            return statement
        end = statement.index(")", start)
        return statement[:start] + statement[end + 1:]
