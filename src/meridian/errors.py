"""One error tree for the whole gateway, rendered per wire format by the surfaces.

    MeridianError              kind               Anthropic            OpenAI
     ├── InvalidRequest        invalid_request    400                  400
     ├── AuthenticationFailed  authentication     401                  401
     ├── PermissionDenied      permission         403                  403
     ├── NotFound              not_found          404                  404
     ├── RequestTooLarge       request_too_large  413                  413
     ├── RateLimited           rate_limit         429                  429
     ├── BillingError          billing            402                  429 insufficient_quota
     ├── Overloaded            overloaded         529                  503
     ├── Timeout               timeout            504                  504
     ├── ApiError              api_error          500 (or as given)    500 (or as given)
     └── ClientClosed          client_closed      499: the client left (nobody to answer;
                                                  recorded, never rendered)

Providers raise these (never return them), chained with ``from exc`` at the one boundary where
a foreign error (aiohttp, the Claude SDK) is caught. ``retry_after`` becomes ``retry-after``;
``should_retry=False`` becomes ``x-should-retry: false``, which stops the official SDKs'
automatic retries where retrying cannot help (an exhausted quota, a bad key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from meridian.redact import redact_text

Kind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "request_too_large",
    "rate_limit",
    "billing",
    "overloaded",
    "timeout",
    "api_error",
    "client_closed",
]


class MeridianError(Exception):
    kind: ClassVar[Kind] = "api_error"
    default_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or self.default_status
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.param = param
        self.code = code
        self.extra_headers = dict(headers or {})
        # For the log only, never for a caller: addresses, a library's own words.
        self.detail: str | None = None
        # Raised by a provider for what its upstream did (a status, a broken connection), as
        # opposed to meridian refusing the request: only these count as upstream errors.
        self.upstream = False

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after)))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


class InvalidRequest(MeridianError):
    kind = "invalid_request"
    default_status = 400


class AuthenticationFailed(MeridianError):
    kind = "authentication"
    default_status = 401


class PermissionDenied(MeridianError):
    kind = "permission"
    default_status = 403


class NotFound(MeridianError):
    kind = "not_found"
    default_status = 404


class RequestTooLarge(MeridianError):
    kind = "request_too_large"
    default_status = 413


class RateLimited(MeridianError):
    kind = "rate_limit"
    default_status = 429


class BillingError(MeridianError):
    kind = "billing"
    default_status = 402


class Overloaded(MeridianError):
    kind = "overloaded"
    default_status = 529


class Timeout(MeridianError):
    kind = "timeout"
    default_status = 504


class ApiError(MeridianError):
    kind = "api_error"
    default_status = 500


class ClientClosed(MeridianError):
    """The client went away (nginx's 499): there is no one left to answer."""

    kind = "client_closed"
    default_status = 499


_BY_STATUS: dict[int, type[MeridianError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    402: BillingError,
    403: PermissionDenied,
    404: NotFound,
    408: Timeout,
    413: RequestTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    503: Overloaded,
    504: Timeout,
    529: Overloaded,
}


def from_upstream_status(
    status: int,
    message: str,
    *,
    provider: str,
    retry_after: float | None = None,
    quota_exhausted: bool = False,
) -> MeridianError:
    """The error a caller should see for an upstream's HTTP error status.

    The upstream's own 401/403 means *meridian's* provider credentials are wrong, not the
    caller's: answering 401 would make clients such as Home Assistant ask their user to
    re-authenticate against meridian. It becomes a 502 that names the provider instead.
    """
    err = _from_status(status, message, provider, retry_after, quota_exhausted)
    err.upstream = True
    return err


def _from_status(
    status: int, message: str, provider: str, retry_after: float | None, quota_exhausted: bool
) -> MeridianError:
    # An upstream may echo a key in its message (OpenAI masks most of it, others may not).
    message = redact_text(message)
    text = f"{provider}: {message}" if message else f"{provider}: upstream returned HTTP {status}"
    if status in (401, 403):
        return ApiError(
            f"{text} (the provider rejected meridian's credentials: check its api_key)",
            status=502,
            should_retry=False,
        )
    if quota_exhausted:
        return RateLimited(
            text, retry_after=retry_after, should_retry=False, code="insufficient_quota"
        )
    cls = _BY_STATUS.get(status)
    if cls is None:
        return ApiError(text, status=502 if status < 500 else status)
    if cls is Overloaded:
        return Overloaded(text, retry_after=retry_after)
    return cls(text, retry_after=retry_after)
