"""The ``input`` of a Responses request (a string, or a list of items) -> canonical system
blocks and messages. Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.
Error ``param`` values follow OpenAI's style: ``input[2].content[0].image_url``.

Turns: the items of one assistant turn (``reasoning``, assistant ``message``s,
``function_call``s) in a row become one assistant message; ``function_call_output`` items
in a row become one user turn of tool results, and a user message right after them joins
that turn (as `meridian.wire.openai_request` does with ``role: tool``). ``system`` and
``developer`` messages join the system prompt, wherever they stand.

Reasoning items: their text (``content`` reasoning text, else the ``summary`` parts joined
by a blank line) and ``encrypted_content`` become a `ThinkingBlock` (text, signature), and
meridian's own redacted-thinking marker a `RedactedThinkingBlock`. A reasoning item with
neither text nor encrypted content carries nothing a model could use and is dropped; its
``id`` is never kept (it names an item only OpenAI's store could resolve).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

from meridian.errors import InvalidRequest
from meridian.model import (
    Block,
    DocumentBlock,
    ImageBlock,
    Message,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.wire.openai_responses_items import reasoning_block

# Output items of OpenAI's built-in tools: only a native Responses upstream can take them
# back as input (each refers to a call its own servers ran).
BUILTIN_ITEMS = frozenset(
    {
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "tool_search_call",
        "tool_search_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "custom_tool_call",
        "custom_tool_call_output",
        "compaction",
        "compaction_trigger",
        "additional_tools",
        "program",
        "program_output",
    }
)


def fail(param: str | None, message: str, code: str | None = None) -> NoReturn:
    raise InvalidRequest(message, param=param, code=code)


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        fail(param, f"'{param}' must be a string, got {kind(value)}")
    return value


def obj(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(param, f"'{param}' must be an object, got {kind(value)}")
    return value


# ---------------------------------------------------------------------------- content parts


def _image(part: Mapping[str, Any], param: str) -> ImageBlock:
    url = part.get("image_url")
    if url is None:
        if part.get("file_id") is not None:
            fail(
                f"{param}.file_id",
                "images by 'file_id' need OpenAI's file storage, which this model does not "
                "have; send the image inline as 'image_url' (a data: URL or an https URL)",
            )
        fail(f"{param}.image_url", f"'{param}.image_url' is required")
    url = string(url, f"{param}.image_url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type or not data:
            fail(f"{param}.image_url", "image data URLs must look like 'data:image/png;base64,...'")
        return ImageBlock(media_type=media_type, data=data)
    if url.startswith(("http://", "https://")):
        return ImageBlock(url=url)
    fail(f"{param}.image_url", "image URLs must be http(s) URLs or base64 'data:' URLs")


def _file(part: Mapping[str, Any], param: str) -> DocumentBlock:
    filename = part.get("filename")
    title = filename if isinstance(filename, str) else None
    data, url = part.get("file_data"), part.get("file_url")
    if isinstance(data, str) and data:
        media_type = "application/pdf"
        if data.startswith("data:"):
            header, _, data = data[5:].partition(",")
            media_type = header.partition(";")[0] or media_type
        source = {"type": "base64", "media_type": media_type, "data": data}
        return DocumentBlock(source=source, title=title)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return DocumentBlock(source={"type": "url", "url": url}, title=title)
    if part.get("file_id") is not None:
        fail(
            f"{param}.file_id",
            "files by 'file_id' need OpenAI's file storage, which this model does not have; "
            "send the file inline as 'file_data' (a base64 data: URL) or as an https 'file_url'",
        )
    fail(param, f"'{param}' needs 'file_data' (base64) or 'file_url' (https)")


_USER_PARTS = ("input_text", "input_image", "input_file")
_ASSISTANT_PARTS = ("output_text", "refusal", "input_text")


def _parts(content: Any, param: str, allowed: tuple[str, ...]) -> list[Block]:
    if isinstance(content, str):
        return [TextBlock(content)]
    if not isinstance(content, list):
        fail(param, f"'{param}' must be a string or an array of content parts, got {kind(content)}")
    blocks: list[Block] = []
    for j, raw in enumerate(content):
        p = f"{param}[{j}]"
        part = obj(raw, p)
        type_ = part.get("type")
        if type_ not in allowed:
            fail(
                f"{p}.type",
                f"content part type {type_!r} is not supported here; "
                f"expected one of: {', '.join(allowed)}",
            )
        if type_ == "input_image":
            blocks.append(_image(part, p))
        elif type_ == "input_file":
            blocks.append(_file(part, p))
        elif type_ == "refusal":
            blocks.append(TextBlock(string(part.get("refusal"), f"{p}.refusal")))
        else:
            blocks.append(TextBlock(string(part.get("text"), f"{p}.text")))
    return blocks


# ---------------------------------------------------------------------------- items


def _function_call(item: Mapping[str, Any], param: str) -> ToolUseBlock:
    call_id = string(item.get("call_id"), f"{param}.call_id")
    name = string(item.get("name"), f"{param}.name")
    raw = item.get("arguments", "")
    args: Any = raw
    if isinstance(raw, str):
        try:
            args = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            fail(f"{param}.arguments", f"'{param}.arguments' is not valid JSON")
    if not isinstance(args, Mapping):
        fail(f"{param}.arguments", f"'{param}.arguments' must be a JSON object (as a string)")
    return ToolUseBlock(id=call_id, name=name, input=args)


def _function_output(item: Mapping[str, Any], param: str) -> ToolResultBlock:
    call_id = string(item.get("call_id"), f"{param}.call_id")
    output = item.get("output")
    if output is None:
        fail(f"{param}.output", f"'{param}.output' is required: a string or content parts")
    parts = _parts(output, f"{param}.output", _USER_PARTS)
    content = tuple(p for p in parts if isinstance(p, TextBlock | ImageBlock | DocumentBlock))
    return ToolResultBlock(call_id, content)


def _role(item: Mapping[str, Any], param: str) -> str:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        fail(
            f"{param}.role",
            f"unknown role {role!r}; expected one of: user, assistant, system, developer",
        )
    return str(role)


def parse_input(raw: Any) -> tuple[list[TextBlock], list[Message]]:
    """``input`` -> (system blocks from system/developer messages, messages)."""
    if raw is None:
        fail("input", "'input' is required: a string or a non-empty array of input items")
    if isinstance(raw, str):
        return [], [Message("user", (TextBlock(raw),))]
    if not isinstance(raw, list):
        fail("input", f"'input' must be a string or an array of input items, got {kind(raw)}")
    if not raw:
        fail("input", "'input' must not be empty: send at least one message")
    system: list[TextBlock] = []
    messages: list[Message] = []
    tool_turn = False  # the last message is a user turn built from function_call_outputs

    def add(role: Role, blocks: list[Block], *, join: bool) -> None:
        if join and messages and messages[-1].role == role:
            messages[-1] = Message(role, (*messages[-1].content, *blocks))
        else:
            messages.append(Message(role, tuple(blocks)))

    for i, value in enumerate(raw):
        param = f"input[{i}]"
        item = obj(value, param)
        type_ = item.get("type", "message" if "role" in item else None)
        if type_ == "message":
            role = _role(item, param)
            content = item.get("content")
            if role in ("system", "developer"):
                texts = [
                    b
                    for b in _parts(content, f"{param}.content", ("input_text",))
                    if isinstance(b, TextBlock)
                ]
                if messages:  # mid-conversation: it stays where it was said
                    add("system", list(texts), join=False)
                    tool_turn = False
                else:
                    system.extend(texts)
                continue
            if role == "assistant":
                # Clients send empty text next to function calls; it is no content.
                blocks = [
                    b
                    for b in _parts(content, f"{param}.content", _ASSISTANT_PARTS)
                    if not (isinstance(b, TextBlock) and not b.text)
                ]
                if blocks:
                    add("assistant", blocks, join=True)
                    tool_turn = False
            else:
                add("user", _parts(content, f"{param}.content", _USER_PARTS), join=tool_turn)
                tool_turn = False
        elif type_ == "function_call":
            add("assistant", [_function_call(item, param)], join=True)
            tool_turn = False
        elif type_ == "function_call_output":
            add("user", [_function_output(item, param)], join=tool_turn)
            tool_turn = True
        elif type_ == "reasoning":
            block = reasoning_block(item)
            if block is not None:
                add("assistant", [block], join=True)
                tool_turn = False
        elif type_ == "item_reference":
            fail(
                f"{param}.id",
                "'item_reference' input items point into OpenAI's response store, and meridian "
                "keeps no state on this model: send the item itself instead of a reference",
            )
        elif type_ in BUILTIN_ITEMS:
            fail(
                f"{param}.type",
                f"input item type {type_!r} belongs to an OpenAI built-in tool, which this "
                "model does not serve; remove it from the input or use a model whose "
                "upstream serves the Responses API natively",
            )
        else:
            fail(f"{param}.type", f"unknown input item type {type_!r}")
    return system, messages
