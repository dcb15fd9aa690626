"""The SSE codec, table-driven, with the anthropic SDK's own decoder as a second referee."""

from __future__ import annotations

from pathlib import Path

import pytest
from anthropic._streaming import SSEDecoder as SDKDecoder

from meridian.wire.sse import KEEPALIVE_COMMENT, SSEDecoder, SSEEvent, encode

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"

# One logical stream: named events, a comment line, multi-line data, data without the
# optional space, non-ASCII text (multi-byte UTF-8), a bare `data` field.
LOGICAL = [
    ("event: message_start", 'data: {"a": 1}'),
    (": a comment inside an event", "event: ping", 'data: {"type": "ping"}'),
    ("data: first", "data:second", "data:  third"),
    ("event: content_block_delta", 'data: {"text": "héllo wörld 🎉"}'),
    ("data",),
]
EXPECTED = [
    ("message_start", '{"a": 1}'),
    ("ping", '{"type": "ping"}'),
    (None, "first\nsecond\n third"),
    ("content_block_delta", '{"text": "héllo wörld 🎉"}'),
    (None, ""),
]


def build(eol: str, events: list[tuple[str, ...]] = LOGICAL) -> bytes:
    return "".join(eol.join(lines) + eol + eol for lines in events).encode()


def mixed() -> bytes:
    # Each event uses a different terminator, including CR followed by CRLF.
    eols = ["\n", "\r\n", "\r", "\r\n", "\n"]
    return "".join(e.join(lines) + e + e for lines, e in zip(LOGICAL, eols, strict=True)).encode()


STREAMS = {
    "lf": build("\n"),
    "crlf": build("\r\n"),
    "cr": build("\r"),
    "mixed": mixed(),
    "cr-then-crlf": b"data: x\r\r\ndata: y\n\r\n",
}
STREAM_EXPECTED = {
    "lf": EXPECTED,
    "crlf": EXPECTED,
    "cr": EXPECTED,
    "mixed": EXPECTED,
    "cr-then-crlf": [(None, "x"), (None, "y")],
}


def pairs(events: list[SSEEvent]) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in events]


def decode_all(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out: list[SSEEvent] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out + decoder.close()


def sdk_pairs(stream: bytes) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in SDKDecoder().iter_bytes(iter([stream]))]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_whole_stream(name: str) -> None:
    events = decode_all(STREAMS[name])
    assert pairs(events) == STREAM_EXPECTED[name]
    # Every byte is accounted for: the raw events concatenate back to the input.
    assert b"".join(e.raw for e in events) == STREAMS[name]


@pytest.mark.parametrize("name", ["lf", "crlf", "mixed"])
def test_agrees_with_the_sdk_decoder(name: str) -> None:
    assert pairs(decode_all(STREAMS[name])) == sdk_pairs(STREAMS[name])


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_split_point(name: str) -> None:
    stream = STREAMS[name]
    whole = decode_all(stream)
    for i in range(len(stream) + 1):
        assert decode_all(stream[:i], stream[i:]) == whole, f"split at {i}: {stream[:i]!r}"


@pytest.mark.parametrize("name", ["crlf", "mixed", "cr-then-crlf"])
def test_every_pair_of_split_points(name: str) -> None:
    stream = STREAMS[name][:90]  # quadratic: a prefix holds every terminator kind
    whole = decode_all(stream)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert decode_all(stream[:i], stream[i:j], stream[j:]) == whole, (i, j)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_byte_at_a_time(name: str) -> None:
    stream = STREAMS[name]
    assert decode_all(*(stream[i : i + 1] for i in range(len(stream)))) == decode_all(stream)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.sse")), ids=lambda p: p.stem)
def test_recorded_fixtures_agree_with_the_sdk(path: Path) -> None:
    stream = path.read_bytes()
    if not stream.endswith(b"\n\n"):
        # The SDK dispatches an unterminated tail at EOF; the spec (and we) drop it.
        stream = stream[: stream.rindex(b"\n\n") + 2]
    assert pairs(decode_all(stream)) == sdk_pairs(stream)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (KEEPALIVE_COMMENT, []),
        (b": one\n: two\n\n", []),  # an event of only comments is not dispatched
        (b"event: ping\n\n", []),  # no data line: not dispatched (WHATWG)
        (b"id: 7\nretry: 100\n\n", []),
        (b"data: a\n\n\n\ndata: b\n\n", [(None, "a"), (None, "b")]),  # stray blank lines
        (b"event:\ndata: x\n\n", [(None, "x")]),  # an empty event name is the default
        (b"event: e\nunknown: field\ndata: x\n\n", [("e", "x")]),
        (b"data: a\ndata:\ndata: b\n\n", [(None, "a\n\nb")]),
        (b'data: {"k": "a:b"}\n\n', [(None, '{"k": "a:b"}')]),  # only the first colon splits
        (b"\xef\xbb\xbfdata: bom\n\n", [(None, "bom")]),  # a leading BOM is skipped
        (b"data: \xff\n\n", [(None, "\ufffd")]),  # invalid UTF-8 is replaced, not fatal
    ],
)
def test_cases(stream: bytes, expected: list[tuple[str | None, str]]) -> None:
    assert pairs(decode_all(stream)) == expected
    for i in range(len(stream) + 1):
        assert pairs(decode_all(stream[:i], stream[i:])) == expected


def test_truncated_tail_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert pairs(decoder.feed(b"data: a\n\ndata: b\n")) == [(None, "a")]
    assert decoder.pending
    assert decoder.close() == []
    assert not decoder.pending


def test_pending() -> None:
    decoder = SSEDecoder()
    states = [decoder.pending]
    decoder.feed(b"event: x")
    states.append(decoder.pending)
    decoder.feed(b"\ndata: y\n\n")
    states.append(decoder.pending)
    decoder.feed(b"\n\r\n")  # stray blank lines are not an event
    states.append(decoder.pending)
    assert states == [False, True, False, False]


def test_a_final_cr_waits_for_a_possible_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == []  # the second CR may begin a CRLF
    [event] = decoder.feed(b"\n")
    assert event.raw == b"data: a\r\r\n"
    decoder = SSEDecoder()
    decoder.feed(b"data: a\r\r")
    [event] = decoder.feed(b"data: b")  # it did not: the event was already complete
    assert (event.data, event.raw) == ("a", b"data: a\r\r")
    decoder = SSEDecoder()
    decoder.feed(b"data: a\r\r")
    [event] = decoder.close()  # at EOF it is complete as well
    assert event.raw == b"data: a\r\r"


def test_utf8_split_inside_a_character() -> None:
    stream = "data: 🎉é\n\n".encode()
    for i in range(len(stream) + 1):
        assert pairs(decode_all(stream[:i], stream[i:])) == [(None, "🎉é")]


def test_long_event_in_small_chunks() -> None:
    payload = "x" * 100_000
    stream = f"event: big\ndata: {payload}\n\n".encode()
    [event] = decode_all(*(stream[i : i + 7] for i in range(0, len(stream), 7)))
    assert (event.event, event.data, event.raw) == ("big", payload, stream)


@pytest.mark.parametrize(
    ("event", "data", "expected"),
    [
        ("ping", '{"type":"ping"}', b'event: ping\ndata: {"type":"ping"}\n\n'),
        (
            "message_stop",
            b'{"type":"message_stop"}',
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
        ),
        (None, '{"x":"é"}', 'data: {"x":"é"}\n\n'.encode()),
    ],
)
def test_encode(event: str | None, data: str | bytes, expected: bytes) -> None:
    encoded = encode(event, data)
    assert encoded == expected
    [decoded] = decode_all(encoded)
    text = data.decode() if isinstance(data, bytes) else data
    assert (decoded.event, decoded.data, decoded.raw) == (event, text, encoded)
