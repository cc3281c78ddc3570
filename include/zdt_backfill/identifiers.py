"""Identifier validation.

Identifiers (schema, table, column names) come from user conf and end up in SQL.
They are validated here against a strict ASCII grammar and then *always* quoted by
SQLAlchemy's dialect preparer (see :mod:`zdt_backfill.dialects`); values are always bound
parameters. The grammar refuses quotes, semicolons, whitespace, comment markers and
Unicode look-alikes (a Cyrillic ``а`` is not an ASCII ``a``), which is stricter than
either database needs, on purpose: names outside it are rare in schemas that get
backfilled, and refusing them is cheaper than reasoning about every escape rule.
"""

from __future__ import annotations

import re

from .errors import ConfigError, UnsafeIdentifierError

#: Longest identifier PostgreSQL keeps (NAMEDATALEN - 1 = 63 bytes); MySQL allows 64.
MAX_IDENTIFIER_LENGTH = 63

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Character sequences refused in column expressions: they would end the statement
#: or hide the rest of it.
_EXPRESSION_FORBIDDEN = (";", "--", "/*", "*/", "#")


def validate_identifier(name: object, what: str = "identifier") -> str:
    """Return ``name`` if it is a safe identifier, else raise.

    :param name: the candidate identifier (any object; non-strings are refused).
    :param what: what the identifier names, for the error message ("source_table").
    :returns: the same string.
    :raises UnsafeIdentifierError: not a string, empty, longer than 63 characters, or
        not matching ``[A-Za-z_][A-Za-z0-9_]*``.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeIdentifierError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise UnsafeIdentifierError(f"{what} {name!r} is longer than {MAX_IDENTIFIER_LENGTH} characters")
    if not _IDENTIFIER.match(name):
        raise UnsafeIdentifierError(
            f"{what} {name!r} is not a plain SQL identifier: only ASCII letters, digits and "
            "underscores are accepted (no quotes, semicolons, spaces or look-alike characters)"
        )
    return name


def validate_expression(expr: object, column: str) -> str:
    """Return a column expression if it cannot break out of its statement.

    Column expressions (``lower(trim(email))``) are SQL written by the operator of the
    backfill, so they cannot be quoted; they are checked for statement terminators and
    comment markers here, and pre-flight then ``EXPLAIN``s the statement that embeds
    them, so an expression that does not parse fails before anything is written.

    :param expr: the SQL expression over source columns.
    :param column: the target column it fills, for the error message.
    :raises ConfigError: empty, not a string, or containing ``;``, ``--``, ``/*``, ``*/`` or ``#``.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"expression for column {column!r} must be a non-empty string")
    for token in _EXPRESSION_FORBIDDEN:
        if token in expr:
            raise ConfigError(
                f"expression for column {column!r} contains {token!r}: statement separators and "
                "comments are not allowed in column expressions"
            )
    return expr.strip()
