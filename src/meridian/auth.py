"""Who is calling: API keys on both surfaces.

A caller sends its key as ``x-api-key`` or ``Authorization: Bearer`` on either API. The
master key is compared in constant time; client keys (stored hashed) are looked up through a
`KeyResolver`, so the check is one path for both. A key is never logged: only a `Principal`'s
name leaves this module.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from meridian.errors import AuthenticationFailed, PermissionDenied
from meridian.model import Usage

MASTER = "master"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    key_id: int | None = None  # None for the master key
    models: frozenset[str] | None = None  # None: every model
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_tokens_month: int | None = None
    budget_usd_month: float | None = None

    @property
    def caller(self) -> str:
        """A stable name for this key (``master`` or ``key:<id>``), never the key itself:
        what a provider keys per-caller state by."""
        return MASTER if self.key_id is None else f"key:{self.key_id}"

    @property
    def token_limited(self) -> bool:
        """Has a limit that a call's estimated cost is reserved against."""
        return (
            self.tpm is not None
            or self.budget_tokens_month is not None
            or self.budget_usd_month is not None
        )

    @property
    def is_master(self) -> bool:
        return self.key_id is None

    def may_use(self, alias: str) -> bool:
        return self.models is None or alias in self.models

    def check_model(self, alias: str) -> None:
        if not self.may_use(alias):
            raise PermissionDenied(
                f"key {self.name!r} may not use model {alias!r}; "
                f"it may use: {', '.join(sorted(self.models or ())) or 'none'}"
            )


class KeyResolver(Protocol):
    async def resolve(self, secret: str) -> Principal | None:
        """The principal for a client key; None if unknown. Raises AuthenticationFailed for
        a revoked or expired key (with a message saying which)."""
        ...


class Ticket(Protocol):
    settled: bool


class Admission(Protocol):
    """Per-key limits: `admit` reserves a call's estimated cost before it runs (or raises
    RateLimited); `settle` replaces the reservation with the real usage after it. The cost
    is estimated only for a principal that is ``token_limited``."""

    async def admit(
        self, principal: Principal, alias: str, *, tokens: int = 0, usd: float = 0.0
    ) -> Any: ...

    def settle(self, principal: Principal, ticket: Any, usage: Usage) -> None: ...


def presented_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class Authenticator:
    def __init__(self, master_key: str, resolver: KeyResolver | None = None) -> None:
        if not master_key:
            raise ValueError("a master key is required")
        self._master = master_key.encode()
        self._resolver = resolver
        self._master_principal = Principal(MASTER)

    def is_master(self, secret: str | None) -> bool:
        return secret is not None and hmac.compare_digest(secret.encode(), self._master)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        secret = presented_key(headers)
        if secret is None:
            raise AuthenticationFailed(
                "missing API key: send it as the x-api-key header or as Authorization: Bearer <key>"
            )
        if self.is_master(secret):
            return self._master_principal
        if self._resolver is not None:
            principal = await self._resolver.resolve(secret)
            if principal is not None:
                return principal
        raise AuthenticationFailed("invalid API key")
