"""OpenAI Responses request bodies (``POST /v1/responses``) -> the canonical `Request`.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.

`parse_request` is the translated path's parser: everything meridian cannot carry to a
chat-only, Anthropic or Claude upstream is a clear 400 there, never a silent drop:

- server-side state (``previous_response_id``, ``conversation``, a stored ``prompt``,
  ``background``): meridian keeps none; `require_stateless` says to send the full input.
  The pass-through path forwards these to an upstream that serves Responses natively.
- OpenAI's built-in tools (``web_search``, ``file_search``, ``code_interpreter``,
  ``computer_use_preview``, ``mcp``, ``image_generation``, ...), named in the error;
  `builtin_tools` lists them so a router can prefer a native upstream.

``store`` is accepted and never honoured: every response says ``"store": false``, and
`stateless_headers` gives the header that says so when the client asked to store (or left
it at the API's default, true).

Canonical homes: ``instructions`` and system/developer messages -> ``system``;
``max_output_tokens`` -> ``max_tokens``; ``reasoning.effort`` -> ``thinking.effort``;
``text.format`` -> ``response_format`` in its Chat Completions shape (what every renderer
reads); ``user`` (else ``safety_identifier``) -> ``user``. ``metadata``, ``service_tier``,
``prompt_cache_key``, ``text.verbosity`` and each tool's ``strict`` go to
``provider_metadata["openai"]`` (an OpenAI chat upstream receives them); ``store`` as asked
and ``reasoning.summary`` to ``provider_metadata["openai_responses"]``. Parameters with no
meaning without OpenAI's servers (``include``, ``truncation``, ``max_tool_calls``,
``top_logprobs``, ``stream_options``) and unknown fields are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meridian.model import Request, TextBlock, Thinking, Tool, ToolChoice
from meridian.wire.openai_common import STRICT_TOOLS
from meridian.wire.openai_responses_common import RESPONSES
from meridian.wire.openai_responses_input import fail, kind, obj, parse_input, string

# Request fields with a chat-upstream meaning, kept in provider_metadata["openai"].
FORWARDED_FIELDS = ("metadata", "service_tier", "prompt_cache_key", "prompt_cache_retention")

STATELESS_HEADER = "x-meridian-store"

_STATEFUL = {
    "previous_response_id": "'previous_response_id' needs the earlier response stored on the "
    "server, and meridian keeps no responses for this model: send the full conversation in "
    "'input' instead (the earlier input items plus that response's output items)",
    "conversation": "'conversation' needs a conversation stored on the server, and meridian "
    "keeps none for this model: send the full conversation in 'input' instead",
    "prompt": "'prompt' refers to a prompt template stored on OpenAI's servers, which this "
    "model cannot reach: send the prompt itself as 'instructions' and 'input'",
}


def require_stateless(body: Mapping[str, Any]) -> None:
    """Raise `InvalidRequest` for parameters that need OpenAI's server-side state.

    Call it on the translated path only: the pass-through forwards them as they are.
    """
    for key, message in _STATEFUL.items():
        if body.get(key) is not None:
            fail(key, message, code="unsupported_parameter")
    if body.get("background") is True:
        fail(
            "background",
            "'background' responses are stored and polled on the server, and meridian keeps "
            "no responses for this model: send the request with background false (or "
            "stream it)",
            code="unsupported_parameter",
        )


def stateless_headers(body: Mapping[str, Any]) -> dict[str, str]:
    """Response headers for a translated answer: ``x-meridian-store: false`` unless the client
    itself sent ``store: false`` (the API's default is to store)."""
    return {} if body.get("store") is False else {STATELESS_HEADER: "false"}


def check_request(body: Mapping[str, Any]) -> tuple[str, bool]:
    """What routing needs before anything else, on both paths: (model, stream)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        fail("model", "'model' is required and must be a string naming a model")
    raw = body.get("input")
    if not (isinstance(raw, str) or (isinstance(raw, list) and raw)):
        fail("input", "'input' is required: a string or a non-empty array of input items")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        fail("stream", f"'stream' must be a boolean, got {kind(stream)}")
    return model, bool(stream)


# ---------------------------------------------------------------------------- tools


def builtin_tools(body: Mapping[str, Any]) -> list[str]:
    """The types of the request's tools that are not client-side functions
    (``web_search``, ``mcp``, ...), in order; empty when every tool is a function."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        str(t.get("type"))
        for t in tools
        if isinstance(t, Mapping) and t.get("type", "function") != "function"
    ]


def _tools(raw: Any) -> tuple[list[Tool], dict[str, bool]]:
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        fail("tools", f"'tools' must be an array, got {kind(raw)}")
    tools: list[Tool] = []
    strict: dict[str, bool] = {}
    for i, value in enumerate(raw):
        p = f"tools[{i}]"
        tool = obj(value, p)
        type_ = tool.get("type", "function")
        if type_ != "function":
            fail(
                f"{p}.type",
                f"the tool {type_!r} is one of OpenAI's built-in tools, which this model does "
                "not serve: remove it, declare a function tool instead, or use a model whose "
                "upstream serves the Responses API natively",
                code="unsupported_tool",
            )
        name = string(tool.get("name"), f"{p}.name")
        params = tool.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            fail(f"{p}.parameters", f"'{p}.parameters' must be a JSON schema object")
        description = tool.get("description")
        tools.append(
            Tool(
                name=name,
                description=string(description, f"{p}.description") if description else None,
                input_schema=params if params is not None else {"type": "object", "properties": {}},
            )
        )
        if isinstance(tool.get("strict"), bool):
            strict[name] = tool["strict"]
    return tools, strict


def _choice(raw: Any, tools: list[Tool], serial: bool) -> tuple[ToolChoice | None, list[Tool]]:
    """``tool_choice`` -> canonical choice, and the tools left (``allowed_tools`` narrows)."""
    if raw is None:
        return (ToolChoice("auto", disable_parallel_tool_use=True) if serial else None), tools
    if raw in ("none", "auto"):
        return ToolChoice(raw, disable_parallel_tool_use=serial), tools
    if raw == "required":
        return ToolChoice("any", disable_parallel_tool_use=serial), tools
    names = {t.name for t in tools}
    if isinstance(raw, Mapping) and raw.get("type") == "function":
        name = string(raw.get("name"), "tool_choice.name")
        if name not in names:
            fail("tool_choice.name", f"tool_choice names {name!r}, which is not in 'tools'")
        return ToolChoice("tool", name=name, disable_parallel_tool_use=serial), tools
    if isinstance(raw, Mapping) and raw.get("type") == "allowed_tools":
        allowed: set[str] = set()
        listed = raw.get("tools")
        for j, t in enumerate(listed if isinstance(listed, list) else ()):
            entry = obj(t, f"tool_choice.tools[{j}]")
            name = string(entry.get("name"), f"tool_choice.tools[{j}].name")
            if entry.get("type", "function") != "function" or name not in names:
                fail(
                    f"tool_choice.tools[{j}]",
                    f"allowed tool {name!r} must be one of the function tools in 'tools'",
                )
            allowed.add(name)
        if not allowed:
            fail("tool_choice.tools", "'allowed_tools' needs a non-empty 'tools' array")
        mode = raw.get("mode", "auto")
        if mode not in ("auto", "required"):
            fail("tool_choice.mode", "'tool_choice.mode' must be 'auto' or 'required'")
        choice = ToolChoice(
            "any" if mode == "required" else "auto", disable_parallel_tool_use=serial
        )
        return choice, [t for t in tools if t.name in allowed]
    if isinstance(raw, Mapping) and isinstance(raw.get("type"), str):
        fail(
            "tool_choice.type",
            f"tool_choice type {raw['type']!r} names an OpenAI built-in tool, which this "
            "model does not serve",
            code="unsupported_tool",
        )
    fail(
        "tool_choice",
        "'tool_choice' must be 'none', 'auto', 'required', "
        '{"type": "function", "name": ...} or {"type": "allowed_tools", ...}',
    )


# ---------------------------------------------------------------------------- options


def _text_format(raw: Any, meta: dict[str, Any]) -> Mapping[str, Any] | None:
    """``text`` -> the canonical (Chat Completions shaped) ``response_format``."""
    if raw is None:
        return None
    text = obj(raw, "text")
    if isinstance(text.get("verbosity"), str):
        meta["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return None
    fmt = obj(fmt, "text.format")
    type_ = fmt.get("type")
    if type_ == "text":
        return None
    if type_ == "json_object":
        return {"type": "json_object"}
    if type_ == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, Mapping):
            fail("text.format.schema", "'text.format.schema' must be a JSON schema object")
        spec: dict[str, Any] = {"name": string(fmt.get("name"), "text.format.name")}
        if fmt.get("description") is not None:
            spec["description"] = string(fmt["description"], "text.format.description")
        spec["schema"] = schema
        if isinstance(fmt.get("strict"), bool):
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    fail("text.format.type", "'text.format.type' must be 'text', 'json_object' or 'json_schema'")


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(key, f"'{key}' must be a number, got {kind(value)}")
    return float(value)


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return None if value is None else string(value, key)


def _opt_bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        fail(key, f"'{key}' must be a boolean, got {kind(value)}")
    return value


def parse_request(body: Mapping[str, Any]) -> Request:
    """A client's ``POST /v1/responses`` JSON -> canonical `Request` (the translated path)."""
    if not isinstance(body, Mapping):
        fail(None, "the request body must be a JSON object")
    model, stream = check_request(body)
    require_stateless(body)
    system, messages = parse_input(body.get("input"))
    instructions = _opt_str(body, "instructions")
    if instructions:
        system.insert(0, TextBlock(instructions))

    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        fail(
            "max_output_tokens",
            f"'max_output_tokens' must be a positive integer, got {max_tokens!r}",
        )
    parallel = _opt_bool(body, "parallel_tool_calls")
    tools, strict = _tools(body.get("tools"))
    choice, tools = _choice(body.get("tool_choice"), tools, serial=parallel is False)

    openai_meta: dict[str, Any] = {k: body[k] for k in FORWARDED_FIELDS if body.get(k) is not None}
    if "metadata" in openai_meta and not (
        isinstance(openai_meta["metadata"], Mapping)
        and all(isinstance(v, str) for v in openai_meta["metadata"].values())
    ):
        fail("metadata", "'metadata' must be an object of string values")
    responses_meta: dict[str, Any] = {}
    store = _opt_bool(body, "store")
    if store is not None:
        responses_meta["store"] = store

    thinking = None
    reasoning = body.get("reasoning")
    if reasoning is not None:
        reasoning = obj(reasoning, "reasoning")
        effort = reasoning.get("effort")
        if effort is not None:
            effort = string(effort, "reasoning.effort")
            thinking = Thinking(enabled=effort != "none", effort=effort)
        summary = reasoning.get("summary") or reasoning.get("generate_summary")
        if isinstance(summary, str):
            responses_meta["reasoning_summary"] = summary
    response_format = _text_format(body.get("text"), openai_meta)

    user = _opt_str(body, "user")
    safety = _opt_str(body, "safety_identifier")
    if user is not None and safety is not None:
        openai_meta["safety_identifier"] = safety
    if strict:
        openai_meta[STRICT_TOOLS] = strict
    metadata = {"openai": openai_meta} if openai_meta else {}
    if responses_meta:
        metadata[RESPONSES] = responses_meta
    return Request(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        tools=tuple(tools),
        tool_choice=choice,
        thinking=thinking,
        stream=stream,
        response_format=response_format,
        user=user if user is not None else safety,
        provider_metadata=metadata,
    )
