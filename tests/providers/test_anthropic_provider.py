"""AnthropicProvider against a loopback fake Anthropic server: both paths, every failure mode."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from fakes import FakeAnthropic, ToolCall
from meridian import prepare
from meridian.config import AnthropicProviderConfig
from meridian.errors import (
    ApiError,
    InvalidRequest,
    MeridianError,
    Overloaded,
    RateLimited,
)
from meridian.model import (
    Collector,
    Message,
    Request,
    Response,
    TextBlock,
    Thinking,
    ThinkingBlock,
    ToolUseBlock,
)
from meridian.providers.anthropic import AnthropicProvider
from meridian.providers.base import CallContext, Provider, RelayedBody, RelayedStream
from meridian.router import Route

CTX = CallContext(request_id="req-test")
LIMIT_S = 10


def config(base_url: str, **kw: Any) -> AnthropicProviderConfig:
    return AnthropicProviderConfig.model_validate(
        {"type": "anthropic", "api_key": "sk-ant-test", "base_url": base_url, **kw}
    )


@pytest.fixture
async def provider(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider("ant", config(fake_anthropic.url))
    await p.start()
    yield p
    await p.aclose()


def request(model: str = "claude-haiku-4-5", **kw: Any) -> Request:
    return Request(model=model, messages=(Message("user", (TextBlock("hi"),)),), **kw)


async def collect(provider: Provider, req: Request, ctx: CallContext = CTX) -> Response:
    collector = Collector()
    async with asyncio.timeout(LIMIT_S):
        async for event in provider.stream(req, ctx):
            collector.feed(event)
    return collector.response()


async def relay(
    provider: Provider, body: dict[str, Any], ctx: CallContext = CTX
) -> RelayedBody | RelayedStream:
    """The pass-through as the framework drives it: the body prepared for the deployment
    (`meridian.prepare`: model, output bound, the per-model rules), then relayed."""
    route = Route(str(body["model"]), provider.name, provider, str(body["model"]), 4096, 64_000)
    prepared = prepare.body("messages", body, route)
    async with asyncio.timeout(LIMIT_S):
        return await provider.relay("messages", prepared, ctx)


async def drain(relay: RelayedBody | RelayedStream) -> bytes:
    assert isinstance(relay, RelayedStream)
    out = b""
    async with asyncio.timeout(LIMIT_S):
        async for chunk in relay.chunks:
            out += chunk
    return out


def messages(model: str = "claude-haiku-4-5", **kw: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **kw}


# ---------------------------------------------------------------------------- answers


async def test_is_a_provider(provider: AnthropicProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.capabilities.serves("messages")
    assert await provider.ready() == (True, "ok")


async def test_streamed_text(provider: AnthropicProvider, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text("Two lights are on.", cache_read_tokens=11, cache_creation_tokens=5)
    response = await collect(provider, request(max_tokens=50))
    assert response.content == (TextBlock("Two lights are on."),)
    assert response.stop_reason == "end_turn"
    served = fake_anthropic.last.reply
    assert served is not None
    assert response.usage.input_tokens == served.input_tokens
    assert response.usage.output_tokens == served.output_tokens
    assert response.usage.cache_read_tokens == 11
    assert response.usage.cache_creation_tokens == 5
    sent = fake_anthropic.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json["stream"] is True
    assert sent.json["max_tokens"] == 50


async def test_max_tokens_defaulted(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    await collect(provider, request())
    assert fake_anthropic.last.json["max_tokens"] == 4096
    body = messages()
    del body["max_tokens"]
    await relay(provider, body)
    assert fake_anthropic.last.json["max_tokens"] == 4096


async def test_parallel_tool_calls_with_split_input(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_tool_calls(
        ToolCall("get_weather", {"city": "Paris"}, id="toolu_a"),
        ToolCall("set_light", {"room": "kitchen", "on": True}, id="toolu_b"),
        text="Checking.",
        piece_size=3,
    )
    response = await collect(provider, request())
    assert response.stop_reason == "tool_use"
    assert response.content == (
        TextBlock("Checking."),
        ToolUseBlock("toolu_a", "get_weather", {"city": "Paris"}),
        ToolUseBlock("toolu_b", "set_light", {"room": "kitchen", "on": True}),
    )


async def test_thinking_with_signature(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_thinking("Let me count the lamps.", "Two.", signature="sig-xyz==")
    response = await collect(
        provider,
        request("claude-sonnet-4-5", thinking=Thinking(budget_tokens=2048), temperature=0.2),
    )
    assert response.content == (
        ThinkingBlock("Let me count the lamps.", "sig-xyz=="),
        TextBlock("Two."),
    )
    sent = fake_anthropic.last.json
    assert sent["thinking"]["type"] == "enabled"
    assert "temperature" not in sent  # the API rejects it with thinking on


async def test_forwarded_headers(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    ctx = CallContext(
        request_id="r",
        forward_headers={
            "anthropic-version": "2023-01-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14,some-obsolete-beta-2024-01-01",
        },
    )
    await collect(provider, request(), ctx)
    await relay(provider, messages(), ctx)
    for sent in fake_anthropic.requests:
        assert sent.headers["anthropic-version"] == "2023-01-01"
        assert (
            sent.headers["anthropic-beta"]
            == "interleaved-thinking-2025-05-14,some-obsolete-beta-2024-01-01"
        )


async def test_configured_betas_join_forwarded_ones(fake_anthropic: FakeAnthropic) -> None:
    cfg = config(fake_anthropic.url, headers={"Anthropic-Beta": "a-beta,b-beta", "X-Extra": "1"})
    provider = AnthropicProvider("ant", cfg)
    await provider.start()
    try:
        await relay(provider, messages())
        await relay(provider, messages(), CallContext("r", {"anthropic-beta": "b-beta,c-beta"}))
    finally:
        await provider.aclose()
    plain, forwarded = fake_anthropic.requests
    assert plain.headers["anthropic-beta"] == "a-beta,b-beta"
    assert forwarded.headers["anthropic-beta"] == "a-beta,b-beta,c-beta"
    assert plain.headers["x-extra"] == forwarded.headers["x-extra"] == "1"


async def test_relay_plain_body_untouched(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_text("plain", cache_creation_tokens=9)
    result = await relay(provider, messages())
    assert isinstance(result, RelayedBody)
    assert result.body == fake_anthropic.last.sent
    assert result.headers["request-id"].startswith("req_fake")
    served = fake_anthropic.last.reply
    assert served is not None
    assert result.usage.input_tokens == served.input_tokens
    assert result.usage.output_tokens == served.output_tokens
    assert result.usage.cache_creation_tokens == 9


async def test_relay_preserves_unknown_fields_and_cache_control(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    system = [
        {
            "type": "text",
            "text": "You are a house.",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    turn = {
        "role": "user",
        "content": [
            {"type": "text", "text": "lights?", "cache_control": {"type": "ephemeral"}},
        ],
    }
    history = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": "EqQBCkYIBBgCIkB+/=="},
            {"type": "text", "text": "ok"},
        ],
    }
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 300,
        "system": system,
        "messages": [turn, history, {"role": "user", "content": "and now?"}],
        "output_config": {"effort": "low"},
        "metadata": {"user_id": "u-1"},
        "service_tier": "auto",
        "x_future_field": [1, {"a": None}],
        "stream": True,
    }
    await drain(await relay(provider, body))
    received = fake_anthropic.last
    assert received.json == body
    assert received.body == orjson.dumps(body)
    for part in (system, turn, history):
        assert orjson.dumps(part) in received.body


async def test_relay_stream_byte_for_byte_with_usage(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_text("streamed back", cache_read_tokens=4, output_tokens=21)
    result = await relay(provider, messages(stream=True))
    assert result.content_type.startswith("text/event-stream")
    before = result.first_token
    relayed = await drain(result)
    assert (before, result.first_token) == (False, True)
    assert relayed == fake_anthropic.last.sent
    served = fake_anthropic.last.reply
    assert served is not None
    assert result.usage.input_tokens == served.input_tokens
    assert result.usage.output_tokens == 21
    assert result.usage.cache_read_tokens == 4


# ---------------------------------------------------------------------------- errors


ErrorCase = tuple[str, dict[str, Any], type[MeridianError], dict[str, Any]]
ERRORS: list[ErrorCase] = [
    (
        "rate limited",
        {"status": 429, "retry_after": 7},
        RateLimited,
        {"status": 429, "retry_after": 7.0, "should_retry": None},
    ),
    (
        "rate limited, do not retry",
        {"status": 429, "retry_after": 60, "should_retry": False},
        RateLimited,
        {"status": 429, "retry_after": 60.0, "should_retry": False},
    ),
    ("overloaded", {"status": 529}, Overloaded, {"status": 529}),
    ("server error", {"status": 500}, ApiError, {"status": 500}),
    ("bad key", {"status": 401}, ApiError, {"status": 502, "should_retry": False}),
    (
        "bad request",
        {"status": 400, "message": "max_tokens: must be at most 64000"},
        InvalidRequest,
        {"status": 400},
    ),
]


def _script_error(fake: FakeAnthropic, spec: dict[str, Any]) -> None:
    spec = dict(spec)
    fake.reply_error(spec.pop("status"), spec.pop("message", None), **spec)


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
async def test_error_before_first_byte(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic, case: ErrorCase
) -> None:
    _, spec, cls, fields = case
    _script_error(fake_anthropic, spec)
    with pytest.raises(cls) as streamed:
        await collect(provider, request())
    _script_error(fake_anthropic, spec)
    with pytest.raises(cls) as relayed:
        await relay(provider, messages(stream=True))
    for err in (streamed.value, relayed.value):
        assert type(err) is cls
        for key, value in fields.items():
            assert getattr(err, key) == value, (key, err)
        assert err.message.startswith("ant: ")
        if "message" in spec:
            assert spec["message"] in err.message


async def test_overloaded_mid_stream(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_stream_error(after=4, type="overloaded_error", message="Overloaded")
    seen = []
    with pytest.raises(Overloaded):
        async with asyncio.timeout(LIMIT_S):
            async for event in provider.stream(request(), CTX):
                seen.append(event)
    assert seen

    fake_anthropic.reply_stream_error(after=4, type="overloaded_error", message="Overloaded")
    result = await relay(provider, messages(stream=True))
    chunks: list[bytes] = []
    assert isinstance(result, RelayedStream)
    with pytest.raises(Overloaded):
        async with asyncio.timeout(LIMIT_S):
            async for chunk in result.chunks:
                chunks.append(chunk)
    relayed = b"".join(chunks)
    assert relayed.startswith(b"event: message_start")
    assert b"event: error" not in relayed
    assert fake_anthropic.last.sent.startswith(relayed)
    served = fake_anthropic.last.reply
    assert served is not None
    assert result.usage.input_tokens == served.input_tokens  # read from message_start


async def test_truncated_stream(provider: AnthropicProvider, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_truncated(after=5)
    with pytest.raises(ApiError) as exc:
        await collect(provider, request())
    assert exc.value.status == 502

    fake_anthropic.reply_truncated(after=5)
    result = await relay(provider, messages(stream=True))
    with pytest.raises(ApiError) as exc:
        await drain(result)
    assert exc.value.status == 502


async def test_connection_reset_mid_stream(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_reset(after=3)
    with pytest.raises(ApiError) as exc:
        await collect(provider, request())
    assert exc.value.status == 502
    assert isinstance(exc.value.__cause__, aiohttp.ClientError)

    fake_anthropic.reply_reset(after=3)
    result = await relay(provider, messages(stream=True))
    with pytest.raises(ApiError) as exc:
        await drain(result)
    assert exc.value.status == 502
    assert "mid-stream" in exc.value.message


async def test_connection_reset_before_answer(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply_reset()
    with pytest.raises(ApiError) as exc:
        await relay(provider, messages())
    assert exc.value.status == 502
    assert isinstance(exc.value.__cause__, aiohttp.ClientError)


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    provider = AnthropicProvider("ant-down", config(base_url))
    await provider.start()
    try:
        with pytest.raises(ApiError) as exc:
            await collect(provider, request())
    finally:
        await provider.aclose()
    assert exc.value.status == 502
    assert "ant-down" in exc.value.message and "connection refused" in exc.value.message
    assert base_url not in exc.value.message
