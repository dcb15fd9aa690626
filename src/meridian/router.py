"""From the model name a client sends to the deployments that can serve it.

An alias maps to one deployment or an ordered list (fallbacks): the router tries them in
order and moves on only for errors that another deployment could fix (overload, upstream
5xx, timeouts, rate limits) and only before the first byte reached the client. With
``server.provider_prefix_routing`` a name ``provider/model`` reaches any model of a
configured provider without an alias (handy for Ollama's whole model list).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeGuard, TypeVar

from meridian import catalog
from meridian.config import Settings
from meridian.errors import MeridianError, NotFound
from meridian.model import Request
from meridian.providers.base import Provider

log = logging.getLogger("meridian.router")
T = TypeVar("T")

_FALLBACK_KINDS = frozenset({"overloaded", "timeout", "rate_limit", "api_error"})


@dataclass(frozen=True, slots=True)
class Route:
    alias: str
    provider_name: str
    provider: Provider
    model: str  # the upstream's model name, verbatim
    default_max_tokens: int
    max_output_tokens: int

    def prepare(self, request: Request) -> Request:
        """The canonical request as this deployment gets it: its model, max_tokens bounded."""
        max_tokens = request.max_tokens or self.default_max_tokens
        return replace(
            request, model=self.model, max_tokens=min(max_tokens, self.max_output_tokens)
        )

    def prepare_body(self, body: Mapping[str, Any], wire: str) -> dict[str, Any]:
        """The pass-through body: the caller's JSON with the model rewritten and
        ``max_tokens`` filled (Anthropic requires it) or clamped; nothing else touched."""
        out = dict(body)
        out["model"] = self.model
        if wire == "anthropic":
            asked = out.get("max_tokens")
            out["max_tokens"] = (
                min(asked, self.max_output_tokens) if _is_int(asked) else self.default_max_tokens
            )
        else:
            for key in ("max_completion_tokens", "max_tokens"):
                value = out.get(key)
                if _is_int(value):
                    out[key] = min(value, self.max_output_tokens)
        return out


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def fallback_worthy(err: MeridianError) -> bool:
    if err.kind not in _FALLBACK_KINDS:
        return False
    return err.kind != "api_error" or err.status >= 500


class Router:
    def __init__(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        self.providers = dict(providers)
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

    def _route(
        self, alias: str, provider: str, model: str, default: int | None, maximum: int | None
    ) -> Route:
        lim = catalog.limits(model)
        max_output = maximum or lim.max_output
        return Route(
            alias=alias,
            provider_name=provider,
            provider=self.providers[provider],
            model=model,
            default_max_tokens=min(default or lim.default_output, max_output),
            max_output_tokens=max_output,
        )

    @property
    def aliases(self) -> list[str]:
        return list(self._routes)

    def routes_for(self, alias: str) -> tuple[Route, ...]:
        return self._routes[alias]

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

    async def first_success(
        self, routes: tuple[Route, ...], attempt: Callable[[Route], Awaitable[T]]
    ) -> tuple[Route, T]:
        """Run ``attempt`` on each route in turn until one succeeds (see module doc)."""
        for i, route in enumerate(routes):
            try:
                return route, await attempt(route)
            except MeridianError as err:
                if i == len(routes) - 1 or not fallback_worthy(err):
                    raise
                log.warning(
                    "falling back",
                    extra={
                        "alias": route.alias,
                        "provider": route.provider_name,
                        "error": err.kind,
                        "next": routes[i + 1].provider_name,
                    },
                )
        raise AssertionError("unreachable: routes is never empty")
