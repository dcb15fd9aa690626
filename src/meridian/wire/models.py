"""What a ``/v1/models`` listing says about one model, shared by both API families."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meridian.model import JSON


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str  # the alias clients ask for
    display_name: str
    created: int  # unix seconds
    max_input_tokens: int | None = None
    max_tokens: int | None = None  # maximum output tokens
    owned_by: str = "meridian"
    # What the Anthropic listing's `capabilities` reports (Home Assistant reads it).
    vision: bool = True
    thinking: bool = False
    pdf: bool = False
    effort: bool = False
    structured_output: bool = False
    # An upstream's own Anthropic `capabilities` object, passed on as is when known.
    capabilities: Mapping[str, JSON] | None = None
