"""What meridian knows about upstream models: context and output limits, what each can do,
display names.

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
    # What the model can do (for /v1/models; a provider that cannot carry a feature, or the
    # config's models.ALIAS.capabilities, turn it off).
    vision: bool = True
    pdf: bool = False
    thinking: bool = False  # extended thinking / reasoning
    effort: bool = False  # an effort (reasoning_effort) setting
    structured_output: bool = True
    tools: bool = True


_CLAUDE = {"pdf": True, "thinking": True}
_CLAUDE_EFFORT = {**_CLAUDE, "effort": True}
_REASONING = {"thinking": True, "effort": True}


# prefix -> limits. Longest prefix wins.
_TABLE: dict[str, ModelLimits] = {
    "claude-opus-4": ModelLimits(200_000, 32_000, 8_192, **_CLAUDE),
    "claude-opus-4-5": ModelLimits(200_000, 64_000, 8_192, **_CLAUDE_EFFORT),
    "claude-opus-4-6": ModelLimits(200_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "claude-opus-4-7": ModelLimits(200_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "claude-sonnet-4": ModelLimits(200_000, 64_000, 8_192, **_CLAUDE),
    "claude-sonnet-4-6": ModelLimits(200_000, 64_000, 8_192, **_CLAUDE_EFFORT),
    "claude-haiku-4": ModelLimits(200_000, 64_000, 8_192, **_CLAUDE),
    "claude-3-5-haiku": ModelLimits(200_000, 8_192, 4_096, pdf=True),
    "claude-3-7-sonnet": ModelLimits(200_000, 64_000, 8_192, **_CLAUDE),
    # The newest families, as the pinned Claude CLI (2.1.327) reports them.
    "claude-opus-4-8": ModelLimits(1_000_000, 64_000, 8_192, **_CLAUDE_EFFORT),
    "claude-haiku-5": ModelLimits(1_000_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "claude-sonnet-5": ModelLimits(1_000_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "claude-opus-5": ModelLimits(1_000_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    # The Claude CLI's own short names (subscription provider): its newest of each family.
    "haiku": ModelLimits(1_000_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "sonnet": ModelLimits(1_000_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "opus": ModelLimits(1_000_000, 128_000, 8_192, **_CLAUDE_EFFORT),
    "gpt-4o": ModelLimits(128_000, 16_384, 4_096, pdf=True),
    "gpt-4.1": ModelLimits(1_047_576, 32_768, 4_096, pdf=True),
    "gpt-5": ModelLimits(400_000, 128_000, 8_192, pdf=True, **_REASONING),
    "o1": ModelLimits(200_000, 100_000, 8_192, **_REASONING),
    "o3": ModelLimits(200_000, 100_000, 8_192, **_REASONING),
    "o3-mini": ModelLimits(200_000, 100_000, 8_192, vision=False, **_REASONING),
    "o4-mini": ModelLimits(200_000, 100_000, 8_192, **_REASONING),
    "gemini-2.5": ModelLimits(1_048_576, 65_536, 8_192, pdf=True, **_REASONING),
    "gemini-2.0": ModelLimits(1_048_576, 8_192, 4_096, pdf=True),
}
# A model meridian does not know (a local model, a newer one): conservative limits, and
# only what every chat model can be asked for.
_DEFAULT = ModelLimits(128_000, 8_192, 4_096, vision=False, structured_output=False)
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
