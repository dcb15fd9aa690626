"""The canonical `Request` -> an Anthropic Messages body, for Anthropic upstreams on the
translated path (e.g. an OpenAI client served by Claude). No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meridian.model import (
    JSON,
    Block,
    DocumentBlock,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    Request,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolUseBlock,
    instructions,
)
from meridian.wire.anthropic_request import KEPT_FIELDS

# Anthropic requires max_tokens; callers clamp to the model's limit before rendering.
DEFAULT_MAX_TOKENS = 4096
# OpenAI's reasoning_effort as an Anthropic thinking budget (Anthropic's minimum is 1024).
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
_EFFORT_BUDGET_MAX = 32000


def render_request(request: Request) -> dict[str, Any]:
    """Canonical -> an Anthropic ``/v1/messages`` body (the translated path)."""
    meta = request.provider_metadata.get("anthropic", {})
    max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
    # One system prompt: instructions given mid-conversation join it, in order.
    system_blocks, conversation = instructions(request.system, request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": max_tokens,
        "messages": render_messages(conversation),
    }
    system = [render_block(b) for b in system_blocks if b.text]
    if len(system) == 1 and set(system[0]) == {"type", "text"}:
        body["system"] = system[0]["text"]
    elif system:
        body["system"] = system
    for key in KEPT_FIELDS:
        if key in meta:
            body[key] = meta[key]
    output_format = _output_format(request.response_format)
    if output_format is not None:
        # Anthropic's own structured output: the model is constrained to the schema.
        body["output_config"] = {**body.get("output_config", {}), "format": output_format}
    if request.user is not None:
        body["metadata"] = {**body.get("metadata", {}), "user_id": request.user}
    sampling = {"temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k}
    body.update((k, v) for k, v in sampling.items() if v is not None)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.stream:
        body["stream"] = True
    extras = meta.get("tool_extras", {})
    tools = [{**_render_tool(t), **extras.get(t.name, {})} for t in request.tools]
    tools.extend(meta.get("server_tools", ()))
    if tools:
        body["tools"] = tools
    if request.tool_choice is not None:
        choice: dict[str, Any] = {"type": request.tool_choice.type}
        if request.tool_choice.type == "tool":
            choice["name"] = request.tool_choice.name
        if request.tool_choice.disable_parallel_tool_use:
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    thinking = _render_thinking(request.thinking, max_tokens)
    if thinking is not None:
        if "thinking_display" in meta and thinking["type"] != "disabled":
            thinking["display"] = meta["thinking_display"]
        body["thinking"] = thinking
    return body


def render_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Anthropic requires alternating roles and rejects empty text blocks and empty turns:
    empty blocks are dropped, turns left empty are dropped, and consecutive turns of one role
    are merged. In a user turn, tool_result blocks are moved first: Anthropic requires them to
    precede any other content of the turn that answers a tool_use."""
    out: list[dict[str, Any]] = []
    for message in messages:
        blocks = [render_block(b) for b in message.content if _sendable(b)]
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
    for turn in out:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable
    return out


def _sendable(block: Block) -> bool:
    if isinstance(block, TextBlock):
        return bool(block.text)
    # An unsigned thinking block (reasoning text from another API family) cannot be
    # verified by Anthropic, which rejects it.
    return not isinstance(block, ThinkingBlock) or bool(block.signature)


def render_block(block: Block) -> dict[str, Any]:
    """One canonical block as Anthropic JSON (request and response shapes agree)."""
    out: dict[str, Any]
    if isinstance(block, TextBlock):
        out = {"type": "text", "text": block.text}
        if block.citations:
            out["citations"] = [dict(c) for c in block.citations]
    elif isinstance(block, ToolUseBlock):
        out = {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
    elif isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    elif isinstance(block, RedactedThinkingBlock):
        return {"type": "redacted_thinking", "data": block.data}
    elif isinstance(block, ImageBlock):
        out = {"type": "image", "source": _image_source(block)}
    elif isinstance(block, DocumentBlock):
        out = {"type": "document", "source": dict(block.source)}
        if block.title is not None:
            out["title"] = block.title
    else:
        out = {"type": "tool_result", "tool_use_id": block.tool_use_id}
        parts = [render_block(b) for b in block.content if _sendable(b)]
        if len(parts) == 1 and set(parts[0]) == {"type", "text"}:
            out["content"] = parts[0]["text"]
        elif parts:
            out["content"] = parts
        if block.is_error:
            out["is_error"] = True
    if block.cache_control is not None:
        out["cache_control"] = dict(block.cache_control)
    return out


def _image_source(block: ImageBlock) -> dict[str, Any]:
    url = block.url
    if block.data is None and url and url.startswith("data:") and "," in url:
        # OpenAI clients send inline images as data: URLs, which Anthropic's url source
        # does not accept: "data:image/png;base64,AAAA" -> a base64 source.
        header, data = url[5:].split(",", 1)
        return {"type": "base64", "media_type": header.split(";", 1)[0], "data": data}
    if block.data is not None:
        return {"type": "base64", "media_type": block.media_type or "image/png", "data": block.data}
    return {"type": "url", "url": url or ""}


def _render_tool(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["input_schema"] = dict(tool.input_schema)
    if tool.cache_control is not None:
        out["cache_control"] = dict(tool.cache_control)
    return out


def _render_thinking(thinking: Thinking | None, max_tokens: int) -> dict[str, Any] | None:
    if thinking is None:
        return None
    if not thinking.enabled:
        return {"type": "disabled"}
    if thinking.budget_tokens is not None:
        return {"type": "enabled", "budget_tokens": thinking.budget_tokens}
    if thinking.effort is not None:
        # OpenAI reasoning_effort -> a budget, which Anthropic wants in [1024, max_tokens).
        budget = min(_EFFORT_BUDGET.get(thinking.effort, _EFFORT_BUDGET_MAX), max_tokens - 1)
        return {"type": "enabled", "budget_tokens": budget} if budget >= 1024 else None
    return {"type": "adaptive"}


def _output_format(response_format: Mapping[str, JSON] | None) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` as Anthropic's ``output_config.format``: a JSON schema
    the API enforces (``json_object``, "any JSON object", is the schema of any object)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else response_format.get("schema")
        return {"type": "json_schema", "schema": schema if isinstance(schema, Mapping) else {}}
    if kind == "json_object":
        return {"type": "json_schema", "schema": {"type": "object"}}
    return None
