"""Deployment health: a circuit breaker per (provider, upstream model).

    closed ──(``failures`` consecutive failures)──► open (tripped)
    open ──(cooldown over)──► half-open: ONE call may probe it, the others skip it
    half-open ──(the probe succeeds)──► closed
    half-open ──(the probe fails)──► open again, for twice as long (up to ``max_s``)

What counts as a failure is what says the deployment itself is unwell: overload, 5xx, a
timeout, a broken connection, a rate limit or an exhausted quota. A 400 says nothing about
the deployment and changes nothing. An upstream that reports when it will take calls again
(``retry-after`` on a 429 or 529, a subscription window's reset time) also opens the circuit
until then, at once, whatever the count: calling before then only earns another refusal.
When that time is over the deployment is simply available again (the upstream said so); a
call that waited for it (a retry) may go first.

The router asks `available` before each attempt and reports each outcome; `/ready`,
``/metrics`` and the dashboard read `states`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from meridian.config import Cooldown
from meridian.errors import MeridianError

State = Literal["closed", "open", "half_open"]
Key = tuple[str, str]  # (provider, upstream model)

_UNWELL = frozenset({"overloaded", "timeout", "rate_limit", "api_error", "billing"})
# Bounds memory when callers name many models through ``provider/model`` routing.
_MAX_TRACKED = 4096


@dataclass(slots=True)
class DeploymentState:
    provider: str
    model: str
    failures: int = 0  # consecutive
    open_until: float = 0.0  # wall clock: skipped until then
    # Opened by ``failures`` in a row (then probed when the cooldown is over), as opposed
    # to a reported reset time (then simply available again).
    tripped: bool = False
    cooldown_s: float = 0.0  # the last cooldown applied (doubles after a failed probe)
    probing: bool = False  # a half-open probe is in flight
    last_error: str | None = None  # kind of the last failure
    last_message: str | None = None
    # The upstream refused with a rate limit and said until when (a reset time).
    limited: bool = False
    # Cooled down by another replica (shared cooldowns), not by a failure seen here.
    remote: bool = False

    def state_at(self, now: float) -> State:
        if now < self.open_until:
            return "open"
        return "half_open" if self.tripped else "closed"

    def as_dict(self, now: float) -> dict[str, object]:
        state = self.state_at(now)
        return {
            "provider": self.provider,
            "model": self.model,
            "state": state,
            "failures": self.failures,
            "open_until": self.open_until if state == "open" else None,
            "retry_in_s": round(max(0.0, self.open_until - now), 1) if state == "open" else None,
            "last_error": self.last_error,
        }


class Listener(Protocol):
    """Hears of cooldowns this process decided (`meridian.cooldowns` shares them)."""

    def opened(self, st: DeploymentState) -> None: ...
    def closed(self, provider: str, model: str) -> None: ...


class Health:
    def __init__(self, policy: Cooldown, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self.listener: Listener | None = None
        # Deployments that failed lately; empty (and cheap to test) while all is well.
        self.tracked: dict[Key, DeploymentState] = {}
        self._states = self.tracked

    def states(self) -> list[DeploymentState]:
        return list(self._states.values())

    def state(self, provider: str, model: str) -> DeploymentState | None:
        return self._states.get((provider, model))

    def available(self, provider: str, model: str) -> bool:
        """May a call try this deployment now? Claims the probe of a half-open one."""
        st = self._states.get((provider, model))
        if st is None:
            return True
        state = st.state_at(self.clock())
        if state == "closed":
            return True
        if state == "open" or st.probing:
            return False
        st.probing = True
        return True

    def release(self, provider: str, model: str) -> None:
        """An attempt that ended without a verdict (the client left): free the probe."""
        st = self._states.get((provider, model))
        if st is not None:
            st.probing = False

    def succeeded(self, provider: str, model: str) -> None:
        st = self._states.pop((provider, model), None)
        if st is not None and not st.remote and self.listener is not None:
            self.listener.closed(provider, model)

    def adopt(self, provider: str, model: str, open_until: float) -> None:
        """Another replica opened this deployment's circuit until ``open_until``: skip it
        until then too (then it is simply available: this process saw no failure)."""
        st = self._states.get((provider, model))
        if st is None:
            if len(self._states) >= _MAX_TRACKED:
                self._forget_closed()
            st = self._states[(provider, model)] = DeploymentState(provider, model, remote=True)
            st.last_error = "cooled down by another replica"
        st.open_until = max(st.open_until, open_until)

    def drop_remote(self, keep: set[Key]) -> None:
        """Cooldowns adopted from other replicas and no longer shared (the deployment
        recovered there): forget them."""
        for key in [k for k, st in self._states.items() if st.remote and k not in keep]:
            del self._states[key]

    def failed(self, provider: str, model: str, err: MeridianError) -> None:
        if err.kind not in _UNWELL or (err.kind == "api_error" and err.status < 500):
            self.release(provider, model)
            return
        st = self._states.get((provider, model))
        if st is None:
            if len(self._states) >= _MAX_TRACKED:
                self._forget_closed()
            st = self._states[(provider, model)] = DeploymentState(provider, model)
        now = self.clock()
        before = st.open_until
        st.remote = False
        st.failures += 1
        st.last_error, st.last_message = err.kind, err.message
        reset = err.retry_after if err.kind in ("rate_limit", "overloaded") else None
        was_probe = st.probing
        st.probing = False
        if was_probe and st.tripped:
            st.cooldown_s = min(self.policy.max_s, max(st.cooldown_s, self.policy.seconds) * 2)
            st.open_until, st.limited = now + st.cooldown_s, False
        elif st.failures >= self.policy.failures and not st.tripped:
            st.tripped, st.cooldown_s = True, self.policy.seconds
            st.open_until, st.limited = now + st.cooldown_s, False
        if reset is not None and reset > 0 and now + reset > st.open_until:
            st.open_until, st.limited = now + reset, err.kind == "rate_limit"
        if st.open_until > before and self.listener is not None:
            self.listener.opened(st)

    def forget(self, provider: str) -> None:
        """A provider whose configuration changed (reload): its history no longer applies."""
        for key in [k for k in self._states if k[0] == provider]:
            del self._states[key]

    def _forget_closed(self) -> None:
        now = self.clock()
        for key in [k for k, st in self._states.items() if st.state_at(now) == "closed"]:
            del self._states[key]
