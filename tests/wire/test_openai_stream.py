"""OpenAI chunk streams: upstream fixtures -> StreamDecoder -> Collector, and canonical
events -> StreamEncoder -> the official openai SDK's own stream accumulation."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from meridian.errors import ApiError, InvalidRequest, MeridianError, RateLimited
from meridian.model import (
    BlockDelta,
    BlockStart,
    BlockStop,
    Collector,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    Ping,
    Response,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    response_events,
)
from meridian.wire.openai_chat import StreamDecoder, StreamEncoder, UsageSniffer
from meridian.wire.sse import KEEPALIVE_COMMENT, SSEDecoder, SSEEvent

FIXTURES = Path(__file__).parent / "fixtures" / "openai"


def sse_events(raw: bytes, split: int) -> Iterator[SSEEvent]:
    decoder = SSEDecoder()
    for i in range(0, len(raw), split):
        yield from decoder.feed(raw[i : i + split])
    yield from decoder.close()


def decode(name: str, split: int = 7) -> list[Event]:
    decoder = StreamDecoder(provider="up")
    events: list[Event] = []
    for sse in sse_events((FIXTURES / name).read_bytes(), split):
        events += decoder.feed(sse)
    return events + decoder.close()


def assert_grammar(events: Sequence[Event]) -> None:
    """MessageStart (BlockStart BlockDelta* BlockStop)* MessageDelta MessageStop, one block
    open at a time, block indexes 0..n-1 in order."""
    assert isinstance(events[0], MessageStart)
    assert isinstance(events[-2], MessageDelta)
    assert isinstance(events[-1], MessageStop)
    open_index: int | None = None
    next_index = 0
    for event in events[1:-2]:
        if isinstance(event, BlockStart):
            assert open_index is None, "a block opened while another was open"
            assert event.index == next_index
            open_index, next_index = event.index, next_index + 1
        elif isinstance(event, BlockDelta):
            assert event.index == open_index
        elif isinstance(event, BlockStop):
            assert event.index == open_index
            open_index = None
        else:
            pytest.fail(f"unexpected {event}")
    assert open_index is None


FIXTURE_CASES: list[tuple[str, Response]] = [
    (
        "text.sse",
        Response(
            "chatcmpl-BpQ3xK9vYt2mWcL8nR4sF1aDe7Hu",
            "gpt-4o-2024-08-06",
            (TextBlock("Hello! How can I help you today?"),),
            "end_turn",
            Usage(input_tokens=176, output_tokens=10, cache_read_tokens=1024),
        ),
    ),
    (
        "tools_sequential.sse",
        Response(
            "chatcmpl-BpQ3xK9vYt2mWcL8nR4sF1aDe7Hu",
            "gpt-4o-2024-08-06",
            (
                ToolUseBlock(
                    "call_kR2mV8pX1qL6wN3zT0yB5cH9",
                    "get_weather",
                    {"location": "Paris, France", "unit": "celsius"},
                ),
                ToolUseBlock("call_Zf7Yq2nL4pR8sT1vW6xK3mJ0", "get_time", {"tz": "Europe/Paris"}),
            ),
            "tool_use",
            Usage(input_tokens=85, output_tokens=46),
        ),
    ),
    (
        "tools_interleaved.sse",
        Response(
            "chatcmpl-7f3c2a",
            "qwen3-32b",
            (
                ToolUseBlock(
                    "chatcmpl-tool-a1", "set_light", {"room": "kitchen", "on": True, "level": 40}
                ),
                ToolUseBlock("chatcmpl-tool-b2", "set_light", {"room": "hall", "on": False}),
                ToolUseBlock("chatcmpl-tool-c3", "notify", {}),
            ),
            "tool_use",
            Usage(input_tokens=310, output_tokens=62),
        ),
    ),
    (
        "tools_no_index.sse",
        Response(
            "chatcmpl-7f3c2a",
            "qwen3-32b",
            (
                TextBlock("Checking both."),
                ToolUseBlock("call_1", "lookup", {"q": "a"}),
                ToolUseBlock("call_2", "lookup", {"q": "b"}),
            ),
            "tool_use",
            Usage(),
        ),
    ),
    (
        "reasoning.sse",
        Response(
            "0b8f6e1c-93a4-4c5e-8d1b-2f7a9c3e5d10",
            "deepseek-reasoner",
            # The multiplication sign is two UTF-8 bytes: split=1 cuts it in half.
            (ThinkingBlock("The user asks for 17*3. 17*3 = 51."), TextBlock("17 × 3 = **51**")),  # noqa: RUF001
            "end_turn",
            Usage(input_tokens=14, output_tokens=120, reasoning_tokens=104),
        ),
    ),
    (
        "openrouter_reasoning.sse",
        Response(
            "gen-1751530300-AbCdEfGhIjKlMnOp",
            "google/gemini-2.5-flash",
            (
                ThinkingBlock("Thinking about the sky."),
                TextBlock("It is blue because of Rayleigh scattering."),
            ),
            "end_turn",
            Usage(input_tokens=9, output_tokens=52, reasoning_tokens=40, cost_usd=0.0001327),
        ),
    ),
    (
        "ollama_no_done.sse",
        Response(
            "chatcmpl-512", "llama3.2:3b", (TextBlock("The answer is 4."),), "end_turn", Usage()
        ),
    ),
    (
        "ollama_tools.sse",
        Response(
            "chatcmpl-512",
            "llama3.2:3b",
            (
                ToolUseBlock(
                    "call_x8k2mq1z", "HassTurnOn", {"area": "kitchen", "domain": ["light"]}
                ),
            ),
            "tool_use",  # finish_reason "stop" after a tool call: still a tool_use turn
            Usage(input_tokens=512, output_tokens=24),
        ),
    ),
]


@pytest.mark.parametrize("split", [1, 7, 100_000])
@pytest.mark.parametrize(("name", "expected"), FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_decoder_fixtures(name: str, expected: Response, split: int) -> None:
    events = decode(name, split)
    assert_grammar(events)
    assert Collector().feed_all(events) == expected


def test_sequential_tool_calls_stream_live() -> None:
    """OpenAI's own order (one call after another) is forwarded piece by piece, not buffered."""
    events = decode("tools_sequential.sse")
    pieces = [
        e.delta for e in events if isinstance(e, BlockDelta) and isinstance(e.delta, JsonDelta)
    ]
    assert len(pieces) == 12 + 7  # as many pieces as the upstream sent


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        ("error_midstream.sse", ApiError, "The server had an error"),
        ("error_ratelimit.sse", RateLimited, "rate limited upstream"),
        ("truncated.sse", ApiError, "upstream stream ended before it finished"),
    ],
)
def test_decoder_errors(name: str, error: type[MeridianError], words: str) -> None:
    decoder = StreamDecoder(provider="up")
    seen: list[Event] = []
    with pytest.raises(error) as info:
        for sse in sse_events((FIXTURES / name).read_bytes(), 13):
            seen += decoder.feed(sse)
        decoder.close()
    assert type(info.value) is error
    assert words in info.value.message
    assert info.value.message.startswith("up: ")
    # What arrived before the error was forwarded as it came.
    assert isinstance(seen[0], MessageStart)
    assert any(isinstance(e, BlockDelta) for e in seen)
    if name == "truncated.sse":
        assert info.value.status == 502


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "model": "m", "object": "chat.completion.chunk", "choices": choices, **extra}


def call(
    index: int, args: str = "", id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id:
        out["id"], out["type"] = id, "function"
    if name:
        out["function"]["name"] = name
    return out


def test_text_after_a_complete_tool_call_closes_it() -> None:
    decoder = StreamDecoder()
    events: list[Event] = []
    for c in [
        chunk({"tool_calls": [call(0, '{"a":', "c0", "f")]}),
        chunk({"tool_calls": [call(0, "1}")]}),
        chunk({"content": "after"}),  # the call is complete JSON: close it, stream the text
    ]:
        events += decoder.feed_json(c)
    assert events[-3:] == [
        BlockStop(0),
        BlockStart(1, TextBlock("")),
        BlockDelta(1, TextDelta("after")),
    ]


def test_text_during_an_open_tool_call_is_buffered() -> None:
    decoder = StreamDecoder()
    events: list[Event] = []
    events += decoder.feed_json(chunk({"tool_calls": [call(0, '{"a":', "c0", "f")]}))
    assert decoder.feed_json(chunk({"content": "mid"})) == []
    events += decoder.feed_json(chunk({"tool_calls": [call(0, "1}")]}))
    events += decoder.feed_json(chunk({}, "tool_calls"))
    events += decoder.feed(SSEEvent(None, "[DONE]", b""))
    assert_grammar(events)
    assert Collector().feed_all(events).content == (
        ToolUseBlock("c0", "f", {"a": 1}),
        TextBlock("mid"),
    )


def test_tool_name_arriving_after_the_first_delta() -> None:
    decoder = StreamDecoder()
    events = decoder.feed_json(chunk({"tool_calls": [call(0, '{"x"', "c0")]}))
    assert [e for e in events if not isinstance(e, MessageStart)] == []
    events += decoder.feed_json(chunk({"tool_calls": [call(0, ": 2}", name="late")]}))
    events += decoder.feed_json(chunk({}, "tool_calls")) + decoder.close()
    assert Collector().feed_all(events).content == (ToolUseBlock("c0", "late", {"x": 2}),)


def test_done_without_finish_reason_still_ends() -> None:
    decoder = StreamDecoder()
    events = decoder.feed_json(chunk({"content": "x"})) + decoder.feed(
        SSEEvent(None, "[DONE]", b"")
    )
    assert events[-2:] == [MessageDelta("end_turn", Usage()), MessageStop()]
    assert decoder.feed_json(chunk({"content": "late"})) == []
    assert decoder.close() == []


@pytest.mark.parametrize(
    ("data", "words"),
    [("{not json", "invalid JSON"), ("[1, 2]", "non-object")],
)
def test_decoder_rejects_garbage(data: str, words: str) -> None:
    with pytest.raises(ApiError, match=words) as info:
        StreamDecoder().feed(SSEEvent(None, data, b""))
    assert info.value.status == 502


def test_plain_text_error_event() -> None:
    with pytest.raises(ApiError, match=r"^up: engine died$"):
        StreamDecoder(provider="up").feed(SSEEvent("error", "engine died", b""))


def test_empty_stream_is_an_error() -> None:
    with pytest.raises(ApiError, match="ended before it"):
        StreamDecoder().close()


def test_arguments_after_a_complete_call_are_an_error() -> None:
    decoder = StreamDecoder()
    decoder.feed_json(chunk({"tool_calls": [call(0, "{}", "c0", "f")]}))
    decoder.feed_json(chunk({"tool_calls": [call(1, "{}", "c1", "g")]}))  # closes call 0
    with pytest.raises(ApiError, match="after they were complete"):
        decoder.feed_json(chunk({"tool_calls": [call(0, ', "x": 1}')]}))


# ---------------------------------------------------------------------------- encoder + SDK


def encode(events: Sequence[Event], *, include_usage: bool = True) -> bytes:
    encoder = StreamEncoder(model="alias", include_usage=include_usage, created=1751530000)
    return b"".join(encoder.feed(e) for e in events)


def sdk_stream(data: bytes, split: int = 11) -> tuple[Any, list[Any]]:
    """Run ``data`` through the openai SDK's stream helper: its SSE decoder, its chunk
    model, and its accumulator (``ChatCompletionStreamState``). Returns the final
    completion and the SDK's events."""

    def body() -> Iterator[bytes]:
        for i in range(0, len(data), split):
            yield data[i : i + split]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    http = httpx2.Client(transport=httpx2.MockTransport(handler), timeout=5)
    with (
        openai.OpenAI(
            api_key="k", base_url="http://gw.test/v1", http_client=http, max_retries=0
        ) as client,
        client.chat.completions.stream(
            model="alias", messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        seen = list(stream)
        try:
            return stream.get_final_completion(), seen
        except openai.LengthFinishReasonError as exc:  # the helper's way to say "length"
            return exc.completion, seen


TEXT = Response(
    "msg_01XY", "claude-x", (TextBlock("Hello there"),), "end_turn", Usage(10, 3, 100, 20)
)


def test_encoder_text_through_the_sdk() -> None:
    final, seen = sdk_stream(encode(response_events(TEXT)))
    assert final.id == "chatcmpl-msg_01XY"
    assert (final.model, final.created) == ("alias", 1751530000)
    assert final.choices[0].message.content == "Hello there"
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (
        130,
        3,
        133,
    )
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 100
    assert [e.type for e in seen if e.type.startswith("content.")][-1] == "content.done"


def test_encoder_parallel_tools_through_the_sdk() -> None:
    events: list[Event] = [MessageStart("msg_2", "m", Usage(input_tokens=50))]
    events += [
        BlockStart(0, TextBlock("")),
        BlockDelta(0, TextDelta("Let me check.")),
        BlockStop(0),
    ]
    events += [BlockStart(1, ToolUseBlock("toolu_a", "get_weather", {}))]
    events += [BlockDelta(1, JsonDelta(p)) for p in ["", '{"loc', 'ation": "Par', 'is"', "}"]]
    events += [BlockStop(1), BlockStart(2, ToolUseBlock("toolu_b", "get_time", {}))]
    events += [BlockDelta(2, JsonDelta(p)) for p in ['{"tz":', ' "CET"}']]
    # A provider may put the whole input on BlockStart instead of deltas.
    events += [
        BlockStop(2),
        BlockStart(3, ToolUseBlock("toolu_c", "ping", {"n": [1, 2]})),
        BlockStop(3),
    ]
    events += [MessageDelta("tool_use", Usage(output_tokens=40)), MessageStop()]
    final, seen = sdk_stream(encode(events))
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    got = [(c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls]
    assert got == [
        ("toolu_a", "function", "get_weather", '{"location": "Paris"}'),
        ("toolu_b", "function", "get_time", '{"tz": "CET"}'),
        ("toolu_c", "function", "ping", '{"n":[1,2]}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    done = [
        (e.index, e.name, e.arguments)
        for e in seen
        if e.type == "tool_calls.function.arguments.done"
    ]
    assert done == [
        (0, "get_weather", '{"location": "Paris"}'),
        (1, "get_time", '{"tz": "CET"}'),
        (2, "ping", '{"n":[1,2]}'),
    ]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (50, 40)


def test_encoder_thinking_through_the_sdk() -> None:
    events: list[Event] = [
        MessageStart("msg_3", "m"),
        BlockStart(0, ThinkingBlock("", "")),
        BlockDelta(0, ThinkingDelta("step one, ")),
        BlockDelta(0, ThinkingDelta("step two")),
        BlockDelta(0, SignatureDelta("sig==")),
        BlockStop(0),
        BlockStart(1, TextBlock("")),
        BlockDelta(1, TextDelta("Answer")),
        BlockStop(1),
        MessageDelta("max_tokens", Usage(output_tokens=9, reasoning_tokens=6)),
        MessageStop(),
    ]
    final, _ = sdk_stream(encode(events))
    message = final.choices[0].message
    assert message.content == "Answer"
    assert (message.model_extra or {}).get("reasoning_content") == "step one, step two"
    assert final.choices[0].finish_reason == "length"
    assert final.usage is not None
    assert final.usage.completion_tokens_details is not None
    assert final.usage.completion_tokens_details.reasoning_tokens == 6


@pytest.mark.parametrize(("name", "expected"), FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_upstream_to_client_through_the_sdk(name: str, expected: Response) -> None:
    """An OpenAI-compatible upstream's stream, decoded and re-encoded, is what the SDK sees."""
    final, _ = sdk_stream(encode(decode(name)))
    message = final.choices[0].message
    text = "".join(b.text for b in expected.content if isinstance(b, TextBlock))
    assert message.content == text
    calls = [b for b in expected.content if isinstance(b, ToolUseBlock)]
    got = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or ()
    ]
    assert got == [(c.id, c.name, dict(c.input)) for c in calls]
    assert final.choices[0].finish_reason == ("tool_calls" if calls else "stop")
    assert final.usage is not None
    assert final.usage.prompt_tokens == expected.usage.total_input_tokens


def test_encoder_error_makes_the_sdk_raise() -> None:
    encoder = StreamEncoder(model="alias", include_usage=False, created=1)
    data = encoder.feed(MessageStart("m", "m")) + encoder.feed(BlockStart(0, TextBlock("")))
    data += encoder.feed(BlockDelta(0, TextDelta("part")))
    data += encoder.error(
        RateLimited("subscription window used up", should_retry=False, code="insufficient_quota")
    )
    with pytest.raises(openai.APIError, match="subscription window used up") as info:
        sdk_stream(data)
    assert info.value.body == {
        "message": "subscription window used up",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }


def frames(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n\n")
    return data[:-2].split(b"\n\n")


@pytest.mark.parametrize("include_usage", [True, False])
def test_encoder_bytes(include_usage: bool) -> None:
    """PROTOCOL.md, byte by byte: bare data lines, the same id/created/model everywhere,
    role first, keep-alives as comments, finish chunk with an empty delta, the usage
    chunk (only if asked) right before [DONE]."""
    events = response_events(TEXT)
    events.insert(2, Ping())
    data = encode(events, include_usage=include_usage)
    parts = frames(data)
    assert KEEPALIVE_COMMENT[:-2] in parts
    parts.remove(KEEPALIVE_COMMENT[:-2])
    assert parts[-1] == b"data: [DONE]"
    chunks = [json.loads(p.removeprefix(b"data: ")) for p in parts[:-1]]
    assert all(p.startswith(b"data: {") for p in parts[:-1])
    assert {(c["id"], c["object"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-msg_01XY", "chat.completion.chunk", 1751530000, "alias")
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if include_usage:
        *chunks, usage = chunks
        assert usage["choices"] == []
        assert usage["usage"]["prompt_tokens"] == 130
        assert all(c["usage"] is None for c in chunks)
    else:
        assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_encoder_always_ends_with_a_finish_reason() -> None:
    encoder = StreamEncoder(model="a", include_usage=False, created=1, id="chatcmpl-fixed")
    data = encoder.feed(BlockStart(0, TextBlock(""))) + encoder.feed(BlockDelta(0, TextDelta("x")))
    data += encoder.feed(BlockStop(0)) + encoder.feed(MessageStop())
    chunks = [json.loads(p.removeprefix(b"data: ")) for p in frames(data)[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["id"] for c in chunks} == {"chatcmpl-fixed"}


# ---------------------------------------------------------------------------- sniffer


@pytest.mark.parametrize(("name", "expected"), FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_usage_sniffer(name: str, expected: Response) -> None:
    sniffer = UsageSniffer()
    raw = (FIXTURES / name).read_bytes()
    events = list(sse_events(raw, 5))
    assert b"".join(e.raw for e in events) == raw.replace(b": OPENROUTER PROCESSING\n\n", b"")
    first_token_at = None
    for i, event in enumerate(events):
        sniffer.feed(event)
        if sniffer.first_token and first_token_at is None:
            first_token_at = i
    assert sniffer.usage == expected.usage
    assert sniffer.finished
    assert sniffer.error is None
    assert first_token_at is not None and first_token_at <= 2


def test_usage_sniffer_sees_errors_and_truncation() -> None:
    sniffer = UsageSniffer()
    for event in sse_events((FIXTURES / "error_ratelimit.sse").read_bytes(), 64):
        sniffer.feed(event)
    assert isinstance(sniffer.error, RateLimited)
    truncated = UsageSniffer()
    for event in sse_events((FIXTURES / "truncated.sse").read_bytes(), 64):
        truncated.feed(event)
    assert (truncated.finished, truncated.error, truncated.first_token) == (False, None, True)


def test_invalid_request_renders_param_in_stream_error() -> None:
    data = StreamEncoder(model="a", include_usage=True, created=1).error(
        InvalidRequest("bad", param="tools")
    )
    assert json.loads(frames(data)[0].removeprefix(b"data: ")) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "tools", "code": None}
    }
