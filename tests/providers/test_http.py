"""The shared HTTP plumbing: header parsing (pure) and connection lifetime (loopback)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from fakes import FakeAnthropic
from meridian.config import AnthropicProviderConfig
from meridian.providers.anthropic import AnthropicProvider
from meridian.providers.base import CallContext, RelayedBody
from meridian.providers.http import passed_headers, retry_after

RETRY_AFTER: list[tuple[dict[str, str], float | None]] = [
    ({}, None),
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "1500"}, 1.5),
    # retry-after-ms is read first, as the official SDKs do.
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
    ({"retry-after": "-3"}, 0.0),
    ({"retry-after": "whenever"}, None),
]


@pytest.mark.parametrize(("headers", "expected"), RETRY_AFTER)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(headers) == expected


def test_retry_after_http_date() -> None:
    later = formatdate(time.time() + 120, usegmt=True)
    seconds = retry_after({"retry-after": later})
    assert seconds is not None
    assert 100 < seconds <= 120
    assert retry_after({"retry-after": formatdate(time.time() - 60, usegmt=True)}) == 0.0


def test_passed_headers() -> None:
    headers = {
        "Request-Id": "req_1",
        "x-request-id": "req_2",
        "anthropic-ratelimit-requests-remaining": "49",
        "X-RateLimit-Remaining-Tokens": "1000",
        "content-type": "application/json",
        "set-cookie": "a=b",
        "retry-after": "3",
    }
    assert passed_headers(headers) == {
        "request-id": "req_1",
        "x-request-id": "req_2",
        "anthropic-ratelimit-requests-remaining": "49",
        "x-ratelimit-remaining-tokens": "1000",
    }


async def test_unread_relay_closed_frees_its_connection(fake_anthropic: FakeAnthropic) -> None:
    cfg = AnthropicProviderConfig.model_validate(
        {"type": "anthropic", "base_url": fake_anthropic.url, "max_connections": 1}
    )
    provider = AnthropicProvider("ant", cfg)
    await provider.start()
    ctx = CallContext("r")
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    try:
        async with asyncio.timeout(5):
            # A stream that would take 20 s to finish on its own.
            fake_anthropic.reply_slow(0.5, text="word " * 16)
            relay = await provider.relay("messages", {**body, "stream": True}, ctx)
            assert relay.chunks is not None
            # The caller gives up before reading anything.
            await relay.chunks.aclose()  # type: ignore[attr-defined]
            # With a pool of one, this only completes if that connection was let go.
            again = await provider.relay("messages", body, ctx)
        assert isinstance(again, RelayedBody) and again.body
    finally:
        await provider.aclose()
