"""Loopback fake upstreams that speak the real OpenAI and Anthropic wire formats.

`FakeOpenAI` and `FakeAnthropic` are real HTTP servers (aiohttp.web on 127.0.0.1, a random
port), each running its own event loop in a background thread, so they serve sync and async
tests alike (a sync SDK client blocking the test's loop cannot starve them) and a
subprocess (the Claude CLI) can reach them too.

    with FakeAnthropic() as fake:            # or the `fake_anthropic` fixture
        fake.reply_text("hello")             # queued replies, used in order
        fake.reply_rate_limited(retry_after=3)
        ... point a client at fake.url ...
        fake.requests[0].json["model"]       # what went upstream, exactly

With an empty queue every request gets the default reply: ``"pong from <model>"``.

Replies are format-neutral `Reply` values; each fake renders them in its own format, byte
for byte as the real service does: Anthropic named events ``message_start`` ... ``message_stop``
with usage; OpenAI ``chat.completion.chunk``s, the usage chunk when
``stream_options.include_usage`` is set, and ``data: [DONE]``. Whether a reply streams
follows the request's ``"stream"`` field.

Stream faults (``Reply.fail``) happen after ``fail_after`` SSE events: ``"error"`` sends the
format's mid-stream error, ``"truncate"`` ends the body cleanly without the terminal event,
``"reset"`` aborts the TCP connection with an RST.
"""

from fakes.anthropic_api import FakeAnthropic
from fakes.openai_api import FakeOpenAI
from fakes.server import Failure, FakeUpstream, ReceivedRequest, Reply, ToolCall

__all__ = [
    "Failure",
    "FakeAnthropic",
    "FakeOpenAI",
    "FakeUpstream",
    "ReceivedRequest",
    "Reply",
    "ToolCall",
]
