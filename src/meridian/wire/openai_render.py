"""The canonical `Request` -> an OpenAI Chat Completions body (the upstream side).

Public names are re-exported from `meridian.wire.openai_chat`; import them from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from meridian.errors import InvalidRequest
from meridian.model import (
    Block,
    DocumentBlock,
    ImageBlock,
    Message,
    Request,
    TextBlock,
    Thinking,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.wire.openai_common import STRICT_TOOLS, dumps_args, end_user


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


def _image_part(block: ImageBlock) -> dict[str, Any]:
    url = block.url if block.url else f"data:{block.media_type};base64,{block.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _part(block: Block) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        return _image_part(block)
    if isinstance(block, DocumentBlock):
        source = block.source
        if source.get("type") == "base64":
            data = f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data')}"
            return {
                "type": "file",
                "file": {"file_data": data, "filename": block.title or "document.pdf"},
            }
        if source.get("type") == "text":
            return {"type": "text", "text": str(source.get("data", ""))}
        _fail(
            f"a document with source type {source.get('type')!r} cannot be sent "
            "to an OpenAI-compatible upstream; send it inline (base64) or as text",
        )
    _fail(f"a {type(block).__name__} cannot be sent in an OpenAI user message")


def _content(blocks: Iterable[Block]) -> str | list[dict[str, Any]]:
    parts = [_part(b) for b in blocks]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _user(message: Message) -> list[dict[str, Any]]:
    """One canonical user turn -> role:tool messages first, then at most one user message.

    OpenAI tool messages carry text only. Images a tool returned (Anthropic allows them in
    tool_result) follow in a user message, announced by a note in the tool message, so a
    vision model still sees them right after the result they belong to.
    """
    out: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    rest: list[Block] = []
    for block in message.content:
        if not isinstance(block, ToolResultBlock):
            rest.append(block)
            continue
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
        pics = [_image_part(b) for b in block.content if isinstance(b, ImageBlock)]
        if pics:
            note = f"[{len(pics)} image(s) from this result follow in the next user message]"
            text = f"{text}\n{note}" if text else note
            images.append(
                {"type": "text", "text": f"Images returned by tool call {block.tool_use_id}:"}
            )
            images.extend(pics)
        out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
    if images or rest:
        content = _content(rest)
        if images:
            content = images + (
                [{"type": "text", "text": content}] if isinstance(content, str) else content
            )
        out.append({"role": "user", "content": content})
    return out


def _assistant_message(message: Message) -> dict[str, Any]:
    # Thinking blocks are dropped: their signatures only mean something to Anthropic, and
    # OpenAI upstreams do not take reasoning back as input.
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": dumps_args(b.input)},
        }
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return out


_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def render_request(request: Request) -> dict[str, Any]:
    """Canonical `Request` -> an OpenAI chat body for OpenAI-compatible upstreams.

    Per-model quirks (``max_completion_tokens``, dropped temperature) are not applied here:
    the provider's rules do that for the upstream model it actually calls.
    """
    meta = dict(request.provider_metadata.get("openai", {}))
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": "\n\n".join(b.text for b in request.system)})
    for message in request.messages:
        if message.role == "user":
            messages.extend(_user(message))
        elif message.role == "system":
            text = "\n\n".join(b.text for b in message.content if isinstance(b, TextBlock))
            messages.append({"role": "system", "content": text})
        else:
            messages.append(_assistant_message(message))
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    body.update((k, v) for k, v in meta.items() if not k.startswith("_"))
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.user is not None:
        body["user"] = end_user(request.user)
    for key in ("temperature", "top_p"):
        if getattr(request, key) is not None:
            body[key] = getattr(request, key)
    if request.response_format is not None:
        body["response_format"] = dict(request.response_format)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        strict = meta.get(STRICT_TOOLS, {})
        body["tools"] = [_tool(t, strict.get(t.name)) for t in request.tools]
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.type == "tool"
                else _TOOL_CHOICES[choice.type]
            )
            if choice.disable_parallel_tool_use:
                body["parallel_tool_calls"] = False
    effort = _effort(request.thinking)
    if effort is not None:
        body["reasoning_effort"] = effort
    if request.stream:
        # meridian always needs usage for its ledger, whatever the client asked for.
        body["stream"] = True
        body["stream_options"] = {**meta.get("stream_options", {}), "include_usage": True}
    else:
        body.pop("stream_options", None)  # OpenAI rejects stream_options without stream
    return body


def _tool(tool: Tool, strict: bool | None) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = dict(tool.input_schema)
    if strict is not None:
        fn["strict"] = strict
    return {"type": "function", "function": fn}
