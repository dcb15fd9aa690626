"""The client-facing side of the operations: what `calls.py` needs to know about each
endpoint a client calls, as thin adapters over the `wire` modules. Nothing here does I/O.

A `Dialect` is the wire format of one generative operation as a client speaks it (Anthropic
Messages, OpenAI Chat Completions, OpenAI Responses): check and parse a request, render an
answer or an error, encode a stream, and what a keep-alive looks like. An `Endpoint` is one
operation a client calls, with the family whose error envelope it answers in; the three
generative ones have a dialect, the others (embeddings, completions, count_tokens) are
relayed as bytes (or, for count_tokens, estimated).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from meridian.errors import InvalidRequest, MeridianError
from meridian.model import Event, Request, Response
from meridian.providers.base import Family, Operation
from meridian.wire import anthropic as anthropic_wire
from meridian.wire import openai_chat as openai_wire
from meridian.wire import openai_responses as responses_wire
from meridian.wire.sse import KEEPALIVE_COMMENT, encode


class Encoder(Protocol):
    def feed(self, event: Event) -> bytes: ...


class Dialect(Protocol):
    family: Family
    keepalive: bytes

    def parse(self, body: Mapping[str, Any]) -> Request: ...

    def render(self, response: Response, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The answer, saying ``model`` answered (the upstream's own id)."""
        ...

    def encoder(self, model: str, body: Mapping[str, Any]) -> Encoder: ...

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes: ...

    def error(self, err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]: ...


def _stream_flag(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be true or false", param="stream")
    return stream


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "`model` is required and must be a string naming a model", param="model"
        )
    return model


def check_chat(body: Mapping[str, Any]) -> tuple[str, bool]:
    """What a Messages or Chat Completions request needs before routing: a model and a
    message list. The pass-through forwards the body as sent, so this is all it checks
    itself: the rest (block types newer than meridian, say) is the upstream's to judge."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "`messages` is required and must be a non-empty list of messages", param="messages"
        )
    return model, _stream_flag(body)


Check = Callable[[Mapping[str, Any]], tuple[str, bool]]


def _check_field(name: str, what: str, *, stream: bool) -> Check:
    def check(body: Mapping[str, Any]) -> tuple[str, bool]:
        model = _model(body)
        if body.get(name) in (None, "", []):
            raise InvalidRequest(f"`{name}` is required: {what}", param=name)
        return model, _stream_flag(body) if stream else False

    return check


class AnthropicDialect:
    family: Family = "anthropic"
    keepalive = encode("ping", b'{"type": "ping"}')

    def parse(self, body: Mapping[str, Any]) -> Request:
        return anthropic_wire.parse_request(body)

    def render(self, response: Response, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        rendered = anthropic_wire.render_response(response)
        rendered["model"] = model
        return rendered

    def encoder(self, model: str, body: Mapping[str, Any]) -> Encoder:
        return anthropic_wire.StreamEncoder(model)

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes:
        assert isinstance(encoder, anthropic_wire.StreamEncoder)
        return encoder.error(err, request_id)

    def error(self, err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]:
        return anthropic_wire.render_error(err, request_id)


class OpenAIDialect:
    family: Family = "openai"
    keepalive = KEEPALIVE_COMMENT

    def parse(self, body: Mapping[str, Any]) -> Request:
        return openai_wire.parse_request(body)

    def render(self, response: Response, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return openai_wire.render_response(response, model=model, created=int(time.time()))

    def encoder(self, model: str, body: Mapping[str, Any]) -> Encoder:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return openai_wire.StreamEncoder(
            model=model, include_usage=include_usage, created=int(time.time())
        )

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes:
        assert isinstance(encoder, openai_wire.StreamEncoder)
        return encoder.error(err)

    def error(self, err: MeridianError, request_id: str) -> tuple[int, dict[str, Any]]:
        return openai_wire.render_error(err)


class ResponsesDialect(OpenAIDialect):
    """The Responses API: stateless here (see `meridian.wire.openai_responses`)."""

    def parse(self, body: Mapping[str, Any]) -> Request:
        return responses_wire.parse_request(body)

    def render(self, response: Response, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        return responses_wire.render_response(
            response,
            model=model,
            created_at=now,
            completed_at=now,
            echo=responses_wire.request_echo(body),
        )

    def encoder(self, model: str, body: Mapping[str, Any]) -> Encoder:
        return responses_wire.StreamEncoder(
            model=model,
            created_at=int(time.time()),
            echo=responses_wire.request_echo(body),
            clock=time.time,
        )

    def stream_error(self, encoder: Encoder, err: MeridianError, request_id: str) -> bytes:
        assert isinstance(encoder, responses_wire.StreamEncoder)
        return encoder.error(err)


ANTHROPIC = AnthropicDialect()
OPENAI = OpenAIDialect()
RESPONSES = ResponsesDialect()


@dataclass(frozen=True, slots=True)
class Endpoint:
    op: Operation
    family: Family
    check: Check  # the body -> (model, stream)
    dialect: Dialect | None = None  # the generative operations' wire format
    # The dialect whose error envelope (and keep-alive) this endpoint uses.
    errors: Dialect = OPENAI


MESSAGES = Endpoint("messages", "anthropic", check_chat, ANTHROPIC, ANTHROPIC)
CHAT = Endpoint("chat", "openai", check_chat, OPENAI, OPENAI)
RESPONSES_ENDPOINT = Endpoint("responses", "openai", responses_wire.check_request, RESPONSES)
EMBEDDINGS = Endpoint(
    "embeddings", "openai", _check_field("input", "the text(s) to embed", stream=False)
)
COMPLETIONS = Endpoint(
    "completions", "openai", _check_field("prompt", "the text to complete", stream=True)
)
COUNT_TOKENS = Endpoint("count_tokens", "anthropic", check_chat, None, ANTHROPIC)


def for_request(path: str, headers: Mapping[str, str]) -> Dialect:
    """The family a request speaks, by its path first (an Anthropic endpoint is Anthropic
    whatever its headers), else by its headers."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.endswith(("/chat/completions", "/responses", "/embeddings", "/completions")):
        return OPENAI
    return for_headers(headers)


def for_headers(headers: Mapping[str, str]) -> Dialect:
    """The family a request on a shared path (``/v1/models``, a 404) most likely speaks:
    Anthropic's SDKs always send ``anthropic-version``; ``x-api-key`` is Anthropic's header."""
    if "anthropic-version" in headers or "x-api-key" in headers:
        return ANTHROPIC
    return OPENAI
