"""What every call shares and what outlives a config reload: the gateway."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meridian.auth import Admission
from meridian.generation import Generation, Generations
from meridian.health import Health
from meridian.logs import RequestLog
from meridian.metrics import Metrics
from meridian.prices import PriceTable
from meridian.records import Observer

if TYPE_CHECKING:
    from meridian.calls.call import Call


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


@dataclass(eq=False)
class Gateway:
    """Built once at startup and kept in the app's state. The config's own parts (providers,
    router, master key) are the current generation's."""

    generations: Generations
    admission: Admission | None = None
    observers: list[Observer] = field(default_factory=list)
    # Those that also hear of requests no route took (404, 405): the log and the metrics.
    unrouted: list[Observer] = field(default_factory=list)
    # Prices calls whose upstream reports no cost, before limits settle and observers record.
    prices: PriceTable | None = None
    metrics: Metrics | None = None
    health: Health | None = None
    # Set only when server.log_bodies is on.
    request_log: RequestLog | None = None
    # Every API call in flight (shed beyond server.http.max_in_flight; stopped at shutdown).
    calls: set[Call] = field(default_factory=set)
    closing: bool = False

    @property
    def current(self) -> Generation:
        return self.generations.current

    def stop_calls(self) -> int:
        """Shutdown's grace is over: every call still running ends now, a stream with an
        error event in its client's format, a call not yet answered with 529/503."""
        calls = list(self.calls)
        for call in calls:
            call.stop_for_shutdown()
        return len(calls)
