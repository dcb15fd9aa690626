"""What the benchmark sends: one request shape per path, aimed at a target.

A *path* is a client format plus an upstream format (pass-through when they match). A
*target* is what the load generator talks to: the fake upstream itself ("direct"), meridian or
the LiteLLM proxy. Direct requests carry the upstream model name; proxied ones carry an alias
that the proxy's config maps to the same upstream and model.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

MASTER_KEY = "sk-bench"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
# Aliases in the proxies' configs.
OPENAI_ALIAS = "gpt-bench"
ANTHROPIC_ALIAS = "claude-bench"

SYSTEM = "You are a concise assistant for a home lab. Answer in one short sentence."
USER = "Which port does the gateway listen on by default, and how do I change it?"


@dataclass(frozen=True)
class Path:
    name: str  # row label in the table
    client: str  # "openai" | "anthropic": the wire format the client speaks
    upstream: str  # "openai" | "anthropic": the wire format the upstream speaks

    @property
    def translated(self) -> bool:
        return self.client != self.upstream


PATHS = {
    "openai": Path("OpenAI pass-through", "openai", "openai"),
    "anthropic": Path("Anthropic pass-through", "anthropic", "anthropic"),
    "translated": Path("Translated (OpenAI client → Anthropic upstream)", "openai", "anthropic"),
}


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool
    client: str  # wire format of the response, for validation


def build(
    path: Path, base: str, *, direct: bool, stream: bool, key: str = MASTER_KEY
) -> Request:
    """The request for `path` against a target at `base` (``http://host:port``), sent with
    `key` (the master key unless a client key is given).

    Direct requests go to the fake upstream in the upstream's own format: a translated path
    has no direct equivalent, so its baseline is the upstream format's pass-through request.
    """
    client = path.upstream if direct else path.client
    if direct:
        model = OPENAI_MODEL if path.upstream == "openai" else ANTHROPIC_MODEL
    else:
        model = OPENAI_ALIAS if path.upstream == "openai" else ANTHROPIC_ALIAS
    headers = {"Content-Type": "application/json"}
    if client == "openai":
        body: dict[str, object] = {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": USER}],
            "max_tokens": 256,
            "temperature": 0.2,
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        headers["Authorization"] = f"Bearer {key}"
        url = base + "/v1/chat/completions"
    else:
        body = {
            "model": model,
            "max_tokens": 256,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": USER}],
            "temperature": 0.2,
        }
        if stream:
            body["stream"] = True
        # As the official SDK does: x-api-key plus the version header.
        headers |= {"x-api-key": key, "anthropic-version": "2023-06-01"}
        url = base + "/v1/messages"
    return Request(url, orjson.dumps(body), headers, stream, client)


def check_response(req: Request, status: int, data: bytes) -> None:
    """Raise ValueError unless `data` is a real answer in the client's format."""
    if status != 200:
        raise ValueError(f"HTTP {status}: {data[:300]!r}")
    if req.stream:
        end = b"data: [DONE]" if req.client == "openai" else b"event: message_stop"
        delta = b'"content":"word' if req.client == "openai" else b'"text_delta"'
        if end not in data or delta not in data:
            raise ValueError(f"stream without deltas or its end marker: {data[-300:]!r}")
        return
    doc = orjson.loads(data)
    if req.client == "openai":
        text = doc["choices"][0]["message"]["content"]
        tokens = doc["usage"]["prompt_tokens"]
    else:
        text = doc["content"][0]["text"]
        tokens = doc["usage"]["input_tokens"]
    if not (isinstance(text, str) and text.startswith("word0")) or not isinstance(tokens, int):
        raise ValueError(f"unexpected answer: {data[:300]!r}")
