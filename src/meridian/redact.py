"""Credentials out of everything meridian writes: log lines, logged bodies, error messages.

Three tools, all pure: `redact_url` drops the password (and user) of a URL, `redact_text`
replaces key-shaped substrings anywhere in a string (a client key quoted inside a prompt, an
upstream error message that echoes a key), and `redact` walks a JSON-like value, blanking
credential-named fields and scrubbing every string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"
# Keys whose values are credentials wherever they appear (headers, bodies, nested configs).
SECRET_KEYS = frozenset(
    {
        "api_key",
        "api-key",
        "apikey",
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "password",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "client_secret",
    }
)
# Well-known key shapes: Anthropic and OpenAI (``sk-``, ``sk-ant-``, ``sk-proj-``), Google
# (``AIza``), meridian's own client and master keys (``mk-``), bearer tokens. Long enough
# that ordinary words never match.
_KEY = re.compile(
    r"(?:\b(?:sk|mk)-[A-Za-z0-9_\-]{16,}|\bAIza[A-Za-z0-9_\-]{20,}|"
    r"(?i:bearer)\s+[A-Za-z0-9_\-.~+/]{16,}=*)"
)


def redact_url(url: str) -> str:
    """``http://user:secret@host/x`` -> ``http://***@host/x``; anything else unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def redact_store_url(url: str) -> str:
    """A Redis or database URL fit for a log line: no user or password, in the authority or
    in the query (``?password=``)."""
    url = redact_url(url)
    base, sep, query = url.partition("?")
    if not sep:
        return url
    # Not urlunsplit: it would turn ``unix:///path`` into ``unix:/path``.
    return f"{base}?" + "&".join(
        f"{name}=***" if name.lower() in SECRET_KEYS or name.lower() == "username" else item
        for item in query.split("&")
        for name in [item.partition("=")[0]]
    )


def redact_text(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with key-shaped substrings and the given ``secrets`` replaced."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    if "-" in text or "AIza" in text or "earer" in text:
        text = _KEY.sub(REDACTED, text)
    return text


def redact(value: Any, secrets: Sequence[str] = ()) -> Any:
    """A copy of a JSON-like value with credentials replaced by ``[redacted]``. Iterative:
    a body nested deep enough to exhaust Python's recursion must still be logged safely."""
    if not isinstance(value, dict | list | tuple):
        return redact_text(value, secrets) if isinstance(value, str) else value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        item, parent, slot = stack.pop()
        if isinstance(item, dict):
            out: Any = {}
            parent[slot] = out
            for k, v in item.items():
                if str(k).lower() in SECRET_KEYS:
                    out[k] = REDACTED
                else:
                    out[k] = None
                    stack.append((v, out, k))
        elif isinstance(item, list | tuple):
            out = [None] * len(item)
            parent[slot] = out
            for i, v in enumerate(item):
                stack.append((v, out, i))
        elif isinstance(item, str):
            parent[slot] = redact_text(item, secrets)
        else:
            parent[slot] = item
    return root[0]
