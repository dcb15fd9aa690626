"""The Anthropic Messages API with an API key: ``POST {base_url}/v1/messages``.

Headers: ``x-api-key``; ``anthropic-version`` as the caller sent it, else ``2023-06-01``;
``anthropic-beta`` as the caller sent it (Claude Code and others turn features on with it,
and unknown betas must reach the API untouched), joined with any configured in the
provider's ``headers``; then the provider's other configured ``headers``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import orjson

from meridian.config import AnthropicProviderConfig
from meridian.model import Event, Request, Usage
from meridian.providers import rules
from meridian.providers.base import CallContext, Relay, Wire
from meridian.providers.http import HttpProvider, dumps, passed_headers
from meridian.wire import anthropic as anthropic_wire

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    native_wire: Wire | None = "anthropic"

    def __init__(self, name: str, config: AnthropicProviderConfig) -> None:
        auth = {} if config.api_key is None else {"x-api-key": config.api_key.get_secret_value()}
        super().__init__(
            name,
            config,
            path="/v1/messages",
            headers={"anthropic-version": ANTHROPIC_VERSION, **auth},
            parse_error_body=anthropic_wire.parse_error_body,
        )

    def headers(self, ctx: CallContext) -> dict[str, str]:
        """The upstream request headers for a call (shared, not copied, when nothing varies)."""
        forward = ctx.forward_headers
        if not forward:
            return self._headers
        version = forward.get("anthropic-version")
        beta = forward.get("anthropic-beta")
        if not version and not beta:
            return self._headers
        headers = dict(self._headers)
        if version:
            headers["anthropic-version"] = version
        if beta:
            configured = self._headers.get("anthropic-beta")
            headers["anthropic-beta"] = _join_betas(configured, beta) if configured else beta
        return headers

    async def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        body = anthropic_wire.render_request(request)
        body["stream"] = True
        body = rules.apply_anthropic(request.model, body)
        resp = await self._http.post(self._url, dumps(body), self.headers(ctx))
        async with aclosing(self._http.decode(resp, anthropic_wire.StreamDecoder())) as events:
            async for event in events:
                yield event

    async def relay(self, body: dict[str, Any], ctx: CallContext) -> Relay:
        model = body.get("model")
        if isinstance(model, str):
            body = rules.apply_anthropic(model, body)
        streaming = body.get("stream") is True
        resp = await self._http.post(self._url, dumps(body), self.headers(ctx))
        if streaming:
            return self._http.relay(resp, anthropic_wire.UsageSniffer())
        data = await self._http.read(resp)
        return Relay(
            status=resp.status,
            content_type=resp.headers.get("content-type", "application/json"),
            body=data,
            usage=_usage(data),
            headers=passed_headers(resp.headers),
        )


def _join_betas(configured: str, forwarded: str) -> str:
    """Both comma-separated lists, each beta once, the configured ones first."""
    seen: dict[str, None] = {}
    for part in (*configured.split(","), *forwarded.split(",")):
        name = part.strip()
        if name:
            seen.setdefault(name)
    return ",".join(seen)


def _usage(data: bytes) -> Usage:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Usage()
    return anthropic_wire.usage_from_body(parsed) if isinstance(parsed, dict) else Usage()
