"""The one preparation step: a request as one deployment (family and model) gets it.

Fed by the model catalog and the config (a deployment's ``default_max_tokens`` and
``max_output_tokens``, `meridian.router.Route`), for both paths:

- `body`: the pass-through. The caller's JSON for an operation the upstream serves itself,
  with the model rewritten, the output bound (``max_tokens`` / ``max_completion_tokens`` /
  ``max_output_tokens``) filled or clamped, and the per-model fix-ups of
  `meridian.providers.rules`. Nothing else is touched: unknown fields, ``cache_control``,
  thinking signatures pass byte for byte.
- `request`: the canonical request the provider renders (its own fix-ups are applied to the
  rendered body by the provider, through the same rules).

``max_tokens`` is decided here and only here: the caller's, clamped to the deployment's
maximum; when the caller gave none and the upstream needs one (Anthropic always; any
upstream when the caller's key has a token limit, whose reservation assumed a bound), the
deployment's default; and with an extended-thinking budget, above the budget (the Messages
API requires ``max_tokens > budget_tokens``: a 10,000-token budget with the default 8,192
would be refused), within the maximum. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeGuard

from meridian.model import Request
from meridian.providers import rules
from meridian.providers.base import Operation

if TYPE_CHECKING:
    from meridian.router import Route


def _positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def max_tokens(asked: Any, route: Route, budget: int | None = None) -> int:
    """The output bound to send for ``asked`` (``None`` or not a positive integer: none)."""
    ceiling = route.max_output_tokens
    if _positive_int(asked):
        return min(asked, ceiling)
    value = route.default_max_tokens
    if budget is not None and value <= budget:
        value = min(budget + route.default_max_tokens, ceiling)
    return value


def thinking_budget(thinking: Any) -> int | None:
    """An Anthropic ``thinking: {type: enabled, budget_tokens}``'s budget."""
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if _positive_int(budget):
            return budget
    return None


# The field that bounds the output, per operation (None: the operation has none).
_BOUND: dict[Operation, tuple[str, ...]] = {
    "messages": ("max_tokens",),
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
    "completions": ("max_tokens",),
}


def output_asked(op: Operation, body: Mapping[str, Any]) -> Any:
    """The output bound the caller asked for, in the operation's own field."""
    for key in _BOUND.get(op, ()):
        value = body.get(key)
        if _positive_int(value):
            return value
    return None


def body(
    op: Operation, body: Mapping[str, Any], route: Route, *, bound_output: bool = False
) -> dict[str, Any]:
    """The pass-through body of ``op`` for ``route`` (see the module doc). ``bound_output``:
    send a bound even when the caller gave none (a key with token limits reserved one)."""
    out = dict(body)
    out["model"] = route.model
    fields = _BOUND.get(op)
    if fields is not None:
        present = [key for key in fields if _positive_int(out.get(key))]
        for key in present:
            out[key] = min(out[key], route.max_output_tokens)
        if not present and (op == "messages" or bound_output):
            budget = thinking_budget(out.get("thinking")) if op == "messages" else None
            out[fields[-1]] = max_tokens(None, route, budget)
    if op == "messages":
        return rules.apply_anthropic(route.model, out)
    if op == "chat":
        return rules.apply_openai(route.model, out)
    return out


def request(canonical: Request, route: Route) -> Request:
    """The canonical request as ``route`` gets it: its model, its output bound."""
    thinking = canonical.thinking
    budget = (
        thinking.budget_tokens
        if thinking is not None and thinking.enabled and thinking.budget_tokens
        else None
    )
    return replace(
        canonical, model=route.model, max_tokens=max_tokens(canonical.max_tokens, route, budget)
    )
