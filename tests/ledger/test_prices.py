"""The price table: list prices per million tokens, matched by model family."""

from __future__ import annotations

import pytest

from meridian.model import Usage
from meridian.prices import DEFAULT_PRICES, Price, PriceTable

M = 1_000_000


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5", "claude-opus-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex spelling
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        ("o3-mini", "o3-mini"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("gpt-5", "gpt-5"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),  # OpenRouter
        ("GPT-4o", "gpt-4o"),
    ],
)
def test_model_ids_find_their_family(model: str, family: str) -> None:
    assert PriceTable().lookup(model) == DEFAULT_PRICES[family]


@pytest.mark.parametrize(
    "model",
    ["o3-pro", "gpt-4oops", "claude-opus-4-9", "gpt-4o-audio-preview", "llama3.1:8b", "", "x"],
)
def test_other_models_have_no_price(model: str) -> None:
    assert PriceTable().lookup(model) is None
    assert PriceTable().estimate(model, Usage(input_tokens=1000)) is None


def test_estimate_counts_every_token_kind() -> None:
    usage = Usage(
        input_tokens=2 * M,
        output_tokens=M // 2,
        cache_read_tokens=4 * M,
        cache_creation_tokens=M,
        reasoning_tokens=M,  # part of output_tokens: not billed twice
    )
    price = DEFAULT_PRICES["claude-sonnet-4-5"]
    expected = 2 * price.input + 0.5 * price.output + 4 * price.cache_read + price.cache_write
    assert PriceTable().estimate("claude-sonnet-4-5-20250929", usage) == pytest.approx(expected)


def test_list_prices_of_a_few_well_known_models() -> None:
    # Published list prices, USD per million tokens (input, output, cache read, cache write).
    assert DEFAULT_PRICES["claude-haiku-4-5"] == Price(1, 5, 0.1, 1.25)
    assert DEFAULT_PRICES["claude-sonnet-4-5"] == Price(3, 15, 0.3, 3.75)
    assert DEFAULT_PRICES["gpt-4o"] == Price(2.5, 10, 1.25, 2.5)
    assert DEFAULT_PRICES["gpt-4o-mini"] == Price(0.15, 0.6, 0.075, 0.15)


def test_no_model_no_estimate() -> None:
    assert PriceTable().estimate(None, Usage(input_tokens=5)) is None


def test_overrides_and_custom_tables() -> None:
    table = PriceTable().with_overrides({"my-local-model": Price(0, 0, 0, 0)})
    assert table.estimate("my-local-model", Usage(input_tokens=10**9)) == 0
    assert table.lookup("gpt-4o") == DEFAULT_PRICES["gpt-4o"]
    only = PriceTable({"m": Price(1, 1, 1, 1)})
    assert only.lookup("gpt-4o") is None
    assert only.estimate("m-20250101", Usage(input_tokens=M)) == pytest.approx(1)
