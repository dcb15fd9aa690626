"""What a provider is, and what the framework hands it.

A provider is one async generator (`stream`) plus capability flags. Logging, metrics, usage,
limits and retries belong to the framework (router and surfaces), not to each provider.

Providers whose upstream speaks a client's own wire format (``native_wire``) also offer
`relay`: the pass-through path, which forwards the client's JSON body with only the model
rewritten and the documented per-model fix-ups applied, and relays the upstream's bytes
(whole SSE events) while reading usage from them.

Errors: a provider raises `meridian.errors.MeridianError` subclasses, mapped from foreign
errors at exactly one place in the provider, chained with ``from exc``. An error raised
before the first event (or before `relay` returns) becomes an HTTP status for the caller; an
error raised later becomes an error event in the caller's stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from meridian.auth import caller_id
from meridian.model import Event, Request, Usage

Wire = Literal["anthropic", "openai"]


@dataclass(slots=True)
class CallContext:
    """Per-request facts a provider may need; never the caller's credentials."""

    request_id: str
    # Headers the caller sent that an upstream of the same family may need forwarded,
    # lower-cased: ``anthropic-version``, ``anthropic-beta``. Nothing else.
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    # Loop time (``asyncio.get_running_loop().time()``) by which the framework gives up on
    # this attempt. The framework enforces it; a provider whose upstream is a process (the
    # Claude CLI) also hands it on.
    deadline: float | None = None
    # Which client key is calling (``master`` or ``key:<id>``, never the secret), for state a
    # provider keeps per caller and must never share across callers (the Claude provider's
    # live processes). Taken from the authenticated call this context is built in.
    caller: str | None = field(default_factory=caller_id)


@dataclass(slots=True)
class Relay:
    """An upstream answer on the pass-through path. Errors are raised, never returned here.

    Non-streaming: ``body`` holds the upstream's JSON bytes and ``usage`` is already read.
    Streaming: ``chunks`` yields whole SSE events as bytes, updating ``usage`` (and
    ``first_token``) as they pass; it raises a `MeridianError` if the upstream stream breaks
    or ends without its terminal event.
    """

    status: int
    content_type: str
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    usage: Usage = field(default_factory=Usage)
    # Streaming: set once the upstream has sent the first content delta (for time to first token).
    first_token: bool = False
    # Streaming: about how many characters of content have passed (usage for a cut stream).
    produced_chars: int = 0
    # Streaming: the upstream's terminal event has passed.
    finished: bool = False
    # Upstream response headers worth passing on (request ids, rate-limit headers).
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    name: str
    # The wire format the upstream speaks natively, if any (enables `relay`).
    native_wire: Wire | None

    def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        """Run ``request`` (its ``model`` is already the upstream model) as canonical events."""
        ...

    async def relay(self, body: dict[str, Any], ctx: CallContext) -> Relay:
        """Pass-through: ``body`` is the caller's JSON with ``model`` already rewritten."""
        ...

    async def start(self) -> None:
        """Open clients and pools; called once from the app's lifespan."""
        ...

    async def aclose(self) -> None:
        """Release everything `start` opened; must be safe to call twice."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """(usable?, a short human reason) for ``/ready``; must not call the model."""
        ...
