"""Anthropic streams: recorded-shape fixtures -> decoder -> events -> Collector; the encoder's
bytes re-decoded, and fed to the official SDK's own stream accumulation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import anthropic
import httpx2
import orjson
import pytest

from meridian.errors import ApiError, MeridianError, Overloaded, RateLimited
from meridian.model import (
    BlockDelta,
    BlockStart,
    BlockStop,
    CitationDelta,
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
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    response_events,
)
from meridian.wire.anthropic import (
    StreamDecoder,
    StreamEncoder,
    UsageSniffer,
    render_response,
)
from meridian.wire.sse import SSEDecoder, SSEEvent

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
SIGNATURE = (
    "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+/Sf0Yhd8G6Fhaf9rWXlJqYI9gqm/aZ1Qbh7b/"
    "8cUz6YtHXqSnu0fFAKl+L4PxQ8UhP+1g=="
)
MODEL = "claude-sonnet-4-5-20250929"

EXPECTED: dict[str, Response] = {
    "text": Response(
        id="msg_01XFDUDYJgAACzvnptvVoYEL",
        model=MODEL,
        content=(TextBlock("Bonjour, ça va ? 🌤\nLine two."),),
        stop_reason="end_turn",
        usage=Usage(input_tokens=25, output_tokens=15),
    ),
    "tools": Response(
        id="msg_014p7gG3wDgGV9EUtLvnow3U",
        model=MODEL,
        content=(
            TextBlock("I will check both."),
            ToolUseBlock(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                {"city": "Paris", "unit": "celsius"},
            ),
            ToolUseBlock("toolu_01Bq5BN3UwAJKGH8m4aJ3HmS", "get_time", {"tz": "Europe/Paris"}),
            ToolUseBlock("toolu_01NoArgsNoArgsNoArgsNoArg", "list_lights", {}),
        ),
        stop_reason="tool_use",
        usage=Usage(input_tokens=12, output_tokens=96, cache_read_tokens=2048),
    ),
    "thinking": Response(
        id="msg_01HnEzGaFsn8FTYx5ri6tv8e",
        model=MODEL,
        content=(
            ThinkingBlock("The user wants 27 * 453.\n27 * 453 = 12231.", SIGNATURE),
            RedactedThinkingBlock(
                "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
            ),
            TextBlock("27 \u00d7 453 = 12,231."),  # a multiplication sign
        ),
        stop_reason="end_turn",
        usage=Usage(
            input_tokens=48, output_tokens=210, cache_creation_tokens=1500, reasoning_tokens=180
        ),
    ),
    "server_tools": Response(
        id="msg_01WebSearchWebSearchWeb1",
        model=MODEL,
        content=(TextBlock("It is sunny in Paris."),),
        stop_reason="end_turn",
        usage=Usage(input_tokens=2100, output_tokens=40),
    ),
}


def sse_events(raw: bytes, chunk: int = 17) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    for i in range(0, len(raw), chunk):
        out += decoder.feed(raw[i : i + chunk])
    return out + decoder.close()


def decode(raw: bytes) -> list[Event]:
    decoder = StreamDecoder()
    events: list[Event] = []
    for sse in sse_events(raw):
        events += decoder.feed(sse)
    return events + decoder.close()


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.sse").read_bytes()


def encode_all(events: Iterable[Event], model: str = "alias") -> bytes:
    encoder = StreamEncoder(model)
    return b"".join(encoder.feed(e) for e in events)


def sdk_final_message(body: bytes) -> anthropic.types.Message:
    """Serve ``body`` as an upstream response to the official SDK's streaming helper."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with (
        anthropic.Anthropic(
            api_key="k",
            base_url="http://meridian.test",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        ) as client,
        client.messages.stream(
            model="alias", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        return stream.get_final_message()


# ---------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_collects_to_the_right_response(name: str) -> None:
    assert Collector().feed_all(decode(fixture(name))) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_with_crlf_line_endings(name: str) -> None:
    raw = fixture(name).replace(b"\n", b"\r\n")
    assert Collector().feed_all(decode(raw)) == EXPECTED[name]


def test_decoder_events_in_order() -> None:
    events = decode(fixture("tools"))
    assert isinstance(events[0], MessageStart) and isinstance(events[-1], MessageStop)
    assert events[-2] == MessageDelta(
        "tool_use", Usage(input_tokens=12, output_tokens=96, cache_read_tokens=2048)
    )
    starts = [e for e in events if isinstance(e, BlockStart)]
    assert [e.index for e in starts] == [0, 1, 2, 3]
    assert starts[1].block == ToolUseBlock("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {})
    pieces = [e.delta for e in events if isinstance(e, BlockDelta) and e.index == 1]
    assert pieces[0] == JsonDelta("")  # the first piece is empty, as the API sends it
    assert "".join(p.partial_json for p in pieces if isinstance(p, JsonDelta)) == (
        '{"city": "Paris", "unit": "celsius"}'
    )


def test_text_fixture_has_its_ping() -> None:
    assert Ping() in decode(fixture("text"))


def test_server_tool_blocks_are_dropped_with_their_deltas() -> None:
    events = decode(fixture("server_tools"))
    assert {e.index for e in events if isinstance(e, BlockStart | BlockDelta | BlockStop)} == {2}


def test_error_mid_stream_raises_after_the_events_before_it() -> None:
    decoder = StreamDecoder()
    seen: list[Event] = []
    with pytest.raises(Overloaded) as info:
        for sse in sse_events(fixture("error_midstream")):
            seen += decoder.feed(sse)
    assert info.value.message == "Overloaded"
    assert info.value.status == 529
    assert seen[-1] == BlockDelta(0, TextDelta("Once upon"))


def test_truncated_stream() -> None:
    decoder = SSEDecoder()
    raw = fixture("truncated")
    events = decoder.feed(raw)
    assert decoder.pending  # the cut-off event is held, then dropped
    assert decoder.close() == []
    stream = StreamDecoder()
    canonical = [e for sse in events for e in stream.feed(sse)]
    assert canonical[-1] == BlockDelta(0, TextDelta("The first"))
    with pytest.raises(ApiError) as info:
        stream.close()
    assert info.value.status == 502
    assert "before message_stop" in info.value.message


@pytest.mark.parametrize(
    ("error_type", "cls", "status"),
    [
        ("overloaded_error", Overloaded, 529),
        ("rate_limit_error", RateLimited, 429),
        ("api_error", ApiError, 500),
        ("timeout_error", MeridianError, 504),
        ("invalid_request_error", MeridianError, 400),
        ("authentication_error", ApiError, 502),  # meridian's upstream key, not the caller's
        ("brand_new_error", ApiError, 500),
    ],
)
def test_error_event_types(error_type: str, cls: type[MeridianError], status: int) -> None:
    data = {"type": "error", "error": {"type": error_type, "message": "boom"}}
    with pytest.raises(cls) as info:
        StreamDecoder().feed(SSEEvent("error", json.dumps(data), b""))
    assert info.value.status == status
    assert "boom" in info.value.message


def test_feed_json_takes_sdk_event_dicts() -> None:
    """The Claude Agent SDK hands over raw stream-event dicts: same result as the bytes."""
    decoder = StreamDecoder()
    events: list[Event] = []
    for sse in sse_events(fixture("thinking")):
        events += decoder.feed_json(json.loads(sse.data))
    assert events == decode(fixture("thinking"))
    assert decoder.close() == []


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1, 2]",
        '{"type": "content_block_delta"}',
        '{"type": "message_start", "message": 3}',
    ],
)
def test_malformed_events_raise_api_error(data: str) -> None:
    with pytest.raises(ApiError) as info:
        StreamDecoder().feed(SSEEvent("content_block_delta", data, b""))
    assert info.value.status == 502


def test_event_name_supplies_a_missing_type() -> None:
    [event] = StreamDecoder().feed(SSEEvent("ping", "{}", b""))
    assert event == Ping()


# ---------------------------------------------------------------------------- encoder


def redecode(raw: bytes) -> list[Event]:
    events = decode(raw)
    for sse in sse_events(raw):
        # PROTOCOL: every event is named, and its JSON "type" equals the name.
        assert sse.event == orjson.loads(sse.data)["type"]
    return events


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_encoder_output_redecodes_to_the_input(name: str) -> None:
    events = decode(fixture(name))
    again = redecode(encode_all(events, model=MODEL))
    assert again == [_normalised(e, events, name) for e in events]


def _normalised(event: Event, events: list[Event], name: str) -> Event:
    # Output indexes are renumbered from 0 (server_tools' lone text block is index 2
    # upstream), and message_delta carries the cumulative usage, message_start's included.
    if name == "server_tools" and isinstance(event, BlockStart | BlockDelta | BlockStop):
        return replace(event, index=event.index - 2)
    if isinstance(event, MessageDelta):
        start = events[0]
        assert isinstance(start, MessageStart)
        return replace(event, usage=start.usage.merge(event.usage))
    return event


@pytest.mark.parametrize("name", ["text", "tools", "thinking"])
def test_the_official_sdk_accepts_the_encoder_output(name: str) -> None:
    expected = EXPECTED[name]
    message = sdk_final_message(encode_all(decode(fixture(name))))
    rendered = render_response(replace(expected, model="alias"))
    got = message.model_dump(exclude_none=True)
    assert got.pop("content") == [
        {k: v for k, v in b.items() if v is not None} for b in rendered.pop("content")
    ]
    assert got == {k: v for k, v in rendered.items() if v is not None}


def test_the_official_sdk_raises_on_the_error_event() -> None:
    encoder = StreamEncoder("alias")
    raw = b"".join(encoder.feed(e) for e in decode(fixture("text"))[:4])
    raw += encoder.error(Overloaded("Overloaded"), "req_123")
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk_final_message(raw)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": "req_123",
    }


def test_interleaved_blocks_are_serialised() -> None:
    """Two tool calls streamed at once (as some OpenAI upstreams do) come out one at a time,
    contiguous from 0, with nothing lost or repeated."""
    events: list[Event] = [
        MessageStart("chatcmpl-1", "gpt", Usage(input_tokens=3)),
        BlockStart(5, ToolUseBlock("call_a", "f", {})),
        BlockStart(9, ToolUseBlock("call_b", "g", {})),
        BlockDelta(9, JsonDelta('{"y":')),
        BlockDelta(5, JsonDelta('{"x":')),
        Ping(),
        BlockDelta(9, JsonDelta("2}")),
        BlockStop(9),
        BlockDelta(5, JsonDelta("1}")),
        BlockStart(11, TextBlock("")),
        BlockDelta(11, TextDelta("done")),
        BlockStop(5),
        MessageDelta("tool_use", Usage(output_tokens=9)),
        MessageStop(),
    ]
    raw = encode_all(events)
    open_blocks: set[int] = set()
    order: list[tuple[str, int]] = []
    for sse in sse_events(raw):
        data = orjson.loads(sse.data)
        if data["type"] == "content_block_start":
            assert not open_blocks, "a block started while another was open"
            open_blocks.add(data["index"])
            order.append(("start", data["index"]))
        elif data["type"] == "content_block_delta":
            assert data["index"] in open_blocks
        elif data["type"] == "content_block_stop":
            open_blocks.remove(data["index"])
    assert not open_blocks
    assert order == [("start", 0), ("start", 1), ("start", 2)]
    message = sdk_final_message(raw)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "tool_use", "id": "call_a", "name": "f", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_b", "name": "g", "input": {"y": 2}},
        {"type": "text", "text": "done"},
    ]
    assert message.id == "msg_chatcmpl-1"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 9)


def test_signature_pieces_become_one_signature_delta() -> None:
    raw = encode_all(
        [
            MessageStart("msg_1", "m"),
            BlockStart(0, ThinkingBlock("", "")),
            BlockDelta(0, ThinkingDelta("a")),
            BlockDelta(0, SignatureDelta("AAA")),
            BlockDelta(0, ThinkingDelta("b")),
            BlockDelta(0, SignatureDelta("BBB")),
            BlockStop(0),
            MessageDelta("end_turn"),
            MessageStop(),
        ]
    )
    deltas = [
        orjson.loads(s.data)["delta"] for s in sse_events(raw) if s.event == "content_block_delta"
    ]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "a"},
        {"type": "thinking_delta", "thinking": "b"},
        {"type": "signature_delta", "signature": "AAABBB"},
    ]
    assert sdk_final_message(raw).content[0].model_dump() == {
        "type": "thinking",
        "thinking": "ab",
        "signature": "AAABBB",
    }


def test_a_whole_response_as_a_stream() -> None:
    """`response_events` (the non-streaming path turned into a stream) through the encoder:
    blocks that start with content still reach the SDK, citations included."""
    citation = {
        "type": "char_location",
        "cited_text": "sky",
        "document_index": 0,
        "document_title": None,
        "start_char_index": 0,
        "end_char_index": 3,
    }
    response = Response(
        id="abc",
        model="m",
        content=(
            TextBlock("The sky is blue.", citations=(citation,)),
            ToolUseBlock("t1", "paint", {"colour": "blue", "n": [1, 2]}),
            ThinkingBlock("hm", SIGNATURE),
        ),
        stop_reason="tool_use",
        usage=Usage(input_tokens=7, output_tokens=11, cache_read_tokens=4),
    )
    events = response_events(response)
    assert CitationDelta(citation) in [e.delta for e in events if isinstance(e, BlockDelta)]
    raw = encode_all(events, model="m")
    assert Collector().feed_all(redecode(raw)) == replace(response, id="msg_abc")
    got = sdk_final_message(raw).model_dump(exclude_none=True)
    assert got["content"][0]["citations"] == [{k: v for k, v in citation.items() if v is not None}]
    assert got["content"][1]["input"] == {"colour": "blue", "n": [1, 2]}
    assert got["usage"]["cache_read_input_tokens"] == 4


def test_message_start_and_delta_shapes() -> None:
    encoder = StreamEncoder("my-alias")
    start = orjson.loads(
        sse_events(
            encoder.feed(
                MessageStart("x1", "upstream", Usage(input_tokens=5, cache_creation_tokens=2))
            )
        )[0].data
    )
    assert start == {
        "type": "message_start",
        "message": {
            "id": "msg_x1",
            "type": "message",
            "role": "assistant",
            "model": "my-alias",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 5,
                "cache_creation_input_tokens": 2,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        },
    }
    delta = orjson.loads(
        sse_events(encoder.feed(MessageDelta("stop_sequence", Usage(output_tokens=3), "END")))[
            0
        ].data
    )
    assert delta == {
        "type": "message_delta",
        "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 2,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
        },
    }
    assert encoder.feed(Ping()) == b'event: ping\ndata: {"type":"ping"}\n\n'


# ---------------------------------------------------------------------------- sniffer


def sniff(raw: bytes) -> UsageSniffer:
    sniffer = UsageSniffer()
    for sse in sse_events(raw):
        sniffer.feed(sse)
    return sniffer


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sniffer_reads_usage(name: str) -> None:
    sniffer = sniff(fixture(name))
    assert sniffer.usage == EXPECTED[name].usage
    assert sniffer.finished and sniffer.first_token and sniffer.error is None


def test_sniffer_on_error_and_truncation() -> None:
    sniffer = sniff(fixture("error_midstream"))
    assert isinstance(sniffer.error, Overloaded)
    assert not sniffer.finished
    assert sniffer.usage == Usage(input_tokens=9, output_tokens=1)
    truncated = sniff(fixture("truncated"))
    assert (truncated.finished, truncated.error, truncated.first_token) == (False, None, True)


def test_sniffer_before_the_first_delta() -> None:
    sniffer = UsageSniffer()
    for sse in sse_events(fixture("text"))[:3]:  # message_start, block start, ping
        sniffer.feed(sse)
    assert not sniffer.first_token
    assert sniffer.usage.input_tokens == 25
