"""Server-sent events: an incremental decoder and the one-line encoder. No I/O.

The decoder follows the WHATWG event-stream rules (html.spec.whatwg.org, "Parsing an event
stream"): lines end in CRLF, LF or CR; a blank line ends an event; lines starting with ``:``
are comments; ``data`` lines are joined with LF; an event with no ``data`` line is not
dispatched; an unterminated event at EOF is discarded; a leading UTF-8 BOM is skipped.

It is on the pass-through relay's hot path (every upstream byte goes through it), so it
first finds whole events by their blank-line boundary with one ``bytes.find`` per event and
only then parses fields, once per event, and keeps each event's exact bytes in ``raw`` so the
relay can forward them unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEEPALIVE_COMMENT: bytes = b": keep-alive\n\n"

_BOM = b"\xef\xbb\xbf"
# Two line terminators in a row (the second one is the blank line). A lone CR only counts
# when no LF follows it, so "\r\n" is never read as two terminators.
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None  # the `event:` field, None if absent (or empty)
    data: str  # `data:` lines joined with "\n"
    # The event's bytes as received, through its terminating blank line (and any stray
    # blank lines that came before it): forwarding `raw` forwards the event unchanged.
    raw: bytes


class SSEDecoder:
    """Incremental, spec-compliant decoder: feed bytes in any split, get whole events."""

    __slots__ = ("_buf", "_cr", "_scan", "_started")

    def __init__(self) -> None:
        self._buf = b""
        # Where the next boundary search may start: bytes before it are known not to begin
        # one, which keeps a long event arriving in many small chunks linear, not quadratic.
        self._scan = 0
        # Once a CR is seen, boundaries need the general (regex) search; LF-only streams,
        # which is what every LLM upstream sends, keep the plain ``find`` path.
        self._cr = False
        self._started = False

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished event are buffered."""
        return bool(self._buf.strip(b"\r\n"))

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf  # wait: this may still be the start of a BOM
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        if not self._cr and b"\r" in chunk:
            self._cr = True
        events, rest = self._split(buf, final=False)
        self._buf = rest
        return events

    def close(self) -> list[SSEEvent]:
        """At EOF: an event whose final CR was held back (it might have been CRLF) is
        complete and dispatched; an unterminated trailing event is discarded."""
        events, _ = self._split(self._buf, final=True) if self._buf else ([], b"")
        self._buf, self._scan = b"", 0
        return events

    def _split(self, buf: bytes, *, final: bool) -> tuple[list[SSEEvent], bytes]:
        events: list[SSEEvent] = []
        start, scan = 0, self._scan
        if not self._cr:
            while (i := buf.find(b"\n\n", scan)) >= 0:
                end = i + 2
                event = _parse(buf[start:i], buf[start:end], crlf=False)
                if event is not None:
                    events.append(event)
                start = scan = end
            rest = buf[start:]
            self._scan = max(0, len(rest) - 1)
            return events, rest
        while (m := _BOUNDARY.search(buf, scan)) is not None:
            end = m.end()
            if end == len(buf) and buf.endswith(b"\r") and not final:
                # The last CR may be the first half of a CRLF still in flight: wait for the
                # next byte so `raw` holds the whole terminator.
                scan = m.start()
                break
            event = _parse(buf[start : m.start()], buf[start:end], crlf=True)
            if event is not None:
                events.append(event)
            start = scan = end
        rest = buf[start:]
        self._scan = max(0, scan - start, len(rest) - 4)
        return events, rest


def _parse(block: bytes, raw: bytes, *, crlf: bool) -> SSEEvent | None:
    event: str | None = None
    data: list[str] = []
    for line in block.splitlines() if crlf else block.split(b"\n"):
        if not line or line[0] == 0x3A:  # blank (leading stray terminator) or ":" comment
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            event = value.decode("utf-8", "replace") or None
        # `id` and `retry` only matter to a reconnecting browser; nothing here reconnects.
    if not data:
        return None
    return SSEEvent(event, "\n".join(data), raw)


def encode(event: str | None, data: str | bytes) -> bytes:
    """One event: ``event: x\\ndata: ...\\n\\n``. ``data`` must hold no newline (it is JSON)."""
    payload = data.encode() if isinstance(data, str) else data
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
