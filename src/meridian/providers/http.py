"""The HTTP plumbing the direct providers share: one pooled aiohttp session per provider,
reading SSE, and the one place where foreign (aiohttp) errors become meridian's.

`Upstream.post` returns only 2xx responses: an upstream error status is read and raised as
`meridian.errors.from_upstream_status(...)`. Everything that reads a response afterwards
(`read`, `decode`, `relay`) maps aiohttp's errors through the same `_mapped` boundary, so a
connection that drops mid-stream surfaces from the iterator as an `ApiError(502)` chained
``from`` the aiohttp error.

Timeouts: only connecting is bounded here (``timeouts.connect_s``). Waiting for the first
byte, the silence between events and the call's deadline are the framework's (the router
and `meridian.streaming.Pump`), the same for every provider.

What a caller reads names the provider and what happened, in words; never the upstream's
address (a ``base_url`` may carry credentials) nor a library's exception text. Those go to
the log, as the error's ``detail``, with credentials in URLs redacted.

    MeridianError raised here           from
     ├── (from_upstream_status)         a non-2xx upstream status (with retry-after, and
     │                                  should_retry=False when the upstream says so)
     ├── Timeout (504)                  connecting took longer than timeouts.connect_s
     └── ApiError (502)                 refused / reset / DNS failures, dropped connections,
                                        a stream that ends before its terminal event
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Protocol

import aiohttp
import orjson

from meridian import __version__
from meridian.config import AnthropicProviderConfig, OpenAIProviderConfig
from meridian.errors import ApiError, MeridianError, Timeout, from_upstream_status
from meridian.model import Event, Usage
from meridian.providers.base import Capabilities, Operation, RelayedBody, RelayedStream
from meridian.redact import redact_url
from meridian.wire.sse import SSEDecoder, SSEEvent

# Upstream response headers passed on to callers: request ids and rate-limit state.
_PASSED_HEADERS = ("request-id", "x-request-id")
_PASSED_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")


class EventDecoder(Protocol):
    """A wire module's ``StreamDecoder``: upstream SSE events -> canonical events."""

    def feed(self, event: SSEEvent) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class Sniffer(Protocol):
    """A wire module's ``UsageSniffer``: watches a relayed stream without changing it."""

    def feed(self, event: SSEEvent) -> None: ...

    @property
    def usage(self) -> Usage: ...

    @property
    def finished(self) -> bool: ...

    @property
    def error(self) -> MeridianError | None: ...

    @property
    def first_token(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    @property
    def produced_chars(self) -> int: ...


def _never(status: int, body: bytes) -> bool:
    return False


class Upstream:
    """One provider's HTTP client. Create it anywhere; `start` it inside the event loop."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        max_connections: int,
        connect_s: float,
        parse_error_body: Callable[[int, bytes], str],
        quota_exhausted: Callable[[int, bytes], bool] = _never,
    ) -> None:
        self.provider = provider
        self.base_url = base_url
        self._max_connections = max_connections
        self._parse_error_body = parse_error_body
        self._quota_exhausted = quota_exhausted
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_s, sock_connect=connect_s, sock_read=None
        )
        self._connect_s = connect_s

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"user-agent": f"meridian/{__version__}"},
            timeout=self._timeout,
            trust_env=False,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ requests

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
    ) -> aiohttp.ClientResponse:
        """POST ``body``; a 2xx response (its body unread), or the mapped error raised."""
        if self._session is None:
            raise RuntimeError(f"provider {self.provider!r} used before start()")
        with self._mapped(mid_stream=False):
            resp = await self._session.post(url, data=body, headers=headers)
            if resp.status < 300:
                return resp
            try:
                data = await resp.read()
            finally:
                resp.release()
        raise self._status_error(resp.status, resp.headers, data)

    async def read(self, resp: aiohttp.ClientResponse) -> bytes:
        try:
            with self._mapped(mid_stream=False):
                return await resp.read()
        finally:
            resp.release()

    async def decode(
        self, resp: aiohttp.ClientResponse, decoder: EventDecoder
    ) -> AsyncGenerator[Event, None]:
        """Canonical events from an SSE response; raises if it breaks or ends early."""
        sse = SSEDecoder()
        done = False
        try:
            with self._mapped(mid_stream=True):
                async for chunk in resp.content.iter_any():
                    for event in sse.feed(chunk):
                        for item in decoder.feed(event):
                            yield item
                done = True
            for event in sse.close():
                for item in decoder.feed(event):
                    yield item
            for item in decoder.close():
                yield item
        finally:
            _finish(resp, done)

    def relay(
        self,
        resp: aiohttp.ClientResponse,
        sniffer: Sniffer,
        *,
        skip: Callable[[SSEEvent], bool] | None = None,
    ) -> RelayedStream:
        """A `RelayedStream` of ``resp``: whole SSE events as received; ``usage`` and
        ``first_token`` read on the way."""
        relay = RelayedStream(
            content_type=resp.headers.get("content-type", "text/event-stream"),
            headers=passed_headers(resp.headers),
            sniffer=sniffer,
        )
        relay.chunks = RelayChunks(self._relay_chunks(resp, sniffer, relay, skip), resp)
        return relay

    async def relay_body(
        self, resp: aiohttp.ClientResponse, usage: Callable[[bytes], tuple[Usage, str | None]]
    ) -> RelayedBody:
        """A `RelayedBody` of a plain answer; ``usage`` reads (usage, model) from its JSON."""
        data = await self.read(resp)
        used, model = usage(data)
        return RelayedBody(
            content_type=resp.headers.get("content-type", "application/json"),
            body=data,
            usage=used,
            model=model,
            headers=passed_headers(resp.headers),
        )

    async def _relay_chunks(
        self,
        resp: aiohttp.ClientResponse,
        sniffer: Sniffer,
        relay: RelayedStream,
        skip: Callable[[SSEEvent], bool] | None,
    ) -> AsyncGenerator[bytes, None]:
        sse = SSEDecoder()
        done = False
        out: list[bytes] = []
        try:
            with self._mapped(mid_stream=True):
                async for chunk in resp.content.iter_any():
                    # One network chunk -> one yield of the whole events it completed. Until
                    # the answer has really started (past Anthropic's message_start and
                    # pings), nothing is yielded: an error that comes first can still be
                    # fallen back from, since the caller has been sent nothing yet.
                    for event in sse.feed(chunk):
                        self._sniff(sniffer, event, relay, out, skip)
                    if out and (sniffer.started or sniffer.finished):
                        yield b"".join(out)
                        out.clear()
                done = True
            for event in sse.close():
                self._sniff(sniffer, event, relay, out, skip)
            if out:
                yield b"".join(out)
                out.clear()
            if not sniffer.finished:
                raise ApiError(
                    f"{self.provider}: the upstream stream ended before it finished", status=502
                )
        except MeridianError:
            # The events before an upstream error are the caller's; the error is raised in
            # their place (the surface renders it in the caller's format).
            if out:
                yield b"".join(out)
            raise
        finally:
            _finish(resp, done)

    @staticmethod
    def _sniff(
        sniffer: Sniffer,
        event: SSEEvent,
        relay: RelayedStream,
        out: list[bytes],
        skip: Callable[[SSEEvent], bool] | None,
    ) -> None:
        sniffer.feed(event)
        error = sniffer.error
        if error is not None:
            raise error
        relay.usage = sniffer.usage
        relay.first_token = sniffer.first_token
        relay.produced_chars = sniffer.produced_chars
        relay.finished = sniffer.finished
        if skip is None or not skip(event):
            out.append(event.raw)

    # ------------------------------------------------------------------ errors

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> MeridianError:
        err = from_upstream_status(
            status,
            self._parse_error_body(status, body),
            provider=self.provider,
            retry_after=retry_after(headers),
            quota_exhausted=self._quota_exhausted(status, body),
        )
        # The upstream's own veto on retrying (Anthropic sends x-should-retry) is passed on;
        # its "true" is not, so meridian's classification stays in charge otherwise.
        if headers.get("x-should-retry", "").strip().lower() == "false":
            err.should_retry = False
        return err

    @contextmanager
    def _mapped(self, *, mid_stream: bool) -> Iterator[None]:
        """The boundary: aiohttp's and asyncio's errors become meridian's, chained. The
        caller's message says what happened; the address and the library's words go to
        ``detail`` (logged, never answered)."""
        where = "mid-stream" if mid_stream else "before it answered"
        try:
            yield
        except aiohttp.ConnectionTimeoutError as exc:
            raise self._broken(
                Timeout,
                f"could not connect to the upstream within {self._connect_s:g} s "
                "(timeouts.connect_s)",
                exc,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno
            # strerror alone: asyncio's message for a refused connection names the address.
            reason = os.strerror(errno).lower() if errno else "network error"
            raise self._broken(ApiError, f"cannot connect to the upstream ({reason})", exc) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise self._broken(
                ApiError, f"the upstream closed the connection {where}", exc
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise self._broken(
                ApiError, f"the upstream connection was cut off {where}", exc
            ) from exc
        except (aiohttp.ClientOSError, ConnectionError) as exc:
            raise self._broken(ApiError, f"the upstream connection was reset {where}", exc) from exc
        except aiohttp.ClientResponseError as exc:
            raise self._broken(
                ApiError, f"the upstream sent a malformed HTTP response {where}", exc
            ) from exc
        except aiohttp.ClientError as exc:
            raise self._broken(ApiError, f"the upstream connection failed {where}", exc) from exc

    def _broken(self, cls: type[MeridianError], what: str, exc: BaseException) -> MeridianError:
        err = cls(f"provider `{self.provider}`: {what}", status=None if cls is Timeout else 502)
        err.upstream = True
        err.detail = f"{redact_url(self.base_url)}: {type(exc).__name__}: {exc}"
        return err


class RelayChunks:
    """`RelayedStream.chunks`: the relay generator, plus an ``aclose`` that frees the upstream
    connection even when iteration never started (an unstarted generator's ``finally``
    never runs, so a caller that gives up before the first chunk would leak it)."""

    __slots__ = ("_gen", "_resp")

    def __init__(self, gen: AsyncGenerator[bytes, None], resp: aiohttp.ClientResponse) -> None:
        self._gen = gen
        self._resp = resp

    def __aiter__(self) -> RelayChunks:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()
        finally:
            self._resp.close()  # a no-op once the response was released


def _finish(resp: aiohttp.ClientResponse, done: bool) -> None:
    # A fully read response returns its connection to the pool; an abandoned one closes it
    # (the rest of the stream must not be read by the next request on that connection).
    if done:
        resp.release()
    else:
        resp.close()


def _json_default(value: object) -> object:
    # Canonical values hold Mappings (read-only proxies, frozen dicts) orjson does not know.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(body: Mapping[str, object]) -> bytes:
    """A request body as compact JSON bytes (``default`` only runs for unknown types)."""
    return orjson.dumps(body, default=_json_default)


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _PASSED_HEADERS or key.startswith(_PASSED_PREFIXES):
            out[key] = value
    return out


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date),
    read in the order the official SDKs read them."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpProvider:
    """What the direct providers share: one `Upstream` pool, request headers built once, and
    a lifecycle that is the pool's. Subclasses add ``stream`` and ``relay``; ``paths`` maps
    each native operation to its path under the base URL."""

    capabilities: Capabilities = Capabilities()

    def __init__(
        self,
        name: str,
        config: OpenAIProviderConfig | AnthropicProviderConfig,
        *,
        paths: Mapping[Operation, str],
        headers: Mapping[str, str],
        parse_error_body: Callable[[int, bytes], str],
        quota_exhausted: Callable[[int, bytes], bool] = _never,
    ) -> None:
        self.name = name
        self.config = config
        base_url = config.base_url.rstrip("/")
        self._urls = {op: base_url + path for op, path in paths.items()}
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            **headers,
            **{k.lower(): v for k, v in config.headers.items()},
        }
        self._http = Upstream(
            provider=name,
            base_url=base_url,
            max_connections=config.max_connections,
            connect_s=config.timeouts.connect_s,
            parse_error_body=parse_error_body,
            quota_exhausted=quota_exhausted,
        )

    async def start(self) -> None:
        await self._http.start()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ready(self) -> tuple[bool, str]:
        return True, "ok"
