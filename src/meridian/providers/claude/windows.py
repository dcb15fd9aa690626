"""The subscription's own usage windows, as the CLI last reported them.

Under a claude.ai login the upstream answers every call with its unified rate-limit state
(the ``anthropic-ratelimit-unified-*`` headers), and the CLI passes it on as a
``rate_limit_event`` whenever it changes: each window (five-hour, seven-day, ...) with its
utilization (0-1), status (``allowed``, ``allowed_warning``, ``rejected``) and reset time.
The provider keeps the latest, so that ``/ready``, ``/metrics`` and the dashboard show a
window running out before clients get 429s. API-key logins report nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from claude_agent_sdk import RateLimitInfo


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # five_hour, seven_day, seven_day_opus, overage, ...
    status: str | None
    utilization: float | None
    resets_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.name,
            "status": self.status,
            "utilization": self.utilization,
            "resets_at": self.resets_at,
        }


class UsageWindows:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, Window] = {}
        self.status: str | None = None  # the state that decides: the binding window's
        self.binding: str | None = None  # which window that is
        self.resets_at: float | None = None
        self.updated_at: float | None = None

    def update(self, info: RateLimitInfo) -> None:
        self.status, self.binding = info.status, info.rate_limit_type
        self.resets_at = float(info.resets_at) if info.resets_at else None
        self.updated_at = self._clock()
        windows = info.raw.get("unifiedWindows")
        if isinstance(windows, Mapping) and windows:
            for name, raw in windows.items():
                if isinstance(raw, Mapping):
                    self._windows[str(name)] = Window(
                        str(name), _str(raw.get("status")), _num(raw.get("utilization")),
                        _num(raw.get("resetsAt")),
                    )  # fmt: skip
        elif info.rate_limit_type:
            self._windows[info.rate_limit_type] = Window(
                info.rate_limit_type, info.status, info.utilization, self.resets_at
            )

    @property
    def limited_until(self) -> float | None:
        """Unix time the subscription takes calls again, while it refuses them."""
        if self.status == "rejected" and self.resets_at and self.resets_at > self._clock():
            return self.resets_at
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        return [w.as_dict() for w in sorted(self._windows.values(), key=lambda w: w.name)]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
