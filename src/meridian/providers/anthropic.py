"""The Anthropic Messages API with an API key: ``POST {base_url}/v1/messages``, and
``/v1/messages/count_tokens`` for exact token counts.

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
from meridian.errors import ApiError
from meridian.model import Event, Request, Response, Usage
from meridian.providers import rules
from meridian.providers.base import CallContext, Capabilities, Operation, Relayed
from meridian.providers.http import HttpProvider, dumps
from meridian.wire import anthropic as anthropic_wire

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    capabilities = Capabilities(native=frozenset({"messages", "count_tokens"}))

    def __init__(self, name: str, config: AnthropicProviderConfig) -> None:
        auth = {} if config.api_key is None else {"x-api-key": config.api_key.get_secret_value()}
        super().__init__(
            name,
            config,
            paths={"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"},
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
        resp = await self._http.post(self._urls["messages"], dumps(body), self.headers(ctx))
        async with aclosing(self._http.decode(resp, anthropic_wire.StreamDecoder())) as events:
            async for event in events:
                yield event

    async def complete(self, request: Request, ctx: CallContext) -> Response:
        body = rules.apply_anthropic(request.model, anthropic_wire.render_request(request))
        resp = await self._http.post(self._urls["messages"], dumps(body), self.headers(ctx))
        data = await self._http.read(resp)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            err = ApiError(f"provider `{self.name}`: the upstream's answer is not JSON", status=502)
            err.upstream = True
            raise err
        return anthropic_wire.parse_response(parsed)

    async def relay(self, op: Operation, body: dict[str, Any], ctx: CallContext) -> Relayed:
        resp = await self._http.post(self._urls[op], dumps(body), self.headers(ctx))
        if body.get("stream") is True and op == "messages":
            return self._http.relay(resp, anthropic_wire.UsageSniffer())
        # count_tokens is free: its answer is a count, not a use.
        return await self._http.relay_body(resp, _usage if op == "messages" else _no_usage)


def _join_betas(configured: str, forwarded: str) -> str:
    """Both comma-separated lists, each beta once, the configured ones first."""
    seen: dict[str, None] = {}
    for part in (*configured.split(","), *forwarded.split(",")):
        name = part.strip()
        if name:
            seen.setdefault(name)
    return ",".join(seen)


def _usage(data: bytes) -> tuple[Usage, str | None]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Usage(), None
    if not isinstance(parsed, dict):
        return Usage(), None
    model = parsed.get("model")
    return anthropic_wire.usage_from_body(parsed), model if isinstance(model, str) else None


def _no_usage(data: bytes) -> tuple[Usage, str | None]:
    return Usage(), None
