"""The per-model parameter rules, as a table: (model, body in) -> body out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meridian.providers import rules

SYS = {"role": "system", "content": "be brief"}
DEV = {"role": "developer", "content": "be terse"}
USER = {"role": "user", "content": "hi"}

OPENAI_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # Ordinary chat models: untouched.
    ("gpt-4o", {"max_tokens": 50, "temperature": 0.2}, {"max_tokens": 50, "temperature": 0.2}),
    ("gpt-4.1-mini", {"messages": [SYS, USER]}, {"messages": [SYS, USER]}),
    # Gemini's OpenAI endpoint: nothing changes, the model name least of all.
    (
        "gemini-2.5-flash",
        {"model": "gemini-2.5-flash", "max_tokens": 9, "temperature": 0},
        {"model": "gemini-2.5-flash", "max_tokens": 9, "temperature": 0},
    ),
    # Names that merely contain an o-series name are not o-series.
    ("gpt-4o-mini", {"max_tokens": 5}, {"max_tokens": 5}),
    ("llama3-o1-distill", {"max_tokens": 5}, {"max_tokens": 5}),
    ("openai/o3-mini", {"max_tokens": 5}, {"max_tokens": 5}),
    # o-series and gpt-5: rename, drop non-default sampling.
    ("o1", {"max_tokens": 100}, {"max_completion_tokens": 100}),
    ("o3", {"max_tokens": 100, "temperature": 0.7}, {"max_completion_tokens": 100}),
    ("o3-mini", {"max_tokens": 100, "top_p": 0.5}, {"max_completion_tokens": 100}),
    ("o3-mini-2025-01-31", {"max_tokens": 7}, {"max_completion_tokens": 7}),
    ("o4-mini", {"temperature": 1, "top_p": 1}, {"temperature": 1, "top_p": 1}),
    ("o4-mini-high", {"temperature": 0}, {}),
    ("gpt-5", {"max_tokens": 64, "temperature": 0.3}, {"max_completion_tokens": 64}),
    ("gpt-5-mini-2025-08-07", {"max_tokens": 64}, {"max_completion_tokens": 64}),
    (
        "gpt-5.1",
        {"temperature": None, "max_tokens": 1},
        {"temperature": None, "max_completion_tokens": 1},
    ),
    # Both given: max_completion_tokens wins, max_tokens goes.
    ("o3-mini", {"max_tokens": 10, "max_completion_tokens": 20}, {"max_completion_tokens": 20}),
    # Only the named parameters change; the rest passes through.
    (
        "o3",
        {"model": "o3", "messages": [SYS, USER], "reasoning_effort": "high", "seed": 3},
        {"model": "o3", "messages": [SYS, USER], "reasoning_effort": "high", "seed": 3},
    ),
    # o1-mini / o1-preview: system messages become user messages; developer stays.
    (
        "o1-mini",
        {"messages": [SYS, DEV, USER], "max_tokens": 5},
        {"messages": [{**SYS, "role": "user"}, DEV, USER], "max_completion_tokens": 5},
    ),
    (
        "o1-preview-2024-09-12",
        {"messages": [SYS, USER]},
        {"messages": [{**SYS, "role": "user"}, USER]},
    ),
    ("o1", {"messages": [SYS, USER]}, {"messages": [SYS, USER]}),
]

THINKING = {"type": "enabled", "budget_tokens": 2048}

ANTHROPIC_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # max_tokens is meridian.prepare's: untouched here.
    ("claude-sonnet-4-5", {"messages": [USER]}, {"messages": [USER]}),
    (
        "claude-haiku-4-5",
        {"max_tokens": 10, "temperature": 0.2},
        {"max_tokens": 10, "temperature": 0.2},
    ),
    # With thinking on: temperature only at 1, no top_k.
    (
        "claude-sonnet-4-5",
        {"max_tokens": 8000, "thinking": THINKING, "temperature": 0.3, "top_k": 5},
        {"max_tokens": 8000, "thinking": THINKING},
    ),
    (
        "claude-sonnet-4-5",
        {"max_tokens": 8000, "thinking": {"type": "adaptive"}, "temperature": 1},
        {"max_tokens": 8000, "thinking": {"type": "adaptive"}, "temperature": 1},
    ),
    (
        "claude-opus-4-1",
        {"max_tokens": 8000, "thinking": {"type": "disabled"}, "temperature": 0.3, "top_k": 5},
        {"max_tokens": 8000, "thinking": {"type": "disabled"}, "temperature": 0.3, "top_k": 5},
    ),
    # Unknown fields and cache_control pass untouched.
    (
        "claude-sonnet-4-5",
        {
            "max_tokens": 5,
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "output_config": {"effort": "low"},
        },
        {
            "max_tokens": 5,
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "output_config": {"effort": "low"},
        },
    ),
]


@pytest.mark.parametrize(("model", "body", "expected"), OPENAI_CASES)
def test_openai_rules(model: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert rules.apply_openai(model, body) == expected
    assert body == before  # pure: the caller's dict is never changed


@pytest.mark.parametrize(("model", "body", "expected"), ANTHROPIC_CASES)
def test_anthropic_rules(model: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    assert rules.apply_anthropic(model, body) == expected
    assert body == before


def test_unchanged_body_is_not_copied() -> None:
    body = {"model": "gpt-4o", "max_tokens": 3}
    assert rules.apply_openai("gpt-4o", body) is body
    anthropic_body = {"max_tokens": 3}
    assert rules.apply_anthropic("claude-haiku-4-5", anthropic_body) is anthropic_body


def test_one_table_covers_both_families() -> None:
    families = {row.family for row in rules.RULES}
    assert families == {"openai", "anthropic"}
    assert all(row.why for row in rules.RULES)
    assert rules.rule_for("openai", "gemini-2.5-pro") is None
