"""What meridian knows about upstream models: context and output limits, display names.

Used to fill ``max_tokens`` when a client sends none (Anthropic upstreams require one), to
clamp a request that asks for more than the model can give (paperless-ai sends 128000), and
for the ``/v1/models`` listing that Home Assistant reads. Unknown models get conservative
defaults rather than an error: a gateway must not refuse a model because it is newer than
this table. Matching is by longest prefix, so dated ids (``claude-haiku-4-5-20251001``,
``o3-mini-2025-01-31``) find their family.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelLimits:
    context: int
    max_output: int
    default_output: int


# prefix -> limits. Longest prefix wins.
_TABLE: dict[str, ModelLimits] = {
    "claude-opus-4": ModelLimits(200_000, 32_000, 8_192),
    "claude-opus-4-5": ModelLimits(200_000, 64_000, 8_192),
    "claude-opus-4-6": ModelLimits(200_000, 128_000, 8_192),
    "claude-opus-4-7": ModelLimits(200_000, 128_000, 8_192),
    "claude-sonnet-4": ModelLimits(200_000, 64_000, 8_192),
    "claude-haiku-4": ModelLimits(200_000, 64_000, 8_192),
    "claude-3-5-haiku": ModelLimits(200_000, 8_192, 4_096),
    "claude-3-7-sonnet": ModelLimits(200_000, 64_000, 8_192),
    # The newest families, as the pinned Claude CLI (2.1.327) reports them.
    "claude-opus-4-8": ModelLimits(1_000_000, 64_000, 8_192),
    "claude-haiku-5": ModelLimits(1_000_000, 128_000, 8_192),
    "claude-sonnet-5": ModelLimits(1_000_000, 128_000, 8_192),
    "claude-opus-5": ModelLimits(1_000_000, 128_000, 8_192),
    # The Claude CLI's own short names (subscription provider): its newest of each family.
    "haiku": ModelLimits(1_000_000, 128_000, 8_192),
    "sonnet": ModelLimits(1_000_000, 128_000, 8_192),
    "opus": ModelLimits(1_000_000, 128_000, 8_192),
    "gpt-4o": ModelLimits(128_000, 16_384, 4_096),
    "gpt-4.1": ModelLimits(1_047_576, 32_768, 4_096),
    "gpt-5": ModelLimits(400_000, 128_000, 8_192),
    "o1": ModelLimits(200_000, 100_000, 8_192),
    "o3": ModelLimits(200_000, 100_000, 8_192),
    "o4-mini": ModelLimits(200_000, 100_000, 8_192),
    "gemini-2.5": ModelLimits(1_048_576, 65_536, 8_192),
    "gemini-2.0": ModelLimits(1_048_576, 8_192, 4_096),
}
_DEFAULT = ModelLimits(128_000, 8_192, 4_096)
_PREFIXES = sorted(_TABLE, key=len, reverse=True)


def limits(model: str) -> ModelLimits:
    name = model.rsplit("/", 1)[-1].lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return _TABLE[prefix]
    return _DEFAULT


def display_name(alias: str) -> str:
    """``claude-sonnet-4-6`` -> ``Claude Sonnet 4.6``; anything else is shown as given."""
    parts = alias.split("-")
    if len(parts) >= 3 and parts[0] == "claude" and all(p.isdigit() for p in parts[2:4]):
        version = ".".join(p for p in parts[2:4] if p.isdigit())
        return f"Claude {parts[1].capitalize()} {version}"
    return alias
