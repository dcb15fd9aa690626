"""OpenAI and every OpenAI-compatible upstream: OpenAI itself, Gemini's OpenAI endpoint,
Ollama, vLLM, LM Studio, OpenRouter.

``POST {base_url}/chat/completions`` (``base_url`` already ends in ``/v1``, or in Gemini's
``/v1beta/openai``), ``Authorization: Bearer <api_key>`` when a key is configured (Ollama
needs none). Bodies get the per-model fix-ups of `meridian.providers.rules` on both paths.

Streaming usage: meridian's ledger needs the token counts of every call, and OpenAI reports
them in a stream only when asked. So every streaming request goes upstream with
``stream_options: {"include_usage": true}``. On the pass-through path, when the client had
not asked for usage itself, the extra usage-only chunk (``"choices": []``) is dropped before
it reaches the client; the ``"usage": null`` field OpenAI then adds to every other chunk is
left in place: it is part of the documented chunk shape and clients ignore it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import orjson

from meridian.config import OpenAIProviderConfig
from meridian.model import Event, Request, Usage
from meridian.providers import rules
from meridian.providers.base import CallContext, Relay, Wire
from meridian.providers.http import HttpProvider, dumps, passed_headers
from meridian.wire import openai_chat
from meridian.wire.sse import SSEEvent

_USAGE_OPTIONS = {"include_usage": True}


def quota_exhausted(status: int, body: bytes) -> bool:
    """OpenAI's 429 ``insufficient_quota``: out of credit, so retrying cannot help."""
    if status != 429 or b"insufficient_quota" not in body:
        return False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and "insufficient_quota" in (
        error.get("code"),
        error.get("type"),
    )


def is_usage_chunk(event: SSEEvent) -> bool:
    """The chunk ``include_usage`` adds at the end: ``"choices": []`` plus the usage."""
    raw = event.raw
    # A substring test first: this runs for every chunk of a relayed stream.
    if b'"choices":[]' not in raw and b'"choices": []' not in raw:
        return False
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("choices") == [] and "usage" in data


class OpenAIProvider(HttpProvider):
    native_wire: Wire | None = "openai"

    def __init__(self, name: str, config: OpenAIProviderConfig) -> None:
        auth = {}
        if config.api_key is not None:
            auth["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        super().__init__(
            name,
            config,
            path="/chat/completions",
            headers=auth,
            parse_error_body=openai_chat.parse_error_body,
            quota_exhausted=quota_exhausted,
        )

    async def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        body = openai_chat.render_request(request)
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), **_USAGE_OPTIONS}
        body = rules.apply_openai(request.model, body)
        resp = await self._http.post(self._url, dumps(body), self._headers)
        async with aclosing(
            self._http.decode(resp, openai_chat.StreamDecoder(provider=self.name))
        ) as events:
            async for event in events:
                yield event

    async def relay(self, body: dict[str, Any], ctx: CallContext) -> Relay:
        model = body.get("model")
        if isinstance(model, str):
            body = rules.apply_openai(model, body)
        streaming = body.get("stream") is True
        wants_usage = True
        if streaming:
            options = body.get("stream_options")
            wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            if not wants_usage:
                extra = options if isinstance(options, dict) else {}
                body = {**body, "stream_options": {**extra, **_USAGE_OPTIONS}}
        resp = await self._http.post(self._url, dumps(body), self._headers)
        if streaming:
            return self._http.relay(
                resp,
                openai_chat.UsageSniffer(provider=self.name),
                skip=None if wants_usage else is_usage_chunk,
            )
        data = await self._http.read(resp)
        return Relay(
            status=resp.status,
            content_type=resp.headers.get("content-type", "application/json"),
            body=data,
            usage=_usage(data),
            headers=passed_headers(resp.headers),
        )


def _usage(data: bytes) -> Usage:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Usage()
    return openai_chat.usage_from_body(parsed) if isinstance(parsed, dict) else Usage()
