"""Structured logs: one JSON object per line on stdout (journald and Loki read it as is).

``configure(level)`` puts a `JsonFormatter` on the root logger. Every line has ``ts`` (UTC,
ISO 8601 with milliseconds), ``level``, ``logger`` and ``msg``; ``extra={...}`` fields are
merged in as top-level keys, and an exception becomes ``exc``.

`RequestLog` is the `Observer` that writes ONE line per API call (logger
``meridian.request``): ids, key *name*, route, status, tokens, timings. It never sees prompt
text or key material. ``server.log_bodies`` (a debug option, off by default) lets the surfaces
log bodies through `RequestLog.body`, which redacts anything that looks like a secret.

Formatting is a dict and one ``orjson.dumps``: no regex, no ``str.format`` of user data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from meridian.records import CallRecord
from meridian.redact import redact

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
    # uvicorn adds a copy of each message with terminal colour codes: noise in a JSON line.
    | {"color_message"}
)
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": _LEVELS.get(record.levelno) or record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


_HANDLER_MARK = "_meridian_json"


def configure(level: int | str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """JSON lines on ``stream`` (default stdout) for every logger. Replaces the handler an
    earlier call installed (calling it twice does not double the lines) and leaves other
    handlers alone. Returns the handler."""
    # What a JSON line never shows, not gathered for every record (the logging HOWTO's
    # "Optimization"): the caller's file and line, thread, process and process name.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # uvicorn's own handlers would print plain text: route its loggers through ours (run it
    # with ``log_config=None`` so it does not install them again, and ``access_log=False``:
    # RequestLog's line is the access log).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    return handler


def startup(
    logger: logging.Logger,
    listeners: Sequence[str],
    providers: Mapping[str, str],
    aliases: Iterable[str],
) -> None:
    """The one line that says what is live: listeners, providers (name → type), aliases."""
    logger.info(
        "meridian started",
        extra={
            "listeners": list(listeners),
            "providers": dict(providers),
            "aliases": sorted(aliases),
        },
    )


class RequestLog:
    """An `Observer`: one JSON line per API call."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        log_bodies: bool = False,
        secrets: Iterable[str] = (),
    ) -> None:
        self._log = logger or logging.getLogger("meridian.request")
        self._bodies = log_bodies
        self._body_log = logging.getLogger("meridian.body")
        self._secrets = tuple(s for s in secrets if s)

    @property
    def log_bodies(self) -> bool:
        return self._bodies

    def record(self, rec: CallRecord) -> None:
        log = self._log
        if not log.isEnabledFor(logging.INFO):
            return
        u = rec.usage
        log.info(
            "request",
            extra={
                "request_id": rec.request_id,
                "key": rec.key_name,
                "surface": rec.surface,
                "endpoint": rec.endpoint,
                "alias": rec.alias,
                "provider": rec.provider,
                "upstream_model": rec.upstream_model,
                "status": rec.status,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cache_read_tokens": u.cache_read_tokens,
                "cache_creation_tokens": u.cache_creation_tokens,
                "reasoning_tokens": u.reasoning_tokens,
                "latency_ms": round(rec.latency_ms, 1),
                "ttft_ms": None if rec.ttft_ms is None else round(rec.ttft_ms, 1),
                "stream": rec.stream,
                "error_type": rec.error_type,
                "path": rec.path,
            },
        )

    def body(self, request_id: str, kind: str, body: Any) -> None:
        """Log a request or response body (``kind``: "request", "response", "upstream"),
        secrets redacted; a no-op unless ``log_bodies`` is on."""
        if not self._bodies:
            return
        if isinstance(body, bytes | bytearray):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError:
                body = bytes(body).decode("utf-8", "replace")
        self._body_log.info(
            "body",
            extra={"request_id": request_id, "kind": kind, "body": redact(body, self._secrets)},
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
