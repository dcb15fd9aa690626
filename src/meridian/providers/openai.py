"""OpenAI and every OpenAI-compatible upstream: OpenAI itself, Gemini's OpenAI endpoint,
Ollama, vLLM, LM Studio, OpenRouter.

``POST {base_url}/chat/completions`` (``base_url`` already ends in ``/v1``, or in Gemini's
``/v1beta/openai``), and for the pass-through of the other operations ``/responses``,
``/embeddings`` and ``/completions``; ``Authorization: Bearer <api_key>`` when a key is
configured (Ollama needs none). Bodies get the per-model fix-ups of
`meridian.providers.rules` on both paths (`meridian.prepare` on the pass-through).

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
from urllib.parse import urlsplit

import orjson

from meridian.config import OpenAIProviderConfig
from meridian.model import Event, Request, Response, Usage
from meridian.providers import rules
from meridian.providers.base import CallContext, Capabilities, Operation, Relayed
from meridian.providers.http import HttpProvider, Sniffer, dumps
from meridian.wire import openai_chat, openai_responses
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


def native_operations(config: OpenAIProviderConfig) -> frozenset[Operation]:
    """What this upstream serves itself. Every OpenAI-compatible server has chat, and the
    servers meridian targets (OpenAI, vLLM, Ollama, LM Studio, Gemini, OpenRouter) embed and
    most complete; the Responses API is OpenAI's own (``responses_api``, default: on for
    api.openai.com only), others get it translated to chat."""
    ops: set[Operation] = {"chat", "embeddings", "completions"}
    responses = config.responses_api
    if responses is None:
        responses = urlsplit(config.base_url).hostname == "api.openai.com"
    if responses:
        ops.add("responses")
    return frozenset(ops)


class OpenAIProvider(HttpProvider):
    def __init__(self, name: str, config: OpenAIProviderConfig) -> None:
        auth = {}
        if config.api_key is not None:
            auth["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        super().__init__(
            name,
            config,
            paths=_PATHS,
            headers=auth,
            parse_error_body=openai_chat.parse_error_body,
            quota_exhausted=quota_exhausted,
        )
        self.capabilities = Capabilities(native=native_operations(config))

    async def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        body = openai_chat.render_request(request)
        body["stream"] = True
        body["stream_options"] = {**(body.get("stream_options") or {}), **_USAGE_OPTIONS}
        body = rules.apply_openai(request.model, body)
        resp = await self._http.post(self._urls["chat"], dumps(body), self._headers)
        async with aclosing(
            self._http.decode(resp, openai_chat.StreamDecoder(provider=self.name))
        ) as events:
            async for event in events:
                yield event

    async def complete(self, request: Request, ctx: CallContext) -> Response:
        body = rules.apply_openai(request.model, openai_chat.render_request(request))
        resp = await self._http.post(self._urls["chat"], dumps(body), self._headers)
        return openai_chat.parse_response(_json(await self._http.read(resp)), provider=self.name)

    async def relay(self, op: Operation, body: dict[str, Any], ctx: CallContext) -> Relayed:
        streaming = body.get("stream") is True
        skip = None
        if streaming and op in ("chat", "completions"):
            # Usage comes only when asked for: ask, and drop it again for a client that
            # did not ask itself.
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                extra = options if isinstance(options, dict) else {}
                body = {**body, "stream_options": {**extra, **_USAGE_OPTIONS}}
                skip = is_usage_chunk
        resp = await self._http.post(self._urls[op], dumps(body), self._headers)
        if streaming:
            sniffer: Sniffer = (
                openai_responses.UsageSniffer(provider=self.name)
                if op == "responses"
                else openai_chat.UsageSniffer(provider=self.name)
            )
            return self._http.relay(resp, sniffer, skip=skip)
        return await self._http.relay_body(
            resp, _responses_usage if op == "responses" else _chat_usage
        )


_PATHS: dict[Operation, str] = {
    "chat": "/chat/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
    "completions": "/completions",
}


def _json(data: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _chat_usage(data: bytes) -> tuple[Usage, str | None]:
    """Chat completions, completions and embeddings all report ``usage.prompt_tokens``."""
    parsed = _json(data)
    model = parsed.get("model")
    return openai_chat.usage_from_body(parsed), model if isinstance(model, str) else None


def _responses_usage(data: bytes) -> tuple[Usage, str | None]:
    parsed = _json(data)
    model = parsed.get("model")
    return openai_responses.usage_from_body(parsed), model if isinstance(model, str) else None
