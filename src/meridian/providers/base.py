"""What a provider is, and what the framework hands it.

An **operation** is what a call does (`messages`, `chat`, `responses`, `embeddings`,
`completions`, `count_tokens`); a **family** is how its bytes look (Anthropic's or OpenAI's).
A provider declares its `Capabilities`: the operations it serves *natively* (the caller's
JSON relayed as bytes to the upstream's own endpoint for it, by `relay`), whether it
*generates* (serves the three chat operations through the canonical model, by `stream`), and
what it honours (tools, images, structured output, thinking, sampling parameters). The
router reads them to choose the path, and to refuse early with a clear 400 what a deployment
cannot do; ``/v1/models`` reports them. Nothing is probed with ``getattr``.

Logging, metrics, usage, limits, timeouts and retries belong to the framework (router and
calls), not to each provider.

Errors: a provider raises `meridian.errors.MeridianError` subclasses, mapped from foreign
errors at exactly one place in the provider, chained with ``from exc``; ``upstream = True``
on those the upstream caused. An error raised before the first event (or before `relay`
returns) becomes an HTTP status for the caller (and may be fallen back from); an error
raised later becomes an error event in the caller's stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from meridian.model import Event, Request, Response, Usage

Family = Literal["anthropic", "openai"]
Operation = Literal["messages", "chat", "responses", "embeddings", "completions", "count_tokens"]
# The operations the canonical model can carry (and so translate between families).
GENERATIVE: frozenset[Operation] = frozenset({"messages", "chat", "responses"})
SAMPLING = frozenset({"temperature", "top_p", "top_k", "stop"})


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider serves and honours (the same for all its models unless the catalog or
    the config says otherwise)."""

    native: frozenset[Operation] = frozenset()
    generates: bool = True
    tools: bool = True
    vision: bool = True
    documents: bool = True  # PDF input
    structured_output: bool = True  # a JSON schema the upstream enforces itself
    thinking: bool = True
    sampling: frozenset[str] = SAMPLING

    def serves(self, op: Operation) -> bool:
        return op in self.native or (self.generates and op in GENERATIVE)


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
    # live processes).
    caller: str | None = None


@dataclass(slots=True)
class RelayedBody:
    """A plain (non-streamed) pass-through answer: the upstream's JSON bytes, usage read."""

    content_type: str
    body: bytes
    usage: Usage = field(default_factory=Usage)
    # The model the upstream says answered (its own id), when it says.
    model: str | None = None
    # Upstream response headers worth passing on (request ids, rate-limit headers).
    headers: dict[str, str] = field(default_factory=dict)


async def _nothing() -> AsyncGenerator[bytes, None]:
    nothing: tuple[bytes, ...] = ()
    for item in nothing:  # an async generator that yields nothing (replaced by the relay)
        yield item


@dataclass(slots=True)
class RelayedStream:
    """A streamed pass-through answer: ``chunks`` yields whole SSE events as bytes, updating
    the fields below as they pass; it raises a `MeridianError` if the upstream stream breaks
    or ends without its terminal event. Errors are raised, never returned here."""

    content_type: str
    chunks: AsyncIterator[bytes] = field(default_factory=_nothing)
    usage: Usage = field(default_factory=Usage)
    # Set once the upstream has sent the first content delta (for time to first token).
    first_token: bool = False
    # About how many characters of content have passed (usage for a cut stream).
    produced_chars: int = 0
    # The upstream's terminal event has passed.
    finished: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    # The wire module's watcher of this stream (its state continues a stream that breaks).
    sniffer: Any = None


Relayed = RelayedBody | RelayedStream


@runtime_checkable
class Provider(Protocol):
    name: str
    capabilities: Capabilities

    def stream(self, request: Request, ctx: CallContext) -> AsyncGenerator[Event, None]:
        """Run ``request`` (prepared: its ``model`` is the upstream's, its ``max_tokens``
        bounded) as canonical events."""
        ...

    async def complete(self, request: Request, ctx: CallContext) -> Response:
        """Run ``request`` for a plain (non-streamed) answer. An upstream with a plain API
        answers in one body, far cheaper to read than a stream of events."""
        ...

    async def relay(self, op: Operation, body: dict[str, Any], ctx: CallContext) -> Relayed:
        """Pass-through of ``op`` (one of ``capabilities.native``): ``body`` is the caller's
        JSON, already prepared for this deployment (`meridian.prepare`)."""
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
