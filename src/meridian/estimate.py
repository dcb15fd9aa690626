"""How many input tokens a request body holds, estimated without a tokenizer.

Used to reserve a call's cost against a key's limits before the upstream has said what it
used (`meridian.limits`). Pure and cheap: text at four characters a token (English prose
runs 3.5-4.5; code and JSON a little fewer, so this errs high), an image at the most a
vision model charges for one (~1,600 tokens for Anthropic's largest unscaled size), tools
and structured content at the length of their JSON, and a few tokens of framing per
message. It reads both API families' bodies: Anthropic (``system``, content blocks) and
OpenAI (``messages`` with string or part-list content, ``tool_calls``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1_600
DOCUMENT_TOKENS = 3_000  # a PDF page set the estimate cannot see into
MESSAGE_OVERHEAD = 4

_IMAGES = frozenset({"image", "image_url", "input_image"})
_DOCUMENTS = frozenset({"document", "file", "input_file"})


def input_tokens(body: Mapping[str, Any]) -> int:
    """The estimated input tokens of a chat request body of either API family."""
    chars = 0
    tokens = 0
    system = body.get("system")
    if system is not None:
        c, t = _content(system)
        chars, tokens = chars + c, tokens + t
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        tokens += MESSAGE_OVERHEAD
        c, t = _content(message.get("content"))
        chars, tokens = chars + c, tokens + t
        calls = message.get("tool_calls")
        if calls:
            chars += len(_json(calls))
    tools = body.get("tools")
    if tools:
        chars += len(_json(tools))
    return tokens + -(-chars // CHARS_PER_TOKEN)


def _content(content: Any) -> tuple[int, int]:
    """(characters of text, tokens of media) in a content value."""
    if isinstance(content, str):
        return len(content), 0
    if not isinstance(content, list):
        return 0, 0
    chars = tokens = 0
    for block in content:
        if isinstance(block, str):
            chars += len(block)
            continue
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind in _IMAGES:
            tokens += IMAGE_TOKENS
        elif kind in _DOCUMENTS:
            tokens += DOCUMENT_TOKENS
        elif isinstance(block.get("text"), str):
            chars += len(block["text"])
        elif kind == "tool_result":
            c, t = _content(block.get("content"))
            chars, tokens = chars + c, tokens + t
        elif kind in ("thinking", "redacted_thinking"):
            chars += len(block.get("thinking") or block.get("data") or "")
        else:  # tool_use input and anything newer: its JSON
            chars += len(_json(block))
    return chars, tokens


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return b""
