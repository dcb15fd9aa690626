"""Output items of the Responses API <-> canonical blocks. Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.

- consecutive `TextBlock`s -> one ``message`` item, one ``output_text`` part per block;
- `ToolUseBlock` -> a ``function_call`` item; its ``call_id`` is the block's id;
- `ThinkingBlock` -> a ``reasoning`` item: the thinking text is its one ``summary_text``
  (what Responses clients display) and the signature its ``encrypted_content`` (the opaque
  string clients send back, byte for byte, in the next request's input);
- `RedactedThinkingBlock` -> a ``reasoning`` item with no summary whose
  ``encrypted_content`` is `REDACTED_PREFIX` + the data. The prefix holds a ``:``, which
  neither Anthropic signatures nor OpenAI's encrypted content (both base64) contain.

Back, a reasoning item's text is its ``content`` reasoning text if any (raw reasoning, as
gpt-oss servers send), else its ``summary`` parts joined by a blank line.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

from meridian.model import (
    Block,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    parse_tool_input,
)
from meridian.wire.openai_common import dumps_args

REDACTED_PREFIX = "meridian.redacted_thinking:"

Status = Literal["completed", "incomplete", "in_progress", "failed"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]


class OutputText(TypedDict):
    type: Literal["output_text"]
    annotations: list[Any]
    logprobs: list[Any]
    text: str


class MessageItem(TypedDict):
    id: str
    type: Literal["message"]
    status: ItemStatus
    content: list[OutputText]
    role: Literal["assistant"]


class FunctionCallItem(TypedDict):
    id: str
    type: Literal["function_call"]
    status: ItemStatus
    arguments: str
    call_id: str
    name: str


class SummaryText(TypedDict):
    type: Literal["summary_text"]
    text: str


class ReasoningItem(TypedDict):
    id: str
    type: Literal["reasoning"]
    summary: list[SummaryText]
    encrypted_content: NotRequired[str]


OutputItem = MessageItem | FunctionCallItem | ReasoningItem


# ---------------------------------------------------------------------------- ids


def response_id(id: str) -> str:
    """Responses ids start with ``resp_``; a canonical id (``msg_…``, ``chatcmpl-…``) is kept
    inside it so logs on both sides still match."""
    if id.startswith("resp_"):
        return id
    return "resp_" + (id or uuid.uuid4().hex)


def item_id(kind: Literal["msg", "fc", "rs"], response: str, output_index: int) -> str:
    """A stable id per output item, derived from the response id: the streamed and the
    collected form of one answer name their items alike."""
    return f"{kind}_{response.removeprefix('resp_')}_{output_index}"


# ---------------------------------------------------------------------------- items


def output_text(text: str) -> OutputText:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def message_item(id: str, texts: Sequence[str], status: ItemStatus) -> MessageItem:
    return {
        "id": id,
        "type": "message",
        "status": status,
        "content": [output_text(t) for t in texts],
        "role": "assistant",
    }


def function_call_item(
    id: str, call_id: str, name: str, arguments: str, status: ItemStatus
) -> FunctionCallItem:
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def reasoning_item(id: str, summary: str, encrypted: str) -> ReasoningItem:
    item: ReasoningItem = {
        "id": id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": summary}] if summary else [],
    }
    if encrypted:
        item["encrypted_content"] = encrypted
    return item


def output_items(blocks: Sequence[Block], response: str, status: Status) -> list[OutputItem]:
    """Canonical answer blocks -> output items. A message that ends an incomplete answer is
    itself ``incomplete`` (it is the text that was cut short), as a stream shows it."""
    items: list[OutputItem] = []
    message: MessageItem | None = None
    for block in blocks:
        if isinstance(block, TextBlock):
            if message is None:
                message = message_item(item_id("msg", response, len(items)), (), "completed")
                items.append(message)
            message["content"].append(output_text(block.text))
            continue
        message = None
        n = len(items)
        if isinstance(block, ToolUseBlock):
            args = dumps_args(block.input)
            items.append(
                function_call_item(
                    item_id("fc", response, n), block.id, block.name, args, "completed"
                )
            )
        elif isinstance(block, ThinkingBlock):
            items.append(
                reasoning_item(item_id("rs", response, n), block.thinking, block.signature)
            )
        elif isinstance(block, RedactedThinkingBlock):
            items.append(
                reasoning_item(item_id("rs", response, n), "", REDACTED_PREFIX + block.data)
            )
        # Images, documents and tool results are input-only: no model answers with them.
    if status == "incomplete" and items and items[-1]["type"] == "message":
        items[-1]["status"] = "incomplete"
    return items


# ---------------------------------------------------------------------------- back to blocks


def _texts(value: Any, *types: str) -> list[str]:
    if not isinstance(value, list):
        return []
    return [
        p["text"]
        for p in value
        if isinstance(p, Mapping) and p.get("type") in types and isinstance(p.get("text"), str)
    ]


def reasoning_block(item: Mapping[str, Any]) -> ThinkingBlock | RedactedThinkingBlock | None:
    """A reasoning item (input or output) -> its canonical block, None if it carries nothing."""
    encrypted = item.get("encrypted_content")
    encrypted = encrypted if isinstance(encrypted, str) else ""
    text = "".join(_texts(item.get("content"), "reasoning_text", "text")) or "\n\n".join(
        _texts(item.get("summary"), "summary_text")
    )
    if encrypted.startswith(REDACTED_PREFIX) and not text:
        return RedactedThinkingBlock(encrypted[len(REDACTED_PREFIX) :])
    if not text and not encrypted:
        return None
    return ThinkingBlock(text, encrypted)


def item_blocks(item: Mapping[str, Any]) -> tuple[list[Block], bool]:
    """One output item -> its canonical blocks, and whether it holds a refusal. Items of
    built-in tools (``web_search_call``, ...) have no canonical form: no blocks."""
    kind = item.get("type")
    if kind == "message":
        blocks: list[Block] = []
        refused = False
        parts = item.get("content")
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                blocks.append(TextBlock(part["text"]))
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                blocks.append(TextBlock(part["refusal"]))
                refused = True
        return blocks, refused
    if kind == "function_call":
        args = item.get("arguments")
        call = ToolUseBlock(
            id=str(item.get("call_id") or item.get("id") or ""),
            name=str(item.get("name", "")),
            input=args if isinstance(args, Mapping) else parse_tool_input(str(args or "")),
        )
        return [call], False
    if kind == "reasoning":
        block = reasoning_block(item)
        return ([block] if block is not None else []), False
    return [], False
