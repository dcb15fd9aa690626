"""The one preparation step, as a table: what a deployment is sent for what a caller asked."""

from __future__ import annotations

from typing import Any

import pytest

from meridian import prepare
from meridian.model import Message, Request, TextBlock, Thinking
from meridian.providers.base import Operation
from meridian.router import Route

USER = [{"role": "user", "content": "hi"}]


def route(model: str, default: int = 8_192, maximum: int = 64_000) -> Route:
    return Route("alias", "p", None, model, default, maximum)  # type: ignore[arg-type]


CASES: list[tuple[str, Operation, Route, dict[str, Any], bool, dict[str, Any]]] = [
    # (why, operation, deployment, caller's body, bound_output, what changes)
    ("messages: max_tokens is required; the default when absent",
     "messages", route("claude-haiku-4-5"), {"messages": USER}, False, {"max_tokens": 8_192}),
    ("messages: paperless-ai's 128000 is clamped to the model's maximum",
     "messages", route("claude-haiku-4-5"), {"max_tokens": 128_000}, False,
     {"max_tokens": 64_000}),
    ("messages: a thinking budget above the default gets room above it",
     "messages", route("claude-sonnet-4-6"),
     {"thinking": {"type": "enabled", "budget_tokens": 10_000}}, False,
     {"max_tokens": 18_192}),
    ("messages: ... within the maximum",
     "messages", route("claude-sonnet-4-6", maximum=12_000),
     {"thinking": {"type": "enabled", "budget_tokens": 10_000}}, False,
     {"max_tokens": 12_000}),
    ("messages: a budget below the default changes nothing",
     "messages", route("claude-sonnet-4-6"),
     {"thinking": {"type": "enabled", "budget_tokens": 2_048}}, False, {"max_tokens": 8_192}),
    ("messages: an explicit max_tokens is the caller's, even under a budget (its 400)",
     "messages", route("claude-sonnet-4-6"),
     {"max_tokens": 1_000, "thinking": {"type": "enabled", "budget_tokens": 2_048}}, False,
     {"max_tokens": 1_000}),
    ("messages: thinking drops top_k and a non-default temperature (the rules table)",
     "messages", route("claude-sonnet-4-6"),
     {"max_tokens": 50, "thinking": {"type": "adaptive"}, "top_k": 5, "temperature": 0.2},
     False, {"top_k": None, "temperature": None}),
    ("chat: nothing asked, nothing sent (the upstream's own default)",
     "chat", route("gpt-4o", default=4_096, maximum=16_384), {"messages": USER}, False, {}),
    ("chat: a key with token limits is sent the default it reserved",
     "chat", route("gpt-4o", default=4_096, maximum=16_384), {"messages": USER}, True,
     {"max_tokens": 4_096}),
    ("chat: clamped", "chat", route("gpt-4o", maximum=16_384), {"max_tokens": 128_000}, False,
     {"max_tokens": 16_384}),
    ("chat: o-series take max_completion_tokens and no temperature",
     "chat", route("o3-mini", maximum=100_000), {"max_tokens": 500, "temperature": 0.3}, False,
     {"max_tokens": None, "max_completion_tokens": 500, "temperature": None}),
    ("chat: gpt-5 alike, clamped first",
     "chat", route("gpt-5", maximum=128_000), {"max_completion_tokens": 500_000}, False,
     {"max_completion_tokens": 128_000}),
    ("chat: o1-mini takes no system role", "chat", route("o1-mini"),
     {"messages": [{"role": "system", "content": "s"}, *USER]}, False,
     {"messages": [{"role": "user", "content": "s"}, *USER]}),
    ("responses: max_output_tokens clamped", "responses", route("gpt-4o", maximum=16_384),
     {"input": "hi", "max_output_tokens": 99_999}, False, {"max_output_tokens": 16_384}),
    ("responses: bounded for a limited key", "responses", route("gpt-4o", default=4_096),
     {"input": "hi"}, True, {"max_output_tokens": 4_096}),
    ("completions: clamped", "completions", route("llama3.2", maximum=8_192),
     {"prompt": "x", "max_tokens": 100_000}, False, {"max_tokens": 8_192}),
    ("embeddings: only the model", "embeddings", route("text-embedding-3-small"),
     {"input": "x"}, True, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "op", "r", "body", "bound", "changes"), CASES, ids=[c[0] for c in CASES]
)
def test_body(
    why: str, op: Operation, r: Route, body: dict[str, Any], bound: bool, changes: dict[str, Any]
) -> None:
    sent = prepare.body(op, {"model": "alias", **body}, r, bound_output=bound)
    expected = {"model": r.model, **body, **changes}
    expected = {k: v for k, v in expected.items() if v is not None}
    assert sent == expected


def test_the_callers_body_is_never_changed() -> None:
    body = {"model": "alias", "max_tokens": 128_000, "messages": USER}
    prepare.body("messages", body, route("claude-haiku-4-5"))
    assert body == {"model": "alias", "max_tokens": 128_000, "messages": USER}


@pytest.mark.parametrize(
    ("asked", "thinking", "expected"),
    [
        (None, None, 8_192),
        (100_000, None, 64_000),
        (None, Thinking(budget_tokens=10_000), 18_192),
        (None, Thinking(enabled=True), 8_192),  # adaptive: no budget
        (500, Thinking(budget_tokens=10_000), 500),
    ],
)
def test_canonical_request(asked: int | None, thinking: Thinking | None, expected: int) -> None:
    req = Request(
        model="alias", messages=(Message("user", (TextBlock("hi"),)),), max_tokens=asked,
        thinking=thinking,
    )  # fmt: skip
    prepared = prepare.request(req, route("claude-sonnet-4-6"))
    assert (prepared.model, prepared.max_tokens) == ("claude-sonnet-4-6", expected)
