"""The Claude subscription provider (``type: claude-code``), through the official CLI.

spec       request -> RunSpec (options + conversation), conversation keys   (pure)
command    RunSpec -> the CLI's argv, environment and transcript            (pure)
transport  the CLI as a child process (stdio, signals, the max_tokens freeze)
process    one CLI process driven through the SDK: start, ask a turn, stop
pool       slots, the queue, live processes kept per caller, warm spares
relay      the CLI's messages -> canonical events; its errors -> meridian's
windows    the subscription's usage windows, as last reported
auth       the login: state for /ready, ``meridian auth status|login|refresh-token``
provider   the provider the registry builds
"""

from meridian.providers.claude.provider import ClaudeCodeProvider

__all__ = ["ClaudeCodeProvider"]
