"""Providers by config ``type``. Imported lazily: a gateway that has no Claude provider
configured never pays for importing the Claude Agent SDK."""

from __future__ import annotations

from meridian.config import (
    AnthropicProviderConfig,
    ClaudeCodeProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
)
from meridian.providers.base import Provider


def build(name: str, config: ProviderConfig) -> Provider:
    if isinstance(config, OpenAIProviderConfig):
        from meridian.providers.openai import OpenAIProvider

        return OpenAIProvider(name, config)
    if isinstance(config, AnthropicProviderConfig):
        from meridian.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, config)
    if isinstance(config, ClaudeCodeProviderConfig):
        from meridian.providers.claude import ClaudeCodeProvider

        return ClaudeCodeProvider(name, config)
    raise TypeError(f"unknown provider config {type(config).__name__}")
