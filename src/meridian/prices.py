"""What a call would cost at API list prices: USD per million tokens, per upstream model.

Only an estimate for the ledger and ``meridian usage``: the provider's invoice is the truth.
Subscription calls carry their own API-dollar figure (the Claude CLI reports one), which the
ledger prefers over this table.

Lookup is exact, else by the longest table entry followed by a ``-``/``@``/``:`` and a date
or a ``latest``/``preview``/``exp`` tag: dated ids (``claude-sonnet-4-5-20250929``,
``gpt-4o-2024-08-06``, ``gemini-2.5-pro-preview-06-05``) find their family, while a different
model that merely shares a prefix (``gpt-4o-mini`` vs ``gpt-4o``, ``o3-pro`` vs ``o3``, a
future ``claude-opus-4-9``) is not priced as its neighbour. A ``vendor/`` prefix (OpenRouter,
``models/`` for Gemini) is ignored. An unknown model has no price (None), never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meridian.model import Usage

_PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cache_write`` is Anthropic's 5-minute cache write rate."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def cost(self, usage: Usage) -> float:
        # Reasoning tokens are part of output_tokens on every API that reports them.
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_creation_tokens * self.cache_write
        ) / _PER


def _anthropic(inp: float, out: float) -> Price:
    # Anthropic: cache reads at 0.1x input, 5-minute cache writes at 1.25x input.
    return Price(inp, out, round(inp * 0.1, 6), round(inp * 1.25, 6))


def _openai(inp: float, out: float, cached: float) -> Price:
    # OpenAI and Gemini bill no separate cache write: written tokens are plain input.
    return Price(inp, out, cached, inp)


# List prices (standard tier, prompts under any long-context threshold).
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-6": _anthropic(5, 25),
    "claude-opus-4-5": _anthropic(5, 25),
    "claude-opus-4-1": _anthropic(15, 75),
    "claude-opus-4": _anthropic(15, 75),
    "claude-sonnet-4-6": _anthropic(3, 15),
    "claude-sonnet-4-5": _anthropic(3, 15),
    "claude-sonnet-4": _anthropic(3, 15),
    "claude-haiku-4-5": _anthropic(1, 5),
    "claude-3-7-sonnet": _anthropic(3, 15),
    "claude-3-5-sonnet": _anthropic(3, 15),
    "claude-3-5-haiku": _anthropic(0.8, 4),
    "claude-3-haiku": _anthropic(0.25, 1.25),
    "gpt-4o": _openai(2.5, 10, 1.25),
    "gpt-4o-mini": _openai(0.15, 0.6, 0.075),
    "gpt-4.1": _openai(2, 8, 0.5),
    "gpt-4.1-mini": _openai(0.4, 1.6, 0.1),
    "gpt-4.1-nano": _openai(0.1, 0.4, 0.025),
    "o1": _openai(15, 60, 7.5),
    "o3": _openai(2, 8, 0.5),
    "o3-mini": _openai(1.1, 4.4, 0.55),
    "o4-mini": _openai(1.1, 4.4, 0.275),
    "gpt-5": _openai(1.25, 10, 0.125),
    "gpt-5-mini": _openai(0.25, 2, 0.025),
    "gpt-5-nano": _openai(0.05, 0.4, 0.005),
    "gpt-5.1": _openai(1.25, 10, 0.125),
    "gemini-2.5-pro": _openai(1.25, 10, 0.31),
    "gemini-2.5-flash": _openai(0.3, 2.5, 0.075),
    "gemini-2.5-flash-lite": _openai(0.1, 0.4, 0.025),
    "gemini-2.0-flash": _openai(0.1, 0.4, 0.025),
}

_BOUNDARY = frozenset("-@:")
_TAGS = ("latest", "preview", "exp")


class PriceTable:
    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        table = dict(DEFAULT_PRICES if prices is None else prices)
        # Longest first, so the first prefix that fits is the most specific one.
        self._entries = sorted(((k.lower(), v) for k, v in table.items()), key=lambda e: -len(e[0]))
        self._exact = dict(self._entries)
        self._cache: dict[str, Price | None] = {}

    def with_overrides(self, prices: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**dict(self._entries), **prices})

    def lookup(self, model: str) -> Price | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        found = self._find(model.rsplit("/", 1)[-1].lower())
        if len(self._cache) < 4096:  # model ids come from config; bound it anyway
            self._cache[model] = found
        return found

    def _find(self, name: str) -> Price | None:
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        for key, price in self._entries:
            if name.startswith(key) and name[len(key)] in _BOUNDARY:
                rest = name[len(key) + 1 :]
                if (len(rest) >= 4 and rest[:4].isdigit()) or rest.startswith(_TAGS):
                    return price
        return None

    def estimate(self, model: str | None, usage: Usage) -> float | None:
        """USD at list price, or None when the model is unknown."""
        if not model:
            return None
        price = self.lookup(model)
        return None if price is None else price.cost(usage)
