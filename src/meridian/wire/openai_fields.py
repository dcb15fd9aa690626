"""Reading an OpenAI request's fields (Chat Completions and Responses alike): a field of the
wrong type is the caller's 400, naming the field and what it got, as OpenAI words it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from meridian.errors import InvalidRequest


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


def string(value: Any, param: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        fail(param, f"'{param}' must be {what}, got {kind(value)}")
    return value


def obj(value: Any, param: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(param, f"'{param}' must be an object, got {kind(value)}")
    return value


def number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(key, f"'{key}' must be a number, got {kind(value)}")
    return float(value)


def positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(key, f"'{key}' must be a positive integer, got {value!r}")
    return value
