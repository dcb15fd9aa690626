"""Anthropic Messages request bodies -> the canonical `Request`. No I/O.

`parse_request` validates a client's ``POST /v1/messages`` body strictly enough that a
mistake comes back as an `InvalidRequest` whose ``param`` is the JSON path of the offending
value (``messages.2.content.0.type``) and whose message says what to send instead.
`anthropic_render` is the other direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from meridian.errors import InvalidRequest
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
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)

# Top-level fields the canonical model has no slot for but an Anthropic upstream honours:
# kept under provider_metadata["anthropic"] and sent again by `render_request`.
KEPT_FIELDS = (
    "cache_control",  # top-level automatic prompt caching
    "inference_geo",
    "speed",
    "metadata",
    "output_config",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
)
_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "cache_control", "type"})
_BLOCK_TYPES = "text, image, document, tool_use, tool_result, thinking, redacted_thinking"


# ---------------------------------------------------------------------------- validation


def _fail(param: str, message: str) -> NoReturn:
    raise InvalidRequest(f"{param}: {message}", param=param)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _obj(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(path, f"expected an object, got {_kind(value)}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"expected an array, got {_kind(value)}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"expected a string, got {_kind(value)}")
    return value


def _opt_str(value: object, path: str) -> str | None:
    return None if value is None else _str(value, path)


def _int(value: object, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"expected an integer, got {_kind(value)}")
    if value < minimum:
        _fail(path, f"must be at least {minimum}, got {value}")
    return value


def _num(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, f"expected a number, got {_kind(value)}")
    return float(value)


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"expected true or false, got {_kind(value)}")
    return value


def _cache(block: Mapping[str, Any], path: str) -> Mapping[str, JSON] | None:
    value = block.get("cache_control")
    return None if value is None else _obj(value, f"{path}.cache_control")


# ---------------------------------------------------------------------------- parse


def parse_request(body: Mapping[str, Any]) -> Request:
    """A client's ``POST /v1/messages`` JSON body -> canonical `Request`."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    if "model" not in body:
        _fail("model", 'required: name the model to use, e.g. "claude-sonnet-4-5"')
    model = _str(body["model"], "model")
    if not model:
        _fail("model", "must not be empty")
    if "messages" not in body:
        _fail("messages", "required: a non-empty array of {role, content} messages")
    raw_messages = _list(body["messages"], "messages")
    if not raw_messages:
        _fail("messages", "must contain at least one message")
    messages = tuple(_message(m, f"messages.{i}") for i, m in enumerate(raw_messages))

    meta: dict[str, JSON] = {k: body[k] for k in KEPT_FIELDS if body.get(k) is not None}
    user: str | None = None
    if "metadata" in meta:
        user = _opt_str(_obj(meta["metadata"], "metadata").get("user_id"), "metadata.user_id")
    tools: list[Tool] = []
    if body.get("tools") is not None:
        server_tools: list[JSON] = []
        extras: dict[str, JSON] = {}
        for i, raw in enumerate(_list(body["tools"], "tools")):
            path = f"tools.{i}"
            spec = _obj(raw, path)
            if spec.get("type") not in (None, "custom"):
                # A server tool (web_search_…, code_execution_…): only an Anthropic upstream
                # knows it, so it rides along untouched.
                server_tools.append(spec)
                continue
            tool = _tool(spec, path)
            tools.append(tool)
            extra = {k: v for k, v in spec.items() if k not in _TOOL_FIELDS}
            if extra:
                extras[tool.name] = extra
        if server_tools:
            meta["server_tools"] = server_tools
        if extras:
            meta["tool_extras"] = extras
    stop: tuple[str, ...] = ()
    if body.get("stop_sequences") is not None:
        stop = tuple(
            _str(s, f"stop_sequences.{i}")
            for i, s in enumerate(_list(body["stop_sequences"], "stop_sequences"))
        )
    opt = body.get
    thinking = _thinking(opt("thinking"), meta)
    response_format = _output_format(meta)
    return Request(
        model=model,
        messages=messages,
        system=_system(opt("system")),
        max_tokens=None if opt("max_tokens") is None else _int(opt("max_tokens"), "max_tokens", 1),
        temperature=None if opt("temperature") is None else _num(opt("temperature"), "temperature"),
        top_p=None if opt("top_p") is None else _num(opt("top_p"), "top_p"),
        top_k=None if opt("top_k") is None else _int(opt("top_k"), "top_k", 0),
        stop=stop,
        tools=tuple(tools),
        tool_choice=_tool_choice(opt("tool_choice")),
        thinking=thinking,
        stream=False if opt("stream") is None else _bool(body["stream"], "stream"),
        user=user,
        response_format=response_format,
        provider_metadata={"anthropic": meta} if meta else {},
    )


def _output_format(meta: dict[str, JSON]) -> dict[str, JSON] | None:
    """``output_config.format`` (Anthropic's structured output) as the canonical
    ``response_format`` (OpenAI's json_schema shape), taken out of the kept
    ``output_config`` so that it is rendered once, from the canonical field."""
    config = meta.get("output_config")
    if not isinstance(config, Mapping) or "format" not in config:
        return None
    fmt = _obj(config["format"], "output_config.format")
    if fmt.get("type") != "json_schema":
        _fail("output_config.format.type", f'expected "json_schema", got {fmt.get("type")!r}')
    schema = _obj(fmt.get("schema"), "output_config.format.schema")
    rest = {k: v for k, v in config.items() if k != "format"}
    if rest:
        meta["output_config"] = rest
    else:
        del meta["output_config"]
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def _system(value: object) -> tuple[TextBlock, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (TextBlock(value),) if value else ()
    blocks: list[TextBlock] = []
    for i, raw in enumerate(_list(value, "system")):
        path = f"system.{i}"
        block = _obj(raw, path)
        if block.get("type") != "text":
            _fail(f"{path}.type", f"system blocks must be text blocks, got {block.get('type')!r}")
        blocks.append(_text(block, path))
    return tuple(blocks)


def _message(value: object, path: str) -> Message:
    msg = _obj(value, path)
    role = msg.get("role")
    if role not in ("user", "assistant", "system"):
        # Anthropic's own wording: Claude Code falls back to its compatible mode only when
        # it reads exactly this.
        _fail(f"{path}.role", "Input should be 'user' or 'assistant'")
    if "content" not in msg:
        _fail(f"{path}.content", "required: a string or an array of content blocks")
    content = msg["content"]
    if isinstance(content, str):
        return Message(role, (TextBlock(content),) if content else ())
    raw_blocks = _list(content, f"{path}.content")
    blocks = tuple(_block(b, f"{path}.content.{i}") for i, b in enumerate(raw_blocks))
    if role == "system" and not all(isinstance(b, TextBlock) for b in blocks):
        _fail(f"{path}.content", "a system message holds text blocks only")
    return Message(role, blocks)


def _block(value: object, path: str) -> Block:
    block = _obj(value, path)
    kind = block.get("type")
    if kind == "text":
        return _text(block, path)
    if kind == "image":
        return _image(block, path)
    if kind == "document":
        return _document(block, path)
    if kind == "tool_use":
        tool_input = block.get("input", {})
        return ToolUseBlock(
            id=_str(block.get("id"), f"{path}.id"),
            name=_str(block.get("name"), f"{path}.name"),
            input=_obj(tool_input, f"{path}.input"),
            cache_control=_cache(block, path),
        )
    if kind == "tool_result":
        return _tool_result(block, path)
    if kind == "thinking":
        return ThinkingBlock(
            thinking=_str(block.get("thinking"), f"{path}.thinking"),
            signature=_opt_str(block.get("signature"), f"{path}.signature") or "",
        )
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(_str(block.get("data"), f"{path}.data"))
    _fail(f"{path}.type", f"unknown content block type {kind!r}; expected one of {_BLOCK_TYPES}")


def _text(block: Mapping[str, Any], path: str) -> TextBlock:
    citations = block.get("citations")
    cited = () if citations is None else _list(citations, f"{path}.citations")
    return TextBlock(
        text=_str(block.get("text"), f"{path}.text"),
        cache_control=_cache(block, path),
        citations=tuple(_obj(c, f"{path}.citations.{i}") for i, c in enumerate(cited)),
    )


def _image(block: Mapping[str, Any], path: str) -> ImageBlock:
    source = _obj(block.get("source"), f"{path}.source")
    kind = source.get("type")
    if kind == "base64":
        return ImageBlock(
            media_type=_str(source.get("media_type"), f"{path}.source.media_type"),
            data=_str(source.get("data"), f"{path}.source.data"),
            cache_control=_cache(block, path),
        )
    if kind == "url":
        url = _str(source.get("url"), f"{path}.source.url")
        return ImageBlock(url=url, cache_control=_cache(block, path))
    _fail(
        f"{path}.source.type",
        f'unsupported image source {kind!r}: send "base64" (media_type, data) or "url"',
    )


def _document(block: Mapping[str, Any], path: str) -> DocumentBlock:
    source = _obj(block.get("source"), f"{path}.source")
    _str(source.get("type"), f"{path}.source.type")
    return DocumentBlock(
        source=source,
        title=_opt_str(block.get("title"), f"{path}.title"),
        cache_control=_cache(block, path),
    )


def _tool_result(block: Mapping[str, Any], path: str) -> ToolResultBlock:
    content = block.get("content")
    parts: tuple[TextBlock | ImageBlock | DocumentBlock, ...] = ()
    if isinstance(content, str):
        parts = (TextBlock(content),) if content else ()
    elif content is not None:
        items: list[TextBlock | ImageBlock | DocumentBlock] = []
        for i, raw in enumerate(_list(content, f"{path}.content")):
            item = _block(raw, f"{path}.content.{i}")
            if not isinstance(item, TextBlock | ImageBlock | DocumentBlock):
                _fail(f"{path}.content.{i}.type", "a tool_result holds only text, image, document")
            items.append(item)
        parts = tuple(items)
    is_error = block.get("is_error")
    return ToolResultBlock(
        tool_use_id=_str(block.get("tool_use_id"), f"{path}.tool_use_id"),
        content=parts,
        is_error=False if is_error is None else _bool(is_error, f"{path}.is_error"),
        cache_control=_cache(block, path),
    )


def _tool(spec: Mapping[str, Any], path: str) -> Tool:
    name = _str(spec.get("name"), f"{path}.name")
    if not name:
        _fail(f"{path}.name", "must not be empty")
    if "input_schema" not in spec:
        _fail(f"{path}.input_schema", "required: a JSON Schema object for the tool's input")
    return Tool(
        name=name,
        description=_opt_str(spec.get("description"), f"{path}.description"),
        input_schema=_obj(spec["input_schema"], f"{path}.input_schema"),
        cache_control=_cache(spec, path),
    )


def _tool_choice(value: object) -> ToolChoice | None:
    if value is None:
        return None
    choice = _obj(value, "tool_choice")
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        _fail("tool_choice.type", f'must be "auto", "any", "tool" or "none", got {kind!r}')
    name = _opt_str(choice.get("name"), "tool_choice.name")
    if kind == "tool" and not name:
        _fail("tool_choice.name", 'required when tool_choice.type is "tool"')
    disable = choice.get("disable_parallel_tool_use")
    return ToolChoice(
        type=kind,
        name=name if kind == "tool" else None,
        disable_parallel_tool_use=False
        if disable is None
        else _bool(disable, "tool_choice.disable_parallel_tool_use"),
    )


def _thinking(value: object, meta: dict[str, JSON]) -> Thinking | None:
    if value is None:
        return None
    thinking = _obj(value, "thinking")
    kind = thinking.get("type")
    if thinking.get("display") is not None:
        meta["thinking_display"] = thinking["display"]
    if kind == "enabled":
        if "budget_tokens" not in thinking:
            _fail("thinking.budget_tokens", 'required when thinking.type is "enabled"')
        return Thinking(budget_tokens=_int(thinking["budget_tokens"], "thinking.budget_tokens", 1))
    if kind == "disabled":
        return Thinking(enabled=False)
    if kind == "adaptive":
        return Thinking()
    _fail("thinking.type", f'must be "enabled", "disabled" or "adaptive", got {kind!r}')
