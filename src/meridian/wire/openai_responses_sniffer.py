"""The pass-through relay's watcher for Responses streams: usage, the end, errors, the
first token, without changing (or, for deltas, even parsing) a byte. Sans-IO.

Public names are re-exported from `meridian.wire.openai_responses`; import them from there.
"""

from __future__ import annotations

import re

import orjson

from meridian.errors import MeridianError
from meridian.model import Usage
from meridian.wire.openai_responses_common import failure, usage_from_json
from meridian.wire.sse import SSEEvent

_TERMINAL = frozenset({"response.completed", "response.incomplete"})
# The only events parsed: a handful per stream.
_PARSED = _TERMINAL | {"response.created", "response.failed", "error"}
_PREAMBLE = frozenset({"response.created", "response.in_progress"})

# The top-level type of a Responses event is the only "type" whose value starts with
# "response." (items and parts have types like "message"), or is exactly "error".
_TYPE = re.compile(r'"type"\s*:\s*"(response\.[a-z_.]+|error)"')


def _type_of(data: str) -> str:
    """The ``type`` of an event without parsing it (for streams without ``event:`` lines)."""
    match = _TYPE.search(data)
    return match.group(1) if match else ""


def _sequence(data: str) -> int | None:
    """The event's ``sequence_number`` without parsing it (only the top level has one)."""
    i = data.find('"sequence_number":')
    if i < 0:
        return None
    j = i + 18
    while j < len(data) and data[j] == " ":
        j += 1
    k = j
    while k < len(data) and data[k].isdigit():
        k += 1
    return int(data[j:k]) if k > j else None


class UsageSniffer:
    """For the pass-through relay: watches an upstream's Responses stream without changing
    it. Deltas (the bulk of a stream) are recognised by their event name, never parsed.

    ``response_id`` and ``sequence_number`` (the last one seen) let the surface continue the
    client's stream coherently if the relay fails midway (`StreamEncoder` takes both).
    """

    __slots__ = (
        "_provider",
        "error",
        "finished",
        "first_token",
        "produced_chars",
        "response_id",
        "sequence_number",
        "started",
        "usage",
    )

    def __init__(self, *, provider: str = "upstream") -> None:
        self._provider = provider
        self.usage = Usage()
        self.finished = False  # response.completed or response.incomplete seen
        self.error: MeridianError | None = None  # an `error` event or response.failed
        self.first_token = False  # a delta of text, arguments or reasoning seen
        self.response_id: str | None = None
        self.sequence_number: int | None = None
        # Past response.created / response.in_progress: the answer has begun (the relay
        # commits here, so a stream that fails first can still be fallen back from).
        self.started = False
        self.produced_chars = 0  # content the deltas carried, roughly (for a cut stream)

    def feed(self, event: SSEEvent) -> None:
        data = event.data
        name = event.event or _type_of(data)
        seq = _sequence(data)
        if seq is not None:
            self.sequence_number = seq
        if name not in _PREAMBLE:
            self.started = True
        if name.endswith(".delta"):
            self.first_token = True
            # The event's JSON framing is ~120 characters; the rest is its content.
            self.produced_chars += max(0, len(data) - 120)
            return
        if name not in _PARSED:
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # not ours to judge: the relay forwards it as it came
        if not isinstance(payload, dict):
            return
        response = payload.get("response")
        response = response if isinstance(response, dict) else {}
        if name == "response.created":
            rid = response.get("id")
            self.response_id = rid if isinstance(rid, str) else None
        elif name in _TERMINAL:
            self.usage = self.usage.merge(usage_from_json(response.get("usage")))
            self.finished = True
        elif name == "response.failed":
            error = response.get("error")
            self.error = failure(error if isinstance(error, dict) else {}, provider=self._provider)
        else:
            self.error = failure(payload, provider=self._provider)
