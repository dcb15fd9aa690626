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


class Observer(Protocol):
    def record(self, rec: CallRecord) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...
