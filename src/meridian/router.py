"""From the model name a client sends to the deployment that answers it.

An alias maps to one deployment or an ordered list (fallbacks). `Router.run` makes the
attempts of one call, under the call's deadline:

    each deployment in order, skipping those whose circuit is open (`meridian.health`),
    each attempt bounded by its share of the time left (divided among the deployments
    still to try) and by its provider's ``timeouts.first_byte_s``:
        an error another deployment could fix (overload, 5xx, a broken connection, a
        timeout, a rate limit or exhausted quota, the provider refusing meridian's own
        key): fall back to the next deployment at once
        anything else (400, 401, 403, 404, ...): answer with it at once
    then, if every deployment failed and some with a retryable error (overload, 5xx, a
    refused connection, a 429, never an exhausted quota or a timeout): wait (the
    upstream's retry-after, else jittered exponential backoff) and try those again, at most
    ``retries`` further attempts and ``retry_budget_s`` of waiting per call

An attempt commits when its answer begins (a stream's first event, a plain answer's body):
after that nothing is retried. Every failed attempt that is followed by another is reported
to ``on_failure`` (the ledger and metrics record it), and every outcome to the health
tracker. With ``server.provider_prefix_routing`` a name ``provider/model`` reaches any model
of a configured provider without an alias (handy for Ollama's whole model list).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from meridian import catalog
from meridian.config import Settings, Timeouts
from meridian.errors import MeridianError, NotFound, Overloaded, RateLimited, Timeout
from meridian.health import Health
from meridian.keys import human_time
from meridian.providers.base import Provider

log = logging.getLogger("meridian.router")
T = TypeVar("T")

_FALLBACK_KINDS = frozenset({"overloaded", "timeout", "rate_limit", "api_error", "billing"})
_RETRY_KINDS = frozenset({"overloaded", "rate_limit", "api_error"})
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """A deployment of an alias. Compared and hashed by identity: a call keys its own
    bookkeeping by route, and hashing the fields (a pydantic model among them) per call
    costs more than the rest of the lookup."""

    alias: str
    provider_name: str
    provider: Provider
    model: str  # the upstream's model name, verbatim
    default_max_tokens: int
    max_output_tokens: int
    timeouts: Timeouts = field(default_factory=Timeouts)
    # "provider/model", for the answer's x-meridian-deployment header and messages.
    deployment: str = ""

    def __post_init__(self) -> None:
        if not self.deployment:
            object.__setattr__(self, "deployment", f"{self.provider_name}/{self.model}")


@dataclass(frozen=True, slots=True)
class Policy:
    retries: int
    retry_budget_s: float
    timeout_s: float  # the call's deadline, from its start


@dataclass(slots=True)
class Attempt:
    """One try of one deployment that failed and was followed by another."""

    route: Route
    error: MeridianError
    latency_ms: float
    started_at: float  # unix seconds


def fallback_worthy(err: MeridianError) -> bool:
    if err.kind not in _FALLBACK_KINDS:
        return False
    return err.kind != "api_error" or err.status >= 500


def retryable(err: MeridianError) -> bool:
    """Worth trying the same deployment again (after a wait)."""
    if err.should_retry is False or err.kind not in _RETRY_KINDS:
        return False
    return err.kind != "api_error" or err.status >= 500


def backoff(tries: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``tries + 1``: the upstream's retry-after when it gave
    one, else exponential from 0.5 s (capped at 8 s) with "equal jitter" (half fixed, half
    random), so that callers refused together do not come back together."""
    if retry_after is not None:
        return float(retry_after)
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**tries)
    jitter: float = (rng or random).random()
    return ceiling / 2 + jitter * ceiling / 2


class Router:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        health: Health | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.health = health or Health(settings.router.cooldown)
        self._settings = settings
        self._prefix_routing = settings.server.provider_prefix_routing
        self._routes: dict[str, tuple[Route, ...]] = {
            alias: tuple(
                self._route(
                    alias, dep.provider, dep.model, dep.default_max_tokens, dep.max_output_tokens
                )
                for dep in settings.deployments(alias)
            )
            for alias in settings.models
        }
        router = settings.router
        self._default_policy = Policy(
            router.retries, router.retry_budget_s, settings.server.request_timeout_s
        )
        self._policies: dict[str, Policy] = {}
        for alias in settings.models:
            own = settings.alias_config(alias)
            if own is not None:
                self._policies[alias] = Policy(
                    router.retries if own.retries is None else own.retries,
                    router.retry_budget_s if own.retry_budget_s is None else own.retry_budget_s,
                    own.timeout_s or settings.server.request_timeout_s,
                )

    def _route(
        self, alias: str, provider: str, model: str, default: int | None, maximum: int | None
    ) -> Route:
        lim = catalog.limits(model)
        max_output = maximum or lim.max_output
        config = self._settings.providers.get(provider)
        return Route(
            alias=alias,
            provider_name=provider,
            provider=self.providers[provider],
            model=model,
            default_max_tokens=min(default or lim.default_output, max_output),
            max_output_tokens=max_output,
            timeouts=config.timeouts if config is not None else Timeouts(),
        )

    @property
    def aliases(self) -> list[str]:
        return list(self._routes)

    def routes_for(self, alias: str) -> tuple[Route, ...]:
        return self._routes[alias]

    def policy(self, alias: str) -> Policy:
        return self._policies.get(alias, self._default_policy)

    def resolve(self, name: str) -> tuple[Route, ...]:
        routes = self._routes.get(name)
        if routes is not None:
            return routes
        if self._prefix_routing:
            provider, sep, model = name.partition("/")
            if sep and model and provider in self.providers:
                # Not cached: names come from callers, and the cache would grow without bound.
                return (self._route(name, provider, model, None, None),)
        known = ", ".join(self._routes) or "none configured"
        raise NotFound(
            f"model {name!r} does not exist; available models: {known}",
            param="model",
            code="model_not_found",
        )

    async def run(
        self,
        routes: tuple[Route, ...],
        attempt: Callable[[Route, float], Awaitable[T]],
        *,
        deadline: float,
        policy: Policy,
        on_failure: Callable[[Attempt], None] | None = None,
        on_start: Callable[[Route], None] | None = None,
    ) -> tuple[Route, T]:
        """Attempt ``routes`` (see the module doc) until one answers. ``attempt(route,
        attempt_deadline)`` must return once the answer has begun; ``deadline`` and the
        deadline it gets are loop times."""
        loop = asyncio.get_running_loop()
        health = self.health
        tracked = health.tracked  # empty while every deployment is well: skip the checks
        budget = policy.retry_budget_s
        retries = 0
        error: MeridianError | None = None
        failed: Attempt | None = None  # reported once another attempt follows it
        rounds: list[Route] = list(routes)
        while True:
            again: list[tuple[Route, MeridianError]] = []
            for i, route in enumerate(rounds):
                if tracked and not health.available(route.provider_name, route.model):
                    continue
                now = loop.time()
                if now >= deadline:
                    health.release(route.provider_name, route.model)
                    raise error or _deadline_error(route, policy)
                if failed is not None and on_failure is not None:
                    on_failure(failed)
                failed = None
                share = (deadline - now) / (len(rounds) - i)
                first_byte = route.timeouts.first_byte_s
                limit = share if first_byte is None else min(share, first_byte)
                if on_start is not None:
                    on_start(route)
                try:
                    async with asyncio.timeout(limit):
                        result = await attempt(route, now + limit)
                except TimeoutError:
                    err: MeridianError = _attempt_timeout(route, limit, first_byte, share)
                except MeridianError as exc:
                    err = exc
                except BaseException:
                    health.release(route.provider_name, route.model)
                    raise
                else:
                    if tracked:
                        health.succeeded(route.provider_name, route.model)
                    return route, result
                health.failed(route.provider_name, route.model, err)
                if not fallback_worthy(err) and not retryable(err):
                    raise err
                error = err
                took = loop.time() - now
                failed = Attempt(route, err, took * 1000, time.time() - took)
                log.info(
                    "attempt failed",
                    extra={
                        "alias": route.alias,
                        "deployment": route.deployment,
                        "error": err.kind,
                        "detail": err.detail or err.message,
                    },
                )
                if retryable(err):
                    again.append((route, err))
            # Every deployment has had its turn: retry those worth it, after a wait.
            if error is None:
                raise self._all_cooling(routes)
            waits = [backoff(retries, err.retry_after) for _, err in again]
            if not again or retries >= policy.retries:
                raise error
            wait = min(waits)
            if wait > budget or loop.time() + wait >= deadline:
                raise error
            budget -= wait
            await asyncio.sleep(wait)
            rounds = [route for route, _ in again][: policy.retries - retries]
            retries += len(rounds)

    def _all_cooling(self, routes: tuple[Route, ...]) -> MeridianError:
        """Every deployment of the alias is cooling down: say until when, and why."""
        now = self.health.clock()
        parts, soonest, limited, quota = [], float("inf"), False, False
        for route in routes:
            st = self.health.state(route.provider_name, route.model)
            if st is None:
                continue
            until = st.open_until if st.state_at(now) == "open" else now
            soonest = min(soonest, until)
            limited = limited or st.limited
            quota = quota or (st.limited and until - now > 60)
            why = st.last_error or "failing"
            parts.append(f"{route.deployment} until {human_time(until)} ({why})")
        retry_after = max(1.0, soonest - now) if soonest != float("inf") else 1.0
        message = (
            f"model {routes[0].alias!r}: every deployment is cooling down after failing: "
            + "; ".join(parts)
        )
        if limited:
            return RateLimited(
                message,
                retry_after=retry_after,
                should_retry=False if quota else None,
                code="insufficient_quota" if quota else None,
            )
        return Overloaded(message, retry_after=retry_after)


def _attempt_timeout(
    route: Route, limit: float, first_byte: float | None, share: float
) -> MeridianError:
    if first_byte is not None and first_byte <= share:
        why = f"providers.{route.provider_name}.timeouts.first_byte_s"
    else:
        why = "its share of the call's deadline"
    err = Timeout(f"provider `{route.provider_name}`: no answer within {limit:.3g} s ({why})")
    err.upstream = True
    return err


def _deadline_error(route: Route, policy: Policy) -> MeridianError:
    return Timeout(f"model {route.alias!r}: no answer within {policy.timeout_s:g} s")
