"""The admin API, mounted in a small Starlette app and called over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
from keyhelpers import T0, Clock
from starlette.applications import Starlette

from meridian import admin
from meridian.auth import Authenticator
from meridian.errors import AuthenticationFailed
from meridian.keys import KeyStore
from meridian.resolver import StoreKeyResolver

MASTER = "sk-master-test-0123456789"
AS_MASTER = {"x-api-key": MASTER}


@pytest.fixture
def auth(keys: KeyStore) -> Authenticator:
    return Authenticator(MASTER, StoreKeyResolver(keys))


@pytest.fixture
async def client(auth: Authenticator, keys: KeyStore) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=admin.routes(lambda: auth, keys))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin", timeout=10) as c:
        yield c


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    return body["error"]  # type: ignore[no-any-return]


async def test_key_lifecycle(client: httpx.AsyncClient, auth: Authenticator, clock: Clock) -> None:
    r = await client.post(
        "/admin/keys",
        headers={"authorization": f"Bearer {MASTER}"},
        json={
            "name": "pulse",
            "models": "claude-haiku-4-5, direct_gpt-4o",
            "rpm": 60,
            "tpm": 100000,
            "budget_tokens_month": 5_000_000,
            "budget_usd_month": 12.5,
            "expires": "90d",
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created.pop("secret")
    assert secret.startswith("mk-") and created["prefix"] == secret[:9]
    assert created["models"] == ["claude-haiku-4-5", "direct_gpt-4o"]
    assert (created["rpm"], created["tpm"], created["status"]) == (60, 100000, "active")
    assert (created["budget_tokens_month"], created["budget_usd_month"]) == (5_000_000, 12.5)
    assert created["expires_at"] == "2026-06-13T12:00:00Z"

    principal = await auth.authenticate({"x-api-key": secret})
    assert principal.name == "pulse" and principal.rpm == 60

    r = await client.get("/admin/keys", headers=AS_MASTER)
    assert r.status_code == 200
    assert secret not in r.text and secret[9:] not in r.text
    [listed] = r.json()["data"]
    assert listed == created

    r = await client.post("/admin/keys/pulse/rotate", headers=AS_MASTER)
    assert r.status_code == 200
    rotated = r.json()
    new_secret = rotated.pop("secret")
    assert new_secret != secret and rotated["id"] == created["id"] and rotated["rpm"] == 60
    with pytest.raises(AuthenticationFailed, match="invalid API key"):
        await auth.authenticate({"x-api-key": secret})
    assert (await auth.authenticate({"x-api-key": new_secret})).name == "pulse"

    clock.advance(5)
    r = await client.delete("/admin/keys/pulse", headers=AS_MASTER)
    assert r.status_code == 200
    assert r.json()["status"] == "revoked" and r.json()["revoked_at"] == "2026-03-15T12:00:05Z"
    with pytest.raises(AuthenticationFailed, match="key 'pulse' was revoked"):
        await auth.authenticate({"authorization": f"Bearer {new_secret}"})
    r = await client.get("/admin/keys/pulse", headers=AS_MASTER)
    assert r.json()["status"] == "revoked"


async def test_only_the_master_key_may_call_it(client: httpx.AsyncClient, keys: KeyStore) -> None:
    client_secret, _ = keys.create("ha")
    revoked, _ = keys.create("old")
    keys.revoke("old")
    calls = [
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("GET", "/admin/keys/ha"),
        ("DELETE", "/admin/keys/ha"),
        ("POST", "/admin/keys/ha/rotate"),
    ]
    for method, path in calls:
        r = await client.request(method, path, json={"name": "evil"})
        assert (r.status_code, error(r)["type"]) == (401, "authentication_error")
        assert "missing API key" in error(r)["message"]
        r = await client.request(method, path, headers={"x-api-key": "wrong"}, json={"name": "x"})
        assert (r.status_code, error(r)["type"]) == (401, "authentication_error")
        r = await client.request(method, path, headers={"x-api-key": revoked})
        assert r.status_code == 401 and "revoked" in error(r)["message"]
        r = await client.request(
            method, path, headers={"authorization": f"Bearer {client_secret}"}, json={"name": "x"}
        )
        assert (r.status_code, error(r)["type"]) == (403, "permission_error")
        assert "key 'ha' is a client key" in error(r)["message"]
    assert [(i.name, i.revoked) for i in keys.list()] == [("old", True), ("ha", False)]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "the request body is not valid JSON"),
        (b"[1, 2]", 400, "the request body must be a JSON object"),
        (b'{"name": "k", "models": ' + b"[" * 300 + b"]" * 300 + b"}", 400, "nested more than"),
        (b'{"name": "k", "expires": "99999999999d"}', 400, "too far in the future"),
        (b'{"name": "k", "expires": "9999-12-31"}', 400, "at most 100 years"),
        (b'{"name": "k", "rpm": 9999999999999999}', 400, "rpm: at most"),
        (b'{"name": "k", "max_parallel": 0}', 400, "max_parallel: expected a positive integer"),
        (b"{}", 400, "name: required"),
        (b'{"name": "k", "rpm": "60"}', 400, "rpm: expected a positive integer, got '60'"),
        (b'{"name": "k", "tpm": 0}', 400, "tpm: expected a positive integer"),
        (b'{"name": "k", "models": []}', 400, "models: the list is empty"),
        (b'{"name": "k", "models": [1]}', 400, "models: expected a list of model aliases"),
        (b'{"name": "k", "expires": "soon"}', 400, "expires: expected a duration"),
        (b'{"name": "k", "expires": 90}', 400, "expires: expected a string"),
        (b'{"name": "k", "expires": "2020-01-01"}', 400, "expires: 2020-01-01T00:00:00Z is in"),
        (b'{"name": "k", "rmp": 5}', 400, "unknown field(s): rmp; expected: name, models"),
        (b'{"name": 5}', 400, "name: expected"),
    ],
)
async def test_create_validates_the_body(
    client: httpx.AsyncClient, keys: KeyStore, body: bytes, status: int, message: str
) -> None:
    r = await client.post("/admin/keys", headers=AS_MASTER, content=body)
    assert r.status_code == status
    assert error(r)["type"] == "invalid_request_error"
    assert message in error(r)["message"]
    assert keys.list() == []


async def test_conflicts_and_unknown_names(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/keys", headers=AS_MASTER, json={"name": "k"})
    assert r.status_code == 201
    r = await client.post("/admin/keys", headers=AS_MASTER, json={"name": "k"})
    assert r.status_code == 409 and "already exists" in error(r)["message"]
    for method, path in [
        ("GET", "/admin/keys/nope"),
        ("DELETE", "/admin/keys/nope"),
        ("POST", "/admin/keys/nope/rotate"),
    ]:
        r = await client.request(method, path, headers=AS_MASTER)
        assert (r.status_code, error(r)["type"]) == (404, "not_found_error")
        assert error(r)["message"] == "no key named 'nope'"
    assert (await client.delete("/admin/keys/k", headers=AS_MASTER)).status_code == 200
    r = await client.delete("/admin/keys/k", headers=AS_MASTER)
    assert r.status_code == 409 and "already revoked" in error(r)["message"]


async def test_an_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/keys", headers=AS_MASTER, content=b" " * (admin.MAX_BODY + 1))
    assert r.status_code == 413


async def test_expiry_is_enforced_after_creation_through_the_api(
    client: httpx.AsyncClient, auth: Authenticator, clock: Clock
) -> None:
    r = await client.post("/admin/keys", headers=AS_MASTER, json={"name": "t", "expires": "1h"})
    secret = r.json()["secret"]
    assert (await auth.authenticate({"x-api-key": secret})).name == "t"
    clock.now = T0 + 3600
    with pytest.raises(AuthenticationFailed, match="key 't' expired on 2026-03-15 13:00 UTC"):
        await auth.authenticate({"x-api-key": secret})
