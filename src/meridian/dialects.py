"""The two API families as the surfaces see them: thin adapters over the `wire` modules.

A `Dialect` answers everything `calls.py` needs to know about one client wire format: how
to check and parse a request, render an answer or an error, encode a stream, and what a
keep-alive looks like. Nothing here does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from meridian.errors import InvalidRequest, MeridianError
from meridian.model import Event, Request, Response
from meridian.providers.base import Wire
from meridian.wire import anthropic as anthropic_wire
from meridian.wire import openai_chat as openai_wire
from meridian.wire.sse import KEEPALIVE_COMMENT, encode


class Encoder(Protocol):
    def feed(self, event: Event) -> bytes: ...


class Dialect(Protocol):
    wire: Wire
    keepalive: bytes

    def check(self, body: Mapping[str, Any]) -> tuple[str, bool]: ...

    def parse(self, body: Mapping[str, Any]) -> Request: ...

    def render(self, response: Response, alias: str) -> dict[str, Any]: ...

    def encoder(self, alias: str, body: Mapping[str, Any]) -> Encoder: ...

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes: ...

    def error(self, err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]: ...


def _check(body: Mapping[str, Any]) -> tuple[str, bool]:
    """What every request needs before routing: a model name and a message list.

    The pass-through path forwards the body as sent, so this is all it checks itself: the
    rest (block types that are newer than meridian, say) is the upstream's to judge.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "`model` is required and must be a string naming a model", param="model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "`messages` is required and must be a non-empty list of messages", param="messages"
        )
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be true or false", param="stream")
    return model, stream


class AnthropicDialect:
    wire: Wire = "anthropic"
    keepalive = encode("ping", b'{"type": "ping"}')

    def check(self, body: Mapping[str, Any]) -> tuple[str, bool]:
        return _check(body)

    def parse(self, body: Mapping[str, Any]) -> Request:
        return anthropic_wire.parse_request(body)

    def render(self, response: Response, alias: str) -> dict[str, Any]:
        rendered = anthropic_wire.render_response(response)
        rendered["model"] = alias
        return rendered

    def encoder(self, alias: str, body: Mapping[str, Any]) -> Encoder:
        return anthropic_wire.StreamEncoder(alias)

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes:
        assert isinstance(encoder, anthropic_wire.StreamEncoder)
        return encoder.error(err, request_id)

    def error(self, err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]:
        return anthropic_wire.render_error(err, request_id)


class OpenAIDialect:
    wire: Wire = "openai"
    keepalive = KEEPALIVE_COMMENT

    def check(self, body: Mapping[str, Any]) -> tuple[str, bool]:
        return _check(body)

    def parse(self, body: Mapping[str, Any]) -> Request:
        return openai_wire.parse_request(body)

    def render(self, response: Response, alias: str) -> dict[str, Any]:
        return openai_wire.render_response(response, model=alias, created=int(time.time()))

    def encoder(self, alias: str, body: Mapping[str, Any]) -> Encoder:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return openai_wire.StreamEncoder(
            model=alias, include_usage=include_usage, created=int(time.time())
        )

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes:
        assert isinstance(encoder, openai_wire.StreamEncoder)
        return encoder.error(err)

    def error(self, err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]:
        return openai_wire.render_error(err)


ANTHROPIC = AnthropicDialect()
OPENAI = OpenAIDialect()


def for_request(path: str, headers: Mapping[str, str]) -> Dialect:
    """The family a request speaks, by its path first (an Anthropic endpoint is Anthropic
    whatever its headers), else by its headers."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.endswith("/chat/completions"):
        return OPENAI
    return for_headers(headers)


def for_headers(headers: Mapping[str, str]) -> Dialect:
    """The family a request on a shared path (``/v1/models``, a 404) most likely speaks:
    Anthropic's SDKs always send ``anthropic-version``; ``x-api-key`` is Anthropic's header."""
    if "anthropic-version" in headers or "x-api-key" in headers:
        return ANTHROPIC
    return OPENAI
