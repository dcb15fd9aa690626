"""Fakes shared by the test suites: loopback upstream servers (see `fakes.upstream`)."""

from fakes.upstream import (
    FakeAnthropic,
    FakeOpenAI,
    FakeUpstream,
    ReceivedRequest,
    Reply,
    ToolCall,
)

__all__ = ["FakeAnthropic", "FakeOpenAI", "FakeUpstream", "ReceivedRequest", "Reply", "ToolCall"]
