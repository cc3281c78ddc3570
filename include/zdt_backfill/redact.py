"""Credentials out of every log line, event, report and stored config.

A URL in the conf (``flag_store_url``, ``error_signal_url``, ``cache_redis_url``) or on the
command line (``--url``) may carry a password in its userinfo (``user:secret@``), a bare token
as its userinfo (``token@``), or a token in its query string (``?api_key=...``). Airflow's own
masker keys on field *names* such as ``password``, so a URL under ``cache_redis_url`` goes
through it untouched. Everything the engine logs, records or reports about such a URL goes
through :func:`mask_url`, and any text that may quote one (an exception from an HTTP or Redis
client) through :func:`scrub`. :func:`secrets_in` lists the raw secrets, for Airflow's
``mask_secret`` in the task runner.

Prefer Airflow connections (``flag_store_conn_id``, ``error_signal_conn_id``,
``cache_conn_id``): the secret then never enters the DAG run's conf at all.
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: Query-string parameter names that hold secrets (case-insensitive, anywhere in the name).
SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|sig|credential|session|bearer", re.IGNORECASE)
#: Schemes whose bare userinfo (``https://TOKEN@host``) is a token rather than a user name.
TOKEN_USERINFO_SCHEMES = ("http", "https")


def mask_url(url: str | None) -> str | None:
    """The URL with its userinfo password (or, on http(s), a bare userinfo token) and its secret-looking query
    values replaced by ``***``: ``https://u:s3cret@h/p?api_key=k&x=1`` ->
    ``https://u:***@h/p?api_key=***&x=1``. ``None`` and non-URLs come back unchanged.
    """
    if not url or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, sep, _ = userinfo.partition(":")
            if sep:
                netloc = f"{user}:{MASK}@{host}"
            elif parts.scheme.lower() in TOKEN_USERINFO_SCHEMES:
                netloc = f"{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if SECRET_NAME.search(k) else v) for k, v in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # an unparseable port, say: mask everything after the scheme
        return url.split("://", 1)[0] + "://" + MASK


def secrets_in(url: str | None) -> list[str]:
    """The raw secrets a URL carries (password or bare userinfo token, secret query values),
    longest first; empty when it has none."""
    if not url or "://" not in url:
        return []
    out: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, sep, password = userinfo.partition(":")
        if sep:
            out.append(password)
        elif parts.scheme.lower() in TOKEN_USERINFO_SCHEMES:
            out.append(user)
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(k) and v:
            out.append(v)
    return sorted({s for s in out if s}, key=len, reverse=True)


def scrub(text: str, urls: Iterable[str | None]) -> str:
    """``text`` with every URL of ``urls`` masked and every secret they carry replaced by ``***``
    (an exception message from httpx or redis quoting the URL, for example)."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, mask_url(url) or "")
        for secret in secrets_in(url):
            text = text.replace(secret, MASK)
    return text
