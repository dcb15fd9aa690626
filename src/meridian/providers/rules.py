"""Per-model parameter rules: the documented fix-ups a request body gets before it goes upstream.

All of them live in one table, `RULES`: ordered rows of (wire family, predicate on the
upstream model name, `Rule`, why). For a body, the first row of its family whose predicate
matches applies; a model no row matches is sent as is. The functions are pure: they return a
new dict when something changes and never touch the caller's.

Model names themselves are never rewritten here. Gemini's OpenAI-compatible endpoint takes
its model names verbatim (``gemini-2.5-flash``); the old stack's rewriting of them is what made
them 404, so Gemini has no row at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["openai", "anthropic"]


@dataclass(frozen=True, slots=True)
class Rule:
    # (old, new): ``old`` is renamed to ``new``; when both are present ``new`` wins and
    # ``old`` is dropped.
    rename: tuple[tuple[str, str], ...] = ()
    # Parameters the model accepts only at their default value: any other value is dropped
    # (the default is what the model does anyway, so dropping loses nothing it could do).
    only_default: Mapping[str, float] = field(default_factory=dict)
    # ``system`` messages become ``user`` messages (``developer`` ones are left alone).
    system_as_user: bool = False
    # Anthropic: with thinking on, these parameters are accepted only at their default value.
    only_default_when_thinking: Mapping[str, float] = field(default_factory=dict)
    # Anthropic: with thinking on, these parameters are not accepted at all.
    drop_when_thinking: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    family: Family
    matches: Callable[[str], bool]
    rule: Rule
    why: str


def _pattern(regex: str) -> Callable[[str], bool]:
    compiled = re.compile(regex)
    return lambda model: compiled.match(model) is not None


def _always(model: str) -> bool:
    return True


_REASONING = Rule(
    rename=(("max_tokens", "max_completion_tokens"),),
    only_default={"temperature": 1, "top_p": 1},
)

RULES: tuple[Row, ...] = (
    Row(
        "openai",
        # o1-mini and o1-preview, plain or dated (o1-mini-2024-09-12).
        _pattern(r"o1-(mini|preview)(-\d{4}-\d{2}-\d{2})?$"),
        Rule(
            rename=_REASONING.rename,
            only_default=_REASONING.only_default,
            system_as_user=True,
        ),
        # The first reasoning models took no system messages ("Message types: user and
        # assistant messages only", OpenAI's reasoning guide at their launch); LiteLLM
        # converts system to user for exactly these two (its o1/o-series transformations,
        # "role: system ==> translate to role 'user'", and its model map's
        # supports_system_messages: false for o1-mini and o1-preview).
        "o1-mini/o1-preview: max_completion_tokens, default sampling, no system role",
    ),
    Row(
        "openai",
        # o1, o3, o4 and suffixed / dated variants: o3-mini, o3-mini-2025-01-31, o4-mini-high.
        _pattern(r"o\d+(-|$)"),
        _REASONING,
        # OpenAI's reasoning models reject max_tokens ("use max_completion_tokens instead")
        # and any temperature / top_p but the default.
        "o-series: max_completion_tokens, default sampling",
    ),
    Row(
        "openai",
        _pattern(r"gpt-5"),
        _REASONING,
        "gpt-5 family: reasoning models, same constraints as the o-series",
    ),
    Row(
        "anthropic",
        _always,
        Rule(
            only_default_when_thinking={"temperature": 1},
            drop_when_thinking=("top_k",),
        ),
        # Extended thinking "isn't compatible with temperature or top_k modifications"
        # (Anthropic's extended-thinking guide, "Feature compatibility"): such requests are
        # rejected with a 400. (max_tokens, which the Messages API requires, is
        # meridian.prepare's: it knows the deployment's default and maximum.)
        "anthropic: thinking forbids non-default temperature and top_k",
    ),
)


def rule_for(family: Family, model: str) -> Rule | None:
    for row in RULES:
        if row.family == family and row.matches(model):
            return row.rule
    return None


def apply_openai(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (an OpenAI chat completions request) fixed up for upstream ``model``."""
    rule = rule_for("openai", model)
    return body if rule is None else _apply(rule, body)


def apply_anthropic(model: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (an Anthropic Messages request) fixed up for upstream ``model``."""
    rule = rule_for("anthropic", model)
    return body if rule is None else _apply(rule, body)


def _thinking_on(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def _apply(rule: Rule, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] | None = None  # copied on the first change only

    def edit() -> dict[str, Any]:
        nonlocal out
        if out is None:
            out = dict(body)
        return out

    for old, new in rule.rename:
        if old in body:
            value = edit().pop(old)
            if new not in body:
                edit()[new] = value

    drop = dict(rule.only_default)
    if rule.only_default_when_thinking or rule.drop_when_thinking:
        thinking = _thinking_on(body)
        if thinking:
            drop.update(rule.only_default_when_thinking)
            for name in rule.drop_when_thinking:
                if name in body:
                    edit().pop(name)
    for name, default in drop.items():
        value = body.get(name)
        # None means "not set" in both APIs; the default value itself is accepted.
        if name in body and value is not None and value != default:
            edit().pop(name)

    messages = body.get("messages")
    if rule.system_as_user and isinstance(messages, list) and any(_is_system(m) for m in messages):
        edit()["messages"] = [{**m, "role": "user"} if _is_system(m) else m for m in messages]

    return body if out is None else out


def _is_system(message: object) -> bool:
    return isinstance(message, Mapping) and message.get("role") == "system"
