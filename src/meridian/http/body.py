"""Reading a request's JSON body: bounded in size and nesting, and honest about a client
that leaves (or stalls) before the body has arrived.

Depth matters because orjson parses 1,024 levels but serializes only 255, and the wire
translators recurse: a body nested a few hundred levels deep would otherwise pass parsing
and fail later with a 500. It is checked where it is cheap: a body with fewer brackets than
the limit cannot be nested deeper, so only bodies with many brackets are walked, and the
walk stops at the first container past the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from meridian.errors import ClientClosed, InvalidRequest, RequestTooLarge


async def read_body(chunks: AsyncIterator[bytes], limit: int, declared: str | None) -> bytes:
    """The whole body, or `RequestTooLarge` as soon as it passes ``limit`` bytes."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(too_large(limit))
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(too_large(limit))
        parts.append(chunk)
    return b"".join(parts)


def too_large(limit: int) -> str:
    if limit >= 1024 * 1024:
        mb = limit / (1024 * 1024)
        return f"request body is larger than the {mb:g} MB limit (server.max_body_mb)"
    return f"request body is larger than the {limit} byte limit"


def parse_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    """``raw`` as a JSON object nested at most ``max_depth`` levels, else `InvalidRequest`."""
    if not raw:
        raise InvalidRequest("the request body is empty: send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own limit, 1,024 levels
            raise _too_deep(max_depth) from None
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        check_depth(body, max_depth)
    return body


def check_depth(value: Any, max_depth: int) -> None:
    """Raise `InvalidRequest` if ``value`` nests containers deeper than ``max_depth``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list) and child:
                stack.append((child, depth + 1))


def _too_deep(max_depth: int) -> InvalidRequest:
    return InvalidRequest(
        f"the request body is nested more than {max_depth} levels deep (server.http.max_json_depth)"
    )


__all__ = ["ClientClosed", "check_depth", "parse_object", "read_body", "too_large"]
