"""Responses streams: canonical events -> StreamEncoder -> the official openai SDK's own
``responses.stream`` machinery (its SSE decoder, event models and ``ResponseStreamState``),
and upstream fixtures -> StreamDecoder / UsageSniffer."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, get_args

import httpx2
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from meridian.errors import ApiError, InvalidRequest, MeridianError, Overloaded, RateLimited
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
    RedactedThinkingBlock,
    Response,
    SignatureDelta,
    StopReason,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    response_events,
)
from meridian.wire.openai_responses import (
    REDACTED_PREFIX,
    StreamDecoder,
    StreamEncoder,
    UsageSniffer,
    parse_request,
    render_response,
    request_echo,
)
from meridian.wire.sse import KEEPALIVE_COMMENT, SSEDecoder, SSEEvent

FIXTURES = Path(__file__).parent / "fixtures" / "openai_responses"
CREATED = 1755427000
# The SDK's stream event models by their `type` (its union has no pydantic discriminator).
EVENTS: dict[str, type[pydantic.BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(ResponseStreamEvent)[0])
}


def encode(events: Sequence[Event], body: dict[str, Any] | None = None) -> bytes:
    encoder = StreamEncoder(model="alias", created_at=CREATED, echo=request_echo(body or {}))
    return b"".join(encoder.feed(e) for e in events)


def sse_events(raw: bytes, split: int = 7) -> Iterator[SSEEvent]:
    decoder = SSEDecoder()
    for i in range(0, len(raw), split):
        yield from decoder.feed(raw[i : i + split])
    yield from decoder.close()


def frames(data: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    return [(e.event, json.loads(e.data)) for e in sse_events(data, 100_000)]


def assert_well_formed(data: bytes) -> None:
    """Every event named on its ``event:`` line as in its ``type``, numbered 0..n-1, and
    valid (strictly) as one of the SDK's stream event models."""
    numbers = []
    for name, body in frames(data):
        assert name == body["type"]
        numbers.append(body["sequence_number"])
        EVENTS[body["type"]].model_validate(body, strict=True)
    assert numbers == list(range(len(numbers)))


def sdk_stream(data: bytes, split: int = 11, **kwargs: Any) -> tuple[Any, list[Any]]:
    """``data`` through ``client.responses.stream``; returns (the final response, or None
    when the stream did not complete, and the SDK's events)."""

    def body() -> Iterator[bytes]:
        for i in range(0, len(data), split):
            yield data[i : i + split]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    http = httpx2.Client(transport=httpx2.MockTransport(handler), timeout=5)
    kwargs.setdefault("input", "hi")
    with (
        openai.OpenAI(
            api_key="k", base_url="http://gw.test/v1", http_client=http, max_retries=0
        ) as client,
        client.responses.stream(model="alias", **kwargs) as stream,
    ):
        seen = list(stream)
        if not any(e.type == "response.completed" for e in seen):
            return None, seen
        return stream.get_final_response(), seen


def tool_events(stop: StopReason = "tool_use") -> list[Event]:
    """Text, then parallel calls: one with its arguments split across deltas (the first
    piece empty), one whose input came whole with its start, one with no input at all."""
    events: list[Event] = [MessageStart("msg_2", "m", Usage(input_tokens=50))]
    events += [
        BlockStart(0, TextBlock("")),
        BlockDelta(0, TextDelta("Let me check.")),
        BlockStop(0),
    ]
    events += [BlockStart(1, ToolUseBlock("toolu_a", "get_weather", {}))]
    events += [BlockDelta(1, JsonDelta(p)) for p in ["", '{"ci', 'ty": "Par', 'is"', "}"]]
    events += [BlockStop(1), BlockStart(2, ToolUseBlock("toolu_b", "get_time", {"tz": "CET"}))]
    events += [BlockStop(2), BlockStart(3, ToolUseBlock("toolu_c", "ping", {})), BlockStop(3)]
    events += [MessageDelta(stop, Usage(output_tokens=40)), MessageStop()]
    return events


def thinking_events() -> list[Event]:
    return [
        MessageStart("msg_3", "m", Usage(input_tokens=20, cache_read_tokens=1000)),
        BlockStart(0, ThinkingBlock("", "")),
        BlockDelta(0, ThinkingDelta("step one, ")),
        BlockDelta(0, ThinkingDelta("step two")),
        BlockDelta(0, SignatureDelta("EqQBCkgIARAB")),
        BlockDelta(0, SignatureDelta("GAIiQN==")),
        BlockStop(0),
        BlockStart(1, RedactedThinkingBlock("cmVkYWN0ZWQ=")),
        BlockStop(1),
        BlockStart(2, TextBlock("")),
        BlockDelta(2, TextDelta("Answer")),
        BlockStop(2),
        MessageDelta(
            "end_turn", Usage(output_tokens=90, reasoning_tokens=60, cache_creation_tokens=7)
        ),
        MessageStop(),
    ]


TEXT = Response(
    "msg_01XY", "claude-x", (TextBlock("Hello there"),), "end_turn", Usage(10, 3, 100, 20)
)
MULTI = Response(
    "msg_02", "m", (TextBlock("First part. "), TextBlock("Second part.")), "end_turn", Usage(5, 4)
)


# ---------------------------------------------------------------------------- encoder + SDK


def test_text_through_the_sdk() -> None:
    data = encode(response_events(TEXT))
    assert_well_formed(data)
    final, seen = sdk_stream(data)
    assert (final.id, final.object, final.model, final.status) == (
        "resp_msg_01XY",
        "response",
        "alias",
        "completed",
    )
    assert final.output_text == "Hello there"
    assert [o.type for o in final.output] == ["message"]
    assert final.output[0].status == "completed"
    assert final.usage.input_tokens == 130  # all input tokens, cache reads and writes included
    assert final.usage.input_tokens_details.cached_tokens == 100
    assert final.usage.input_tokens_details.cache_write_tokens == 20
    assert (final.usage.output_tokens, final.usage.total_tokens) == (3, 133)
    assert [e.type for e in seen] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    delta = next(e for e in seen if e.type == "response.output_text.delta")
    assert delta.snapshot == "Hello there"


def test_multi_part_text_is_one_message() -> None:
    final, seen = sdk_stream(encode(response_events(MULTI)))
    assert final.output_text == "First part. Second part."
    (message,) = final.output
    assert [c.text for c in message.content] == ["First part. ", "Second part."]
    added = [e.content_index for e in seen if e.type == "response.content_part.added"]
    assert added == [0, 1]


def test_parallel_function_calls_through_the_sdk() -> None:
    tools = [
        {"type": "function", "name": n, "parameters": {"type": "object"}, "strict": True}
        for n in ("get_weather", "get_time", "ping")
    ]
    data = encode(tool_events())
    assert_well_formed(data)
    final, seen = sdk_stream(data, tools=tools)
    assert final.output_text == "Let me check."
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments, c.status) for c in calls] == [
        ("toolu_a", "get_weather", '{"city": "Paris"}', "completed"),
        ("toolu_b", "get_time", '{"tz":"CET"}', "completed"),
        ("toolu_c", "ping", "{}", "completed"),  # no input at all is still valid JSON
    ]
    # The SDK parses arguments of strict tools: each one is whole, valid JSON.
    assert [c.parsed_arguments for c in calls] == [{"city": "Paris"}, {"tz": "CET"}, {}]
    snapshots = [e.snapshot for e in seen if e.type == "response.function_call_arguments.delta"]
    assert snapshots[:4] == ['{"ci', '{"city": "Par', '{"city": "Paris"', '{"city": "Paris"}']
    done = [(e.output_index, e.arguments) for e in seen if e.type.endswith("arguments.done")]
    assert done == [(1, '{"city": "Paris"}'), (2, '{"tz":"CET"}'), (3, "{}")]
    assert len({c.id for c in calls}) == 3


def test_reasoning_through_the_sdk() -> None:
    data = encode(thinking_events())
    assert_well_formed(data)
    final, seen = sdk_stream(data)
    reasoning, redacted, message = final.output
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == ["step one, step two"]
    assert reasoning.encrypted_content == "EqQBCkgIARABGAIiQN=="  # the whole signature, joined
    assert (redacted.summary, redacted.encrypted_content) == ([], REDACTED_PREFIX + "cmVkYWN0ZWQ=")
    assert message.content[0].text == "Answer"
    assert final.usage.output_tokens_details.reasoning_tokens == 60
    assert final.usage.input_tokens == 1027
    deltas = [e.delta for e in seen if e.type == "response.reasoning_summary_text.delta"]
    assert deltas == ["step one, ", "step two"]


def test_reasoning_and_calls_round_trip_as_the_next_input() -> None:
    """What a Responses client gets back is valid input for the next turn, and meridian
    reads it back into the blocks it came from: signatures byte for byte, call ids kept."""
    events = [
        *thinking_events()[:-2],
        BlockStart(3, ToolUseBlock("toolu_9", "lookup", {})),
        BlockDelta(3, JsonDelta('{"q": "x"}')),
        BlockStop(3),
        MessageDelta("tool_use", Usage(output_tokens=9)),
        MessageStop(),
    ]
    final, _ = sdk_stream(encode(events))
    history = [{"role": "user", "content": "hi"}]
    history += [item.model_dump(exclude_none=True) for item in final.output]
    history += [{"type": "function_call_output", "call_id": "toolu_9", "output": "42"}]
    request = parse_request({"model": "alias", "input": history})
    user, assistant, results = request.messages
    assert user.content == (TextBlock("hi"),)
    assert assistant.content == (
        ThinkingBlock("step one, step two", "EqQBCkgIARABGAIiQN=="),
        RedactedThinkingBlock("cmVkYWN0ZWQ="),
        TextBlock("Answer"),
        ToolUseBlock("toolu_9", "lookup", {"q": "x"}),
    )
    assert results.content == (ToolResultBlock("toolu_9", (TextBlock("42"),)),)


@pytest.mark.parametrize(
    ("stop", "reason"), [("max_tokens", "max_output_tokens"), ("refusal", "content_filter")]
)
def test_incomplete_through_the_sdk(stop: StopReason, reason: str) -> None:
    events = response_events(
        Response("msg_4", "m", (TextBlock("Once upon a"),), stop, Usage(3, 16))
    )
    data = encode(events, {"max_output_tokens": 16})
    assert_well_formed(data)
    final, seen = sdk_stream(data)
    assert final is None  # the SDK's get_final_response() waits for response.completed
    last = seen[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details.reason == reason
    assert last.response.max_output_tokens == 16
    assert last.response.output[0].status == "incomplete"
    assert last.response.output_text == "Once upon a"
    assert last.response.usage.output_tokens == 16


def test_mid_stream_error_makes_the_sdk_raise() -> None:
    encoder = StreamEncoder(model="alias", created_at=CREATED)
    data = encoder.feed(MessageStart("m5", "m")) + encoder.feed(BlockStart(0, TextBlock("")))
    data += encoder.feed(BlockDelta(0, TextDelta("part")))
    err = RateLimited("subscription window used up", should_retry=False, code="insufficient_quota")
    tail = encoder.error(err)
    assert_well_formed(data + tail)
    (error_name, error), (failed_name, failed) = frames(tail)
    assert (error_name, error["type"], error["sequence_number"]) == ("error", "error", 5)
    assert (error["code"], error["message"], error["param"]) == (
        "insufficient_quota",
        "subscription window used up",
        None,
    )
    assert failed_name == "response.failed"
    response = failed["response"]
    assert (response["id"], response["status"]) == ("resp_m5", "failed")
    assert response["error"]["code"] == "rate_limit_exceeded"
    assert response["error"]["message"] == "subscription window used up"
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "part"
    with pytest.raises(openai.APIError, match="subscription window used up") as info:
        sdk_stream(data + tail)
    assert info.value.body == {
        "message": "subscription window used up",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert encoder.feed(MessageStop()) == b""  # nothing after the end
    assert encoder.error(err) == b""


def test_error_continues_a_relayed_stream() -> None:
    """A pass-through that fails midway: the surface's error events continue the upstream's
    numbering under its response id (read by the sniffer), so the SDK reads one stream."""
    raw = (FIXTURES / "truncated.sse").read_bytes()
    sniffer = UsageSniffer()
    for event in sse_events(raw):
        sniffer.feed(event)
    assert not sniffer.finished
    assert sniffer.response_id is not None and sniffer.sequence_number is not None
    encoder = StreamEncoder(
        model="alias",
        created_at=CREATED,
        response_id=sniffer.response_id,
        sequence_start=sniffer.sequence_number + 1,
    )
    tail = encoder.error(ApiError("provider `openai`: the upstream connection was reset"))
    assert_well_formed(raw + tail)
    assert frames(tail)[1][1]["response"]["id"] == sniffer.response_id
    with pytest.raises(openai.APIError, match="connection was reset"):
        sdk_stream(raw + tail)


def test_keepalive_is_a_comment_the_sdk_skips() -> None:
    events = response_events(TEXT)
    events.insert(3, Ping())
    data = encode(events)
    assert data.count(KEEPALIVE_COMMENT) == 1
    final, _ = sdk_stream(data)
    assert final.output_text == "Hello there"


def test_echo_and_structured_output_through_the_sdk() -> None:
    class Answer(pydantic.BaseModel):
        city: str
        celsius: int

    body = {
        "model": "alias",
        "instructions": "Be terse.",
        "max_output_tokens": 200,
        "parallel_tool_calls": False,
        "tool_choice": "required",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "metadata": {"conversation": "kitchen"},
        "reasoning": {"effort": "low"},
        "temperature": 0.2,
        "user": "u-1",
    }
    answer = '{"city": "Paris", "celsius": 24}'
    events = response_events(Response("msg_6", "m", (TextBlock(answer),), "end_turn", Usage(1, 2)))
    final, _ = sdk_stream(encode(events, body), text_format=Answer)
    assert final.output_parsed == Answer(city="Paris", celsius=24)
    assert (final.instructions, final.max_output_tokens, final.parallel_tool_calls) == (
        "Be terse.",
        200,
        False,
    )
    assert (final.tool_choice, final.tools[0].name, final.tools[0].strict) == (
        "required",
        "f",
        None,
    )
    assert (final.metadata, final.temperature, final.user) == (
        {"conversation": "kitchen"},
        0.2,
        "u-1",
    )
    assert final.reasoning.effort == "low"
    assert (final.model_extra or {}).get("store") is False  # never stored, whatever was asked


CANONICAL = [
    TEXT,
    MULTI,
    Collector().feed_all(tool_events()),
    Collector().feed_all(thinking_events()),
    Response("msg_7", "m", (TextBlock("cut"),), "max_tokens", Usage(1, 1)),
    Response("msg_8", "m", (), "end_turn", Usage(1, 0)),
]


@pytest.mark.parametrize("response", CANONICAL, ids=lambda r: r.id)
def test_streamed_and_collected_answers_agree(response: Response) -> None:
    """The terminal event's response object is what `render_response` gives for the same
    answer: ids, items, status and usage alike, so streaming never changes the answer.
    (Arguments are compared as JSON: a stream passes its upstream's JSON text on as is.)"""

    def normal(body: dict[str, Any]) -> dict[str, Any]:
        for item in body["output"]:
            if item["type"] == "function_call":
                item["arguments"] = json.loads(item["arguments"])
        return body

    body = {"instructions": "x", "tools": [{"type": "function", "name": "f"}]}
    final = frames(encode(response_events(response), body))[-1][1]["response"]
    rendered = render_response(response, model="alias", created_at=CREATED, echo=request_echo(body))
    assert normal(final) == normal(rendered)


def test_exact_bytes_of_a_short_answer() -> None:
    """The wire, byte for byte, for the first events of a text answer."""
    data = encode(response_events(TEXT))
    head = data.split(b"\n\n")
    assert head[0].startswith(
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
        b'"response":{"id":"resp_msg_01XY","object":"response","created_at":1755427000,'
        b'"status":"in_progress","background":false,"error":null,"incomplete_details":null,'
    )
    assert head[2] == (
        b"event: response.output_item.added\n"
        b'data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,'
        b'"item":{"id":"msg_msg_01XY_0","type":"message","status":"in_progress","content":[],'
        b'"role":"assistant"}}'
    )
    assert head[4] == (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","sequence_number":4,'
        b'"item_id":"msg_msg_01XY_0","output_index":0,"content_index":0,'
        b'"delta":"Hello there","logprobs":[]}'
    )


def test_a_text_block_never_stopped_is_still_finished() -> None:
    events = [e for e in response_events(TEXT) if not isinstance(e, BlockStop)]
    data = encode(events)
    assert_well_formed(data)
    types = [name for name, _ in frames(data)]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final, _ = sdk_stream(data)
    assert final.output_text == "Hello there"


def test_completed_at_comes_from_the_clock() -> None:
    encoder = StreamEncoder(model="alias", created_at=CREATED, clock=lambda: CREATED + 7.9)
    data = b"".join(encoder.feed(e) for e in response_events(TEXT))
    responses = [body["response"] for _, body in frames(data) if "response" in body]
    assert [r.get("completed_at") for r in responses] == [None, None, CREATED + 7]


def test_an_encoder_without_message_start_still_opens_the_response() -> None:
    events = response_events(TEXT)[1:]
    final, _ = sdk_stream(encode(events))
    assert final.output_text == "Hello there"
    assert final.id.startswith("resp_")


# ---------------------------------------------------------------------------- decoder


def decode(name: str, split: int = 7) -> list[Event]:
    decoder = StreamDecoder(provider="up")
    events: list[Event] = []
    for sse in sse_events((FIXTURES / name).read_bytes(), split):
        events += decoder.feed(sse)
    return events + decoder.close()


def assert_grammar(events: Sequence[Event]) -> None:
    """MessageStart (BlockStart BlockDelta* BlockStop)* MessageDelta MessageStop, one block
    open at a time, indexes 0..n-1 in order."""
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


RID = "resp_68a1f0c2e4b88190a3d5c6f7e8091a2b"
MODEL = "gpt-5-mini-2025-08-07"
DECODED: list[tuple[str, Response]] = [
    (
        "text.sse",
        Response(
            RID,
            MODEL,
            (TextBlock("Hello! How can I help?"),),
            "end_turn",
            Usage(input_tokens=102, output_tokens=12, cache_read_tokens=2048),
        ),
    ),
    (
        "tools_parallel.sse",
        Response(
            RID,
            MODEL,
            (
                ToolUseBlock("call_Xq3mK8vR2pL7nW1z", "get_weather", {"city": "Paris"}),
                ToolUseBlock("call_Yb7nT2wQ9sD4kF6h", "get_weather", {"city": "Tokyo"}),
            ),
            "tool_use",
            Usage(input_tokens=310, output_tokens=46),
        ),
    ),
    (
        "reasoning.sse",
        Response(
            RID,
            MODEL,
            (
                ThinkingBlock(
                    "**Checking the sum**\n\nAdding.\n\n**Answer**\n\nIt is 4.",
                    "gAAAAABoofDEnc9xKsv3q0ZlYw==",
                ),
                TextBlock("2 + 2 = 4"),
            ),
            "end_turn",
            Usage(input_tokens=24, output_tokens=210, reasoning_tokens=192),
        ),
    ),
    (
        "incomplete.sse",
        Response(RID, MODEL, (TextBlock("Once upon a time, in"),), "max_tokens", Usage(12, 16)),
    ),
    (
        "web_search.sse",  # the built-in tool's items are skipped; the answer stays
        Response(RID, MODEL, (TextBlock("Sunny, 24 °C."),), "end_turn", Usage(8000, 20)),
    ),
]


@pytest.mark.parametrize("split", [1, 7, 100_000])
@pytest.mark.parametrize(("name", "expected"), DECODED, ids=[c[0] for c in DECODED])
def test_decoder_fixtures(name: str, expected: Response, split: int) -> None:
    events = decode(name, split)
    assert_grammar(events)
    assert Collector().feed_all(events) == expected


def test_decoder_streams_deltas_as_they_come() -> None:
    events = decode("tools_parallel.sse")
    pieces = [e.delta for e in events if isinstance(e, BlockDelta)]
    assert pieces == [JsonDelta(p) for p in ['{"ci', 'ty":"Pa', 'ris"}', '{"city"', ':"Tokyo"}']]


@pytest.mark.parametrize(("name", "expected"), DECODED, ids=[c[0] for c in DECODED])
def test_upstream_to_client_through_the_sdk(name: str, expected: Response) -> None:
    """A Responses upstream's stream, decoded and encoded again, is what the SDK sees."""
    data = encode(decode(name))
    assert_well_formed(data)
    final, seen = sdk_stream(data)
    if expected.stop_reason == "max_tokens":
        assert final is None
        final = seen[-1].response
    text = "".join(b.text for b in expected.content if isinstance(b, TextBlock))
    assert final.output_text == text
    calls = [
        (o.call_id, o.name, json.loads(o.arguments))
        for o in final.output
        if o.type == "function_call"
    ]
    assert calls == [
        (b.id, b.name, b.input) for b in expected.content if isinstance(b, ToolUseBlock)
    ]
    assert final.usage.input_tokens == expected.usage.total_input_tokens


@pytest.mark.parametrize(
    ("name", "error", "status", "words"),
    [
        ("failed.sse", RateLimited, 429, "Rate limit reached for gpt-5-mini"),
        ("error.sse", InvalidRequest, 400, "exceeds the context window"),
        ("truncated.sse", ApiError, 502, "ended before the response completed"),
    ],
)
def test_decoder_errors(name: str, error: type[MeridianError], status: int, words: str) -> None:
    decoder = StreamDecoder(provider="up")
    seen: list[Event] = []
    with pytest.raises(error) as info:
        for sse in sse_events((FIXTURES / name).read_bytes(), 13):
            seen += decoder.feed(sse)
        decoder.close()
    assert type(info.value) is error
    assert (info.value.status, info.value.message.startswith("up: ")) == (status, True)
    assert words in info.value.message
    assert isinstance(seen[0], MessageStart)


def item(index: int, value: dict[str, Any], done: bool = False) -> dict[str, Any]:
    kind = "response.output_item.done" if done else "response.output_item.added"
    return {"type": kind, "output_index": index, "item": value}


def fc(call_id: str, args: str = "") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": args}


def args(index: int, delta: str) -> dict[str, Any]:
    return {"type": "response.function_call_arguments.delta", "output_index": index, "delta": delta}


CREATED_EVENT = {"type": "response.created", "response": {"id": "resp_1", "model": "m"}}


def completed(**response: Any) -> dict[str, Any]:
    return {"type": "response.completed", "response": {"status": "completed", **response}}


def test_interleaved_items_are_held_back_not_split() -> None:
    decoder = StreamDecoder()
    events: list[Event] = []
    for data in [
        CREATED_EVENT,
        item(0, fc("c0")),
        args(0, '{"a":'),
        item(1, fc("c1")),
        args(1, '{"b": 2}'),  # buffered: call 0 is still open
        args(0, " 1}"),
        item(0, fc("c0", '{"a": 1}'), done=True),
        item(1, fc("c1", '{"b": 2}'), done=True),
        completed(),
    ]:
        events += decoder.feed_json(data)
    assert_grammar(events)
    assert Collector().feed_all(events).content == (
        ToolUseBlock("c0", "f", {"a": 1}),
        ToolUseBlock("c1", "f", {"b": 2}),
    )


def test_done_events_without_deltas_still_carry_everything() -> None:
    """Some servers send whole items and no deltas; some only the final object."""
    message = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "whole"}],
    }
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]}
    decoder = StreamDecoder()
    events: list[Event] = []
    for data in [
        CREATED_EVENT,
        item(0, reasoning, done=True),
        item(1, message, done=True),
        item(2, fc("c2", '{"x": 1}'), done=True),
        completed(),
    ]:
        events += decoder.feed_json(data)
    expected = (ThinkingBlock("r"), TextBlock("whole"), ToolUseBlock("c2", "f", {"x": 1}))
    assert_grammar(events)
    assert Collector().feed_all(events).content == expected

    only_final = StreamDecoder().feed_json(
        completed(output=[reasoning, message, fc("c2", '{"x": 1}')])
    )
    assert_grammar(only_final)
    assert Collector().feed_all(only_final).content == expected
    assert Collector().feed_all(only_final).stop_reason == "tool_use"


def test_deltas_without_their_added_events() -> None:
    """Servers that skip ``content_part.added`` (or a reasoning item's ``added``) still
    stream; a call's arguments without its ``added`` arrive whole with its ``done``."""
    decoder = StreamDecoder()
    events: list[Event] = []
    for data in [
        CREATED_EVENT,
        {
            "type": "response.reasoning_text.delta",
            "output_index": 0,
            "content_index": 0,
            "delta": "hm",
        },
        item(0, {"type": "reasoning", "summary": [], "encrypted_content": "sig"}, done=True),
        {
            "type": "response.output_text.delta",
            "output_index": 1,
            "content_index": 0,
            "delta": "Hi",
        },
        args(2, '{"lost":'),
        item(2, fc("c2", '{"x": 1}'), done=True),
        completed(),
    ]:
        events += decoder.feed_json(data)
    assert_grammar(events)
    assert Collector().feed_all(events).content == (
        ThinkingBlock("hm", "sig"),
        TextBlock("Hi"),
        ToolUseBlock("c2", "f", {"x": 1}),
    )


def test_refusal_part_is_a_refusal() -> None:
    decoder = StreamDecoder()
    events: list[Event] = decoder.feed_json(CREATED_EVENT)
    events += decoder.feed_json(item(0, {"type": "message", "content": []}))
    events += decoder.feed_json(
        {
            "type": "response.content_part.added",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "refusal", "refusal": ""},
        }
    )
    events += decoder.feed_json(
        {"type": "response.refusal.delta", "output_index": 0, "content_index": 0, "delta": "No."}
    )
    events += decoder.feed_json(completed())
    result = Collector().feed_all(events)
    assert (result.content, result.stop_reason) == ((TextBlock("No."),), "refusal")


def test_events_without_event_lines_decode_the_same() -> None:
    raw = (FIXTURES / "tools_parallel.sse").read_bytes()
    bare = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"event:"))
    decoder = StreamDecoder()
    events = [e for sse in sse_events(bare) for e in decoder.feed(sse)]
    assert Collector().feed_all(events) == DECODED[1][1]


@pytest.mark.parametrize(("data", "words"), [("{not json", "invalid JSON"), ("[1]", "non-object")])
def test_decoder_rejects_garbage(data: str, words: str) -> None:
    with pytest.raises(ApiError, match=words) as info:
        StreamDecoder().feed(SSEEvent(None, data, b""))
    assert info.value.status == 502


def test_decoder_rejects_malformed_events() -> None:
    with pytest.raises(ApiError, match=r"malformed response\.output_item\.added") as info:
        StreamDecoder().feed_json({"type": "response.output_item.added", "item": fc("c")})
    assert info.value.status == 502


def test_decoder_ignores_unknown_events_and_stops_after_the_end() -> None:
    decoder = StreamDecoder()
    events = decoder.feed_json(CREATED_EVENT)
    assert decoder.feed_json({"type": "response.audio.delta", "delta": "AAAA"}) == []
    events += decoder.feed_json(completed(usage={"input_tokens": 3, "output_tokens": 1}))
    assert events[-2:] == [MessageDelta("end_turn", Usage(3, 1)), MessageStop()]
    assert decoder.feed_json(CREATED_EVENT) == []
    assert decoder.close() == []


def test_failed_without_details_is_still_an_error() -> None:
    decoder = StreamDecoder(provider="up")
    decoder.feed_json(CREATED_EVENT)
    with pytest.raises(ApiError, match="upstream reported an error"):
        decoder.feed_json({"type": "response.failed", "response": {"status": "failed"}})
    with pytest.raises(Overloaded):
        StreamDecoder().feed_json({"type": "error", "code": "overloaded_error", "message": "busy"})
    # An upstream rejecting meridian's own key is never a 401 to the client.
    key_error = {"type": "error", "error": {"code": "invalid_api_key", "message": "bad key"}}
    with pytest.raises(ApiError, match="check its api_key") as info:
        StreamDecoder(provider="up").feed_json(key_error)
    assert info.value.status == 502


# ---------------------------------------------------------------------------- sniffer

SNIFFED: list[tuple[str, Usage, bool, type[MeridianError] | None]] = [
    ("text.sse", DECODED[0][1].usage, True, None),
    ("tools_parallel.sse", DECODED[1][1].usage, True, None),
    ("reasoning.sse", DECODED[2][1].usage, True, None),
    ("incomplete.sse", DECODED[3][1].usage, True, None),
    ("web_search.sse", DECODED[4][1].usage, True, None),
    ("failed.sse", Usage(), False, RateLimited),
    ("error.sse", Usage(), False, InvalidRequest),
    ("truncated.sse", Usage(), False, None),
]


@pytest.mark.parametrize("named", [True, False], ids=["event-lines", "data-only"])
@pytest.mark.parametrize(
    ("name", "usage", "finished", "error"), SNIFFED, ids=[c[0] for c in SNIFFED]
)
def test_sniffer(
    name: str, usage: Usage, finished: bool, error: type[MeridianError] | None, named: bool
) -> None:
    raw = (FIXTURES / name).read_bytes()
    if not named:
        raw = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"event:"))
    sniffer = UsageSniffer(provider="up")
    events = list(sse_events(raw))
    for event in events:
        sniffer.feed(event)
    assert (sniffer.usage, sniffer.finished) == (usage, finished)
    assert type(sniffer.error) is error if error else sniffer.error is None
    assert sniffer.response_id == RID
    assert sniffer.sequence_number == json.loads(events[-1].data)["sequence_number"]
    assert sniffer.first_token == (name not in ("error.sse",))


def test_sniffer_never_parses_deltas() -> None:
    sniffer = UsageSniffer()
    sniffer.feed(SSEEvent("response.output_text.delta", '{"sequence_number": 7, broken', b""))
    assert (sniffer.first_token, sniffer.sequence_number, sniffer.error) == (True, 7, None)
    sniffer.feed(SSEEvent("response.completed", "not json", b""))  # forwarded, not judged
    assert not sniffer.finished
