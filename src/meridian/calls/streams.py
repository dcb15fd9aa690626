"""The streamed half of a call: open a stream, wait for its commit point, then its body,
relayed or encoded, with keep-alives, deadlines and an honest end (the terminal event or an
error event, never silence), and what a stream cut short produced.

Functions of a `meridian.calls.call.Call`, which holds the state both halves read (whether
the answer began, the pump, the usage so far).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from meridian.dialects import Dialect, Encoder
from meridian.errors import ApiError, MeridianError
from meridian.model import (
    BlockDelta,
    Event,
    JsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    TextDelta,
    ThinkingDelta,
    Usage,
)
from meridian.providers.base import RelayedStream
from meridian.router import Route
from meridian.streaming import IDLE, Idle, Pump
from meridian.wire import openai_responses

if TYPE_CHECKING:
    from meridian.calls.call import Call

log = logging.getLogger("meridian.calls")
CHARS_PER_TOKEN = 4


@dataclass(slots=True)
class Answer:
    """A plain answer: the body, ready to send."""

    body: bytes
    headers: dict[str, str]
    media_type: str = "application/json"


@dataclass(slots=True)
class Streamed:
    """A streamed answer: its bytes as they come; ``close`` runs however the stream ends
    (also when the client left before the body started)."""

    body: AsyncIterator[bytes]
    headers: dict[str, str]
    close: Callable[[], Awaitable[None]]
    media_type: str = field(default="text/event-stream")


# -------------------------------------------------------------------- opening


async def open_stream(
    call: Call, route: Route, deadline: float
) -> tuple[Pump[Any], RelayedStream | list[Event]]:
    """Start a stream and wait for its first real event (the commit point): an error
    before it can still be fallen back from."""
    ctx = call.context(deadline)
    keepalive = call.gen.keepalive_s
    name = f"provider `{route.provider_name}`"
    if call.relayed[route]:
        relay = await route.provider.relay(call.endpoint.op, call.relay_body(route), ctx)
        assert isinstance(relay, RelayedStream)
        pump: Pump[Any] = Pump(relay.chunks, name=name, keepalive_s=keepalive)
        call.pump = pump
        try:
            first = await _first(pump)
        except BaseException:
            await pump.aclose()
            raise
        pump.push_front(first)
        return _commit(call, pump, route), relay
    source = route.provider.stream(call.request_for(route), ctx)
    pump = Pump(source, name=name, keepalive_s=keepalive)
    call.pump = pump
    head: list[Event] = []
    try:
        while True:
            event = await _first(pump)
            head.append(event)
            if not isinstance(event, MessageStart):
                break
    except BaseException:
        await pump.aclose()
        raise
    return _commit(call, pump, route), head


def _commit(call: Call, pump: Pump[Any], route: Route) -> Pump[Any]:
    pump.idle_s = route.timeouts.idle_s
    pump.deadline = call.deadline
    return pump


def streamed(
    call: Call, route: Route, pump: Pump[Any], head: RelayedStream | list[Event]
) -> Streamed:
    call.committed = True
    headers = {**call.headers, "x-meridian-deployment": route.deployment}

    async def close() -> None:
        await stream_done(call, pump)

    if isinstance(head, RelayedStream):
        return Streamed(_relayed_body(call, pump, head), {**head.headers, **headers}, close)
    model = next((e.model for e in head if isinstance(e, MessageStart) and e.model), "")
    headers.update(translated_headers(call))
    return Streamed(_translated_body(call, pump, head, model or route.model), headers, close)


def translated_headers(call: Call) -> dict[str, str]:
    if call.endpoint.op == "responses":
        return openai_responses.stateless_headers(call.body)
    return {}


# -------------------------------------------------------------------- bodies


async def _relayed_body(
    call: Call, pump: Pump[bytes], relay: RelayedStream
) -> AsyncIterator[bytes]:
    keepalive = call.errors.keepalive
    try:
        while (chunk := await pump.get()) is not None:
            call.usage, call.produced_chars = relay.usage, relay.produced_chars
            if isinstance(chunk, Idle):
                if not relay.finished:  # no keep-alive after the terminal event
                    yield keepalive
                continue
            while (more := pump.get_nowait()) is not None:
                chunk += more  # what arrived together goes out in one write
            if call.rec.ttft_ms is None and relay.first_token:
                call.rec.ttft_ms = (time.perf_counter() - call.t0) * 1000
            yield chunk
        call.usage, call.produced_chars = relay.usage, relay.produced_chars
    except MeridianError as err:
        call.usage, call.produced_chars = relay.usage, relay.produced_chars
        yield _stream_failed(call, err, _continuing(relay))
    except Exception:
        log.exception("relay failed", extra={"request_id": call.rec.request_id})
        yield _stream_failed(call, ApiError(f"internal error (request id {call.rec.request_id})"))
    finally:
        await stream_done(call, pump)


async def _translated_body(
    call: Call, pump: Pump[Event], head: list[Event], model: str
) -> AsyncIterator[bytes]:
    dialect = call.endpoint.dialect
    assert dialect is not None
    encoder = dialect.encoder(model, call.body)
    ended = False
    try:
        out = b"".join([_encode(call, encoder, event) for event in head])
        if out:
            yield out
        while (item := await pump.get()) is not None:
            if isinstance(item, Idle):
                if not ended:
                    yield dialect.keepalive
                continue
            ended = ended or isinstance(item, MessageStop)
            out = _encode(call, encoder, item)
            # What the upstream sent together goes out in one write: one send per read, not
            # one per event (a tenth of the CPU of a translated stream).
            while (more := pump.get_nowait()) is not None:
                ended = ended or isinstance(more, MessageStop)
                out += _encode(call, encoder, more)
            if out:
                yield out
    except MeridianError as err:
        yield _stream_failed(call, err, encoder)
    except Exception:
        log.exception("stream failed", extra={"request_id": call.rec.request_id})
        yield _stream_failed(
            call, ApiError(f"internal error (request id {call.rec.request_id})"), encoder
        )
    finally:
        await stream_done(call, pump)


def _encode(call: Call, encoder: Encoder, event: Event) -> bytes:
    if isinstance(event, MessageStart | MessageDelta):
        call.usage = call.usage.merge(event.usage)
    elif isinstance(event, BlockDelta):
        if call.rec.ttft_ms is None:
            call.rec.ttft_ms = (time.perf_counter() - call.t0) * 1000
        delta = event.delta
        if isinstance(delta, TextDelta):
            call.produced_chars += len(delta.text)
        elif isinstance(delta, ThinkingDelta):
            call.produced_chars += len(delta.thinking)
        elif isinstance(delta, JsonDelta):
            call.produced_chars += len(delta.partial_json)
    return encoder.feed(event)


# -------------------------------------------------------------------- endings


def _stream_failed(call: Call, err: MeridianError, encoder: Encoder | None = None) -> bytes:
    call.rec.status, call.rec.error_type = err.status, err.kind
    call.rec.upstream_error = err.upstream
    if err.detail:
        log.info(
            "stream failed",
            extra={"request_id": call.rec.request_id, "error": err.kind, "detail": err.detail},
        )
    dialect: Dialect = call.endpoint.dialect or call.errors
    enc = encoder or dialect.encoder(call.rec.upstream_model or "", call.body)
    return dialect.stream_error(enc, err, call.rec.request_id)


async def stream_done(call: Call, pump: Pump[Any]) -> None:
    """Close the source and account for the call. Runs from the body's ``finally``, or,
    if the client left before the body started, from the answer's ``close``."""
    if call.finished:
        return
    ended = pump.finished
    await pump.aclose()
    if call.rec.error_type is None and (call.client_gone or not ended):
        # The client went away mid-stream (nginx's 499: client closed request).
        call.rec.status, call.rec.error_type = 499, "client_disconnected"
        call.finish(usage_so_far(call))
        return
    call.finish(call.usage)


def usage_so_far(call: Call) -> Usage:
    """A call cut short: what the upstream reported, and at least what was seen."""
    usage = call.usage
    seen = call.produced_chars // CHARS_PER_TOKEN
    if seen > usage.output_tokens:
        usage = replace(usage, output_tokens=seen)
    return usage


def _continuing(relay: RelayedStream) -> Encoder | None:
    """For a relayed Responses stream that breaks: an encoder that continues it (the same
    response id, the next sequence number), as the OpenAI SDK requires of its events."""
    sniffer = relay.sniffer
    if isinstance(sniffer, openai_responses.UsageSniffer) and sniffer.response_id:
        return openai_responses.StreamEncoder(
            model="",
            created_at=int(time.time()),
            response_id=sniffer.response_id,
            sequence_start=(sniffer.sequence_number or 0) + 1,
        )
    return None


async def _first(pump: Pump[Any]) -> Any:
    while (item := await pump.get()) is IDLE:
        pass
    if item is None:
        raise ApiError(f"{pump.name}: the upstream ended the stream without an answer", status=502)
    return item
