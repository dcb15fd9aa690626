"""Pure pieces of the call path: retry backoff and the input-token estimate."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meridian import estimate
from meridian.router import backoff


def test_backoff_honours_retry_after_and_grows_with_jitter() -> None:
    assert backoff(0, 3.0) == 3.0
    rng = random.Random(7)
    waits = [backoff(n, None, rng) for n in range(6)]
    for n, wait in enumerate(waits):
        ceiling = min(8.0, 0.5 * 2**n)
        assert ceiling / 2 <= wait <= ceiling
    assert len({round(backoff(1, None, rng), 6) for _ in range(20)}) > 1  # jittered


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "x" * 400}]}, 100 + 4),
        ({"system": "s" * 40, "messages": [{"role": "user", "content": "hi"}]}, 11 + 4),
        (  # Anthropic blocks: text, an image, a tool result
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "t" * 80},
                {"type": "image", "source": {"type": "base64", "data": "A" * 100_000}},
                {"type": "tool_result", "tool_use_id": "x", "content": "r" * 40},
            ]}]},
            30 + 1600 + 4,
        ),
        (  # OpenAI parts and a tool call
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "t" * 40},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]}, {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ]}]},
            None,
        ),
        ({"messages": "not a list"}, 0),
    ],
)  # fmt: skip
def test_input_token_estimate(body: dict[str, Any], expected: int | None) -> None:
    got = estimate.input_tokens(body)
    if expected is None:
        assert got > 1600 + 8  # the image, two messages, the text and the call's JSON
    else:
        assert got == expected
