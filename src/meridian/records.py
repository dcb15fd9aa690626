"""What one finished API call leaves behind, and who gets told.

The surfaces build one `CallRecord` per API request (success or error) and hand it to every
`Observer` (the JSON log line, the usage ledger, metrics). ``record`` is called on the
request path, so it must not block: an observer that does I/O queues the record and does the
work in its own task, started by ``start`` and drained by ``aclose`` on shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from meridian.model import Usage


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A failed attempt of a call that then tried again (retry) or elsewhere (fallback)."""

    provider: str
    upstream_model: str
    status: int
    error_type: str
    latency_ms: float
    started_at: float  # unix seconds
    upstream: bool  # the upstream (not meridian) failed it


@dataclass(slots=True)
class CallRecord:
    request_id: str
    started_at: float  # unix seconds
    surface: str  # "anthropic" | "openai"
    endpoint: str  # e.g. "/v1/messages"
    key_name: str | None = None
    key_id: int | None = None
    alias: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    status: int = 200
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    error_type: str | None = None
    # "relay" (pass-through) or "translate" (through the canonical model).
    path: str | None = None
    # The error, when the upstream (not meridian or the caller) caused it.
    upstream_error: bool = False
    # Failed attempts before the final one, in order.
    attempts: list[AttemptRecord] = field(default_factory=list)


class Observer(Protocol):
    def record(self, rec: CallRecord) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...
