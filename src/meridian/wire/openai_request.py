"""OpenAI Chat Completions request bodies -> the canonical `Request` (the client side).

Public names are re-exported from `meridian.wire.openai_chat`; import them from there.
Error ``param`` values follow OpenAI's own style: ``messages[2].content[0].image_url``.
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
    Request,
    TextBlock,
    Thinking,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from meridian.wire.openai_common import STRICT_TOOLS

# Fields with no canonical home that an OpenAI upstream understands: kept in
# provider_metadata["openai"] and merged back by `render_request`. Keys there that start
# with "_" are meridian's own notes and are never sent.
FORWARDED_FIELDS = (
    "seed",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "modalities",
    "audio",
    "verbosity",
    "web_search_options",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "stream_options",
)


def _fail(param: str | None, message: str, code: str | None = None) -> NoReturn:
    raise InvalidRequest(message, param=param, code=code)


def _str(value: Any, param: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        _fail(param, f"'{param}' must be {what}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(key, f"'{key}' must be a number, got {_kind(value)}")
    return float(value)


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(key, f"'{key}' must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------- content


def _image(url: Any, param: str) -> ImageBlock:
    url = _str(url, param)
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type or not data:
            _fail(param, "image data URLs must look like 'data:image/png;base64,<data>'")
        return ImageBlock(media_type=media_type, data=data)
    if url.startswith(("http://", "https://")):
        return ImageBlock(url=url)
    _fail(param, "image URLs must be http(s) URLs or base64 'data:' URLs")


def _file(file: Any, param: str) -> DocumentBlock:
    if not isinstance(file, Mapping):
        _fail(param, f"'{param}' must be an object")
    filename = file.get("filename")
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        _fail(f"{param}.file_data", "only inline files ('file_data') are supported, not file ids")
    media_type = "application/pdf"
    if data.startswith("data:"):
        header, _, data = data[5:].partition(",")
        media_type = header.partition(";")[0] or media_type
    source = {"type": "base64", "media_type": media_type, "data": data}
    return DocumentBlock(source=source, title=filename if isinstance(filename, str) else None)


def _parts(content: Any, param: str, allowed: frozenset[str]) -> list[Block]:
    """Message content (a string or a list of parts) -> canonical blocks."""
    if isinstance(content, str):
        return [TextBlock(content)]
    if not isinstance(content, list):
        _fail(
            param, f"'{param}' must be a string or an array of content parts, got {_kind(content)}"
        )
    blocks: list[Block] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, Mapping):
            _fail(p, f"'{p}' must be an object, got {_kind(part)}")
        kind = part.get("type")
        if kind not in allowed:
            _fail(
                f"{p}.type",
                f"content part type {kind!r} is not supported here; "
                f"expected one of: {', '.join(sorted(allowed))}",
            )
        if kind == "text":
            blocks.append(TextBlock(_str(part.get("text"), f"{p}.text")))
        elif kind == "refusal":
            blocks.append(TextBlock(_str(part.get("refusal"), f"{p}.refusal")))
        elif kind == "image_url":
            image = part.get("image_url")
            # Some clients (and vLLM) send the URL as a bare string.
            url = image.get("url") if isinstance(image, Mapping) else image
            blocks.append(_image(url, f"{p}.image_url.url"))
        else:
            blocks.append(_file(part.get("file"), f"{p}.file"))
    return blocks


_USER_PARTS = frozenset({"text", "image_url", "file"})
_TEXT_PARTS = frozenset({"text"})
_ASSISTANT_PARTS = frozenset({"text", "refusal"})
_TOOL_PARTS = frozenset({"text", "image_url"})


def _tool_calls(calls: Any, param: str) -> list[Block]:
    if not isinstance(calls, list):
        _fail(param, f"'{param}' must be an array, got {_kind(calls)}")
    blocks: list[Block] = []
    for j, call in enumerate(calls):
        p = f"{param}[{j}]"
        if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
            _fail(p, f"'{p}' must be an object with 'id', 'type' and 'function'")
        fn = call["function"]
        args = fn.get("arguments", "")
        if isinstance(args, str):
            try:
                args = orjson.loads(args) if args.strip() else {}
            except orjson.JSONDecodeError:
                _fail(f"{p}.function.arguments", f"'{p}.function.arguments' is not valid JSON")
        if not isinstance(args, Mapping):
            _fail(f"{p}.function.arguments", f"'{p}.function.arguments' must be a JSON object")
        blocks.append(
            ToolUseBlock(
                id=_str(call.get("id"), f"{p}.id"),
                name=_str(fn.get("name"), f"{p}.function.name"),
                input=args,
            )
        )
    return blocks


def _assistant(msg: Mapping[str, Any], param: str) -> list[Block]:
    blocks: list[Block] = []
    for key in ("reasoning_content", "reasoning"):
        thinking = msg.get(key)
        if isinstance(thinking, str) and thinking:
            blocks.append(ThinkingBlock(thinking))
            break
    content = msg.get("content")
    if content is not None:
        # Clients send content "" next to tool_calls; an empty text block is no content.
        blocks.extend(
            b
            for b in _parts(content, f"{param}.content", _ASSISTANT_PARTS)
            if not (isinstance(b, TextBlock) and not b.text)
        )
    if msg.get("tool_calls") is not None:
        blocks.extend(_tool_calls(msg["tool_calls"], f"{param}.tool_calls"))
    return blocks


def _tool_result(msg: Mapping[str, Any], param: str) -> ToolResultBlock:
    call_id = _str(msg.get("tool_call_id"), f"{param}.tool_call_id")
    content = msg.get("content")
    if content is None:
        content = ""
    parts = _parts(content, f"{param}.content", _TOOL_PARTS)
    return ToolResultBlock(
        call_id, tuple(p for p in parts if isinstance(p, TextBlock | ImageBlock))
    )


def _messages(raw: Any) -> tuple[list[TextBlock], list[Message]]:
    if raw is None:
        _fail("messages", "'messages' is required: a non-empty array of chat messages")
    if not isinstance(raw, list):
        _fail("messages", f"'messages' must be a non-empty array, got {_kind(raw)}")
    if not raw:
        _fail("messages", "'messages' must be a non-empty array: send at least one message")
    system: list[TextBlock] = []
    messages: list[Message] = []
    # True while the last canonical message is a user turn built from role:tool messages:
    # further tool messages and one following user message join that same turn.
    tool_turn = False
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            _fail(param, f"'{param}' must be an object, got {_kind(msg)}")
        role = msg.get("role")
        if role in ("system", "developer"):
            texts = tuple(
                b
                for b in _parts(msg.get("content"), f"{param}.content", _TEXT_PARTS)
                if isinstance(b, TextBlock)
            )
            if messages:  # in the middle of the conversation: it stays where it was said
                messages.append(Message("system", texts))
                tool_turn = False
            else:
                system.extend(texts)
        elif role == "user":
            blocks = _parts(msg.get("content"), f"{param}.content", _USER_PARTS)
            if tool_turn:
                messages[-1] = Message("user", (*messages[-1].content, *blocks))
            else:
                messages.append(Message("user", tuple(blocks)))
            tool_turn = False
        elif role == "assistant":
            messages.append(Message("assistant", tuple(_assistant(msg, param))))
            tool_turn = False
        elif role == "tool":
            result = _tool_result(msg, param)
            if tool_turn:
                messages[-1] = Message("user", (*messages[-1].content, result))
            else:
                messages.append(Message("user", (result,)))
            tool_turn = True
        else:
            _fail(
                f"{param}.role",
                f"unknown role {role!r}; expected one of: system, developer, user, assistant, tool",
            )
    return system, messages


# ---------------------------------------------------------------------------- tools


def _tools(raw: Any) -> tuple[list[Tool], dict[str, bool]]:
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        _fail("tools", f"'tools' must be an array, got {_kind(raw)}")
    tools: list[Tool] = []
    strict: dict[str, bool] = {}
    for i, tool in enumerate(raw):
        p = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            _fail(f"{p}.type", "only tools of type 'function' are supported")
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            _fail(f"{p}.function", f"'{p}.function' must be an object")
        name = _str(fn.get("name"), f"{p}.function.name")
        description = fn.get("description")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            _fail(
                f"{p}.function.parameters",
                f"'{p}.function.parameters' must be a JSON schema object",
            )
        tools.append(
            Tool(
                name=name,
                description=_str(description, f"{p}.function.description") if description else None,
                input_schema=params if params is not None else {"type": "object", "properties": {}},
            )
        )
        if isinstance(fn.get("strict"), bool):
            strict[name] = fn["strict"]
    return tools, strict


def _tool_choice(raw: Any, parallel: Any) -> ToolChoice | None:
    if parallel is not None and not isinstance(parallel, bool):
        _fail("parallel_tool_calls", "'parallel_tool_calls' must be a boolean")
    serial = parallel is False
    if raw is None:
        return ToolChoice("auto", disable_parallel_tool_use=True) if serial else None
    if raw in ("none", "auto"):
        return ToolChoice(raw, disable_parallel_tool_use=serial)
    if raw == "required":
        return ToolChoice("any", disable_parallel_tool_use=serial)
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        fn = raw.get("function")
        name = _str(
            fn.get("name") if isinstance(fn, Mapping) else None, "tool_choice.function.name"
        )
        return ToolChoice("tool", name=name, disable_parallel_tool_use=serial)
    _fail(
        "tool_choice",
        "'tool_choice' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
    )


# ---------------------------------------------------------------------------- parse


def parse_request(body: Mapping[str, Any]) -> Request:
    """A client's ``POST /v1/chat/completions`` JSON -> canonical `Request`."""
    if not isinstance(body, Mapping):
        _fail(None, "the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        _fail("model", "you must provide a model parameter")
    model = _str(model, "model")
    system, messages = _messages(body.get("messages"))

    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        _fail("n", f"'n' must be a positive integer, got {n!r}")
    if isinstance(n, int) and n > 1:
        _fail(
            "n",
            "n > 1 is not supported: meridian returns one choice per request; "
            "send n separate requests instead",
            code="unsupported_parameter",
        )

    stop = body.get("stop")
    if isinstance(stop, str):
        stops: tuple[str, ...] = (stop,)
    elif stop is None:
        stops = ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        _fail("stop", "'stop' must be a string or an array of strings")

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        _fail("stream", f"'stream' must be a boolean, got {_kind(stream)}")
    effort = body.get("reasoning_effort")
    thinking = None
    if effort is not None:
        effort = _str(effort, "reasoning_effort")
        thinking = Thinking(enabled=effort != "none", effort=effort)
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, Mapping):
        _fail("stream_options", "'stream_options' must be an object")
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, Mapping):
        _fail("response_format", "'response_format' must be an object")
    user = body.get("user")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    tools, strict = _tools(body.get("tools"))

    extra: dict[str, Any] = {k: body[k] for k in FORWARDED_FIELDS if body.get(k) is not None}
    if strict:
        extra[STRICT_TOOLS] = strict
    return Request(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=stops,
        tools=tuple(tools),
        tool_choice=_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls")),
        thinking=thinking,
        stream=bool(stream),
        response_format=response_format,
        user=_str(user, "user") if user is not None else None,
        provider_metadata={"openai": extra} if extra else {},
    )
