"""The canonical `Request` -> a Responses body for an upstream that serves ``/v1/responses``
(the translated path from a Chat Completions or Anthropic client). Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.

What the Responses API has no parameter for is not sent, and documented here rather than
pretended: stop sequences (``stop``) and ``top_k``. The body is always stateless:
``store: false``, and, when reasoning is asked for, ``include:
["reasoning.encrypted_content"]`` so reasoning comes back as a signature that can
round-trip in the next request (`ThinkingBlock.signature`).
Unsigned thinking (reasoning text from a chat upstream) cannot be given back to an OpenAI
model and is left out, as the Anthropic renderer does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from meridian.errors import InvalidRequest
from meridian.model import (
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
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.wire.openai_common import STRICT_TOOLS, dumps_args, end_user
from meridian.wire.openai_responses_common import RESPONSES
from meridian.wire.openai_responses_items import REDACTED_PREFIX

# provider_metadata["openai"] keys that mean the same on /v1/responses.
_FORWARDED = (
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
)


def _fail(message: str) -> NoReturn:
    raise InvalidRequest(message, param="messages")


def _effort(thinking: Thinking | None) -> str | None:
    if thinking is None:
        return None
    if thinking.effort and (thinking.enabled or thinking.effort == "none"):
        return thinking.effort
    if not thinking.enabled or thinking.budget_tokens is None:
        return None  # off, or "adaptive": leave it to the upstream model's default
    if thinking.budget_tokens <= 2048:
        return "low"
    return "medium" if thinking.budget_tokens <= 8192 else "high"


def _part(block: Block) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "input_text", "text": block.text}
    if isinstance(block, ImageBlock):
        url = block.url if block.url else f"data:{block.media_type};base64,{block.data}"
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    if isinstance(block, DocumentBlock):
        source = block.source
        kind = source.get("type")
        if kind == "base64":
            media = source.get("media_type", "application/pdf")
            return {
                "type": "input_file",
                "filename": block.title or "document.pdf",
                "file_data": f"data:{media};base64,{source.get('data')}",
            }
        if kind == "url":
            return {"type": "input_file", "file_url": str(source.get("url"))}
        if kind == "text":
            return {"type": "input_text", "text": str(source.get("data", ""))}
        _fail(
            f"a document with source type {kind!r} cannot be sent to a Responses upstream; "
            "send it inline (base64), as a URL or as text"
        )
    _fail(f"a {type(block).__name__} cannot be sent in a user message")


def _user(message: Message) -> list[dict[str, Any]]:
    """One canonical user turn -> ``function_call_output`` items, then one user message."""
    items: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            parts = [_part(b) for b in block.content]
            output: str | list[dict[str, Any]] = parts
            if all(p["type"] == "input_text" for p in parts):
                output = "\n".join(p["text"] for p in parts)
            if block.is_error and isinstance(output, str):
                output = f"Error: {output}" if output else "Error"
            items.append(
                {"type": "function_call_output", "call_id": block.tool_use_id, "output": output}
            )
        else:
            rest.append(_part(block))
    if rest:
        items.append({"type": "message", "role": "user", "content": rest})
    return items


def _assistant(message: Message) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            # A plain string: the SDK's types take output_text parts only with an item id
            # and status, which name items in OpenAI's store.
            if items and items[-1].get("role") == "assistant":
                items[-1]["content"] += block.text
            else:
                items.append({"type": "message", "role": "assistant", "content": block.text})
        elif isinstance(block, ToolUseBlock):
            items.append(
                {
                    "type": "function_call",
                    "call_id": block.id,
                    "name": block.name,
                    "arguments": dumps_args(block.input),
                }
            )
        elif isinstance(block, ThinkingBlock) and block.signature:
            # No item id: it would name an item in OpenAI's store, and nothing is stored.
            summary = [{"type": "summary_text", "text": block.thinking}] if block.thinking else []
            items.append(
                {"type": "reasoning", "summary": summary, "encrypted_content": block.signature}
            )
        elif isinstance(block, RedactedThinkingBlock):
            items.append(
                {
                    "type": "reasoning",
                    "summary": [],
                    "encrypted_content": REDACTED_PREFIX + block.data,
                }
            )
    return items


def _tool(tool: Tool, strict: bool | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["parameters"] = dict(tool.input_schema)
    # Responses makes functions strict unless told otherwise; a schema written for Chat
    # Completions or Anthropic rarely satisfies strict mode, so say false unless asked.
    out["strict"] = bool(strict)
    return out


def _text_format(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical (Chat Completions shaped) ``response_format`` -> ``text.format``."""
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        spec = spec if isinstance(spec, Mapping) else {}
        return {"type": "json_schema", **spec}
    return {"type": kind if kind in ("json_object", "text") else "text"}


def render_request(request: Request) -> dict[str, Any]:
    """Canonical `Request` -> a ``POST /v1/responses`` body for an upstream."""
    meta = request.provider_metadata.get("openai", {})
    responses_meta = request.provider_metadata.get(RESPONSES, {})
    items: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            said = "\n\n".join(b.text for b in message.content if isinstance(b, TextBlock))
            items.append({"type": "message", "role": "system", "content": said})
        else:
            items.extend(_user(message) if message.role == "user" else _assistant(message))
    body: dict[str, Any] = {"model": request.model, "input": items}
    if request.system:
        body["instructions"] = "\n\n".join(b.text for b in request.system)
    body.update((k, meta[k]) for k in _FORWARDED if k in meta)
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.user is not None:
        body["user"] = end_user(request.user)
    for key in ("temperature", "top_p"):
        if getattr(request, key) is not None:
            body[key] = getattr(request, key)
    if request.tools:
        strict = meta.get(STRICT_TOOLS, {})
        body["tools"] = [_tool(t, strict.get(t.name)) for t in request.tools]
        choice = request.tool_choice
        if choice is not None:
            if choice.type == "tool":
                body["tool_choice"] = {"type": "function", "name": choice.name}
            else:
                body["tool_choice"] = {"any": "required"}.get(choice.type, choice.type)
            if choice.disable_parallel_tool_use:
                body["parallel_tool_calls"] = False
    text: dict[str, Any] = {}
    if request.response_format is not None:
        text["format"] = _text_format(request.response_format)
    if isinstance(meta.get("verbosity"), str):
        text["verbosity"] = meta["verbosity"]
    if text:
        body["text"] = text
    reasoning: dict[str, Any] = {}
    effort = _effort(request.thinking)
    if effort is not None:
        reasoning["effort"] = effort
    if isinstance(responses_meta.get("reasoning_summary"), str):
        reasoning["summary"] = responses_meta["reasoning_summary"]
    if reasoning:
        body["reasoning"] = reasoning
        body["include"] = ["reasoning.encrypted_content"]
    body["store"] = False
    if request.stream:
        body["stream"] = True
    return body
