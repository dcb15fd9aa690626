"""``meridian keys apply FILE``: client keys declared in a YAML list, and made so.

    - name: pulse
      models: [claude-haiku-4-5]      # leave out: every model
      rpm: 60
      secret_env: MERIDIAN_KEY_PULSE  # or secret_file: /etc/meridian/keys.d/pulse
    - name: paperless                 # no secret given: one is generated and shown once
      budget_usd_month: 5
      expires: 2027-01-01             # a date or date-time; never a duration (see below)
    - name: old-laptop
      revoked: true

Each entry is the whole truth about its key: a limit left out means no limit, so removing
``rpm`` from an entry removes the key's rpm limit. A key with no active entry in the store is
created (with the given secret, else a generated one); an active key whose limits differ is
updated; one whose secret differs from the given one gets it (the old secret stops working);
``revoked: true`` revokes it. Keys the file does not name are left alone. Applying the same
file twice changes nothing the second time, which is why ``expires`` takes only dates: "90d"
would move every run.

Everything is read and checked (entries, secrets, formats) before the first write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meridian.errors import MeridianError, NotFound
from meridian.keys import KeyInfo, KeyStore, checked_limits, checked_secret

Action = Literal["create", "update", "revoke", "unchanged"]
LIMITS = (
    "models", "rpm", "tpm", "max_parallel", "budget_tokens_month", "budget_usd_month",
    "expires_at",
)  # fmt: skip


class KeyFileError(Exception):
    pass


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    models: list[str] | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_parallel: int | None = Field(default=None, gt=0)
    budget_tokens_month: int | None = Field(default=None, gt=0)
    budget_usd_month: float | None = Field(default=None, gt=0)
    expires: datetime | date | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    revoked: bool = False

    @field_validator("expires", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip()[-1:] in ("m", "h", "d", "w"):
            raise ValueError(
                f"expected a date (2027-01-01) or a date-time, got {value!r}: a duration would "
                "move the expiry every time the file is applied"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KeySpec:
        if self.secret_env and self.secret_file:
            raise ValueError("give secret_env or secret_file, not both")
        if self.revoked and self.model_fields_set - {"name", "revoked"}:
            raise ValueError("a revoked key takes only name and revoked")
        return self

    def expires_at(self) -> float | None:
        when = self.expires
        if when is None:
            return None
        if not isinstance(when, datetime):  # a date: midnight UTC, as `keys create` reads it
            when = datetime.combine(when, datetime.min.time(), tzinfo=UTC)
        elif when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()

    def limits(self) -> dict[str, Any]:
        """The limits as `KeyStore.create` / `update` take them."""
        return {
            "models": None
            if self.models is None
            else list(dict.fromkeys(m.strip() for m in self.models if m.strip())),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_parallel": self.max_parallel,
            "budget_tokens_month": self.budget_tokens_month,
            "budget_usd_month": self.budget_usd_month,
            "expires_at": self.expires_at(),
        }


@dataclass(frozen=True, slots=True)
class Desired:
    spec: KeySpec
    secret: str | None  # given through secret_env / secret_file; None: keep or generate


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    action: Action
    fields: tuple[str, ...] = ()  # what differs: limit names and "secret"
    secret: str | None = None  # the generated secret of a created key: shown once

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "action": self.action,
            "fields": list(self.fields),
        }
        if self.secret is not None:
            out["secret"] = self.secret
        return out


def read(path: Path, env: Mapping[str, str] | None = None) -> list[Desired]:
    """The entries of ``path`` with their secrets, all checked; raises `KeyFileError`."""
    env = os.environ if env is None else env
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise KeyFileError(f"{path}: expected a list of keys, got {type(raw).__name__}")
    problems: list[str] = []
    out: list[Desired] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"{path}: {name if isinstance(name, str) else f'[{i}]'}"
        try:
            spec = KeySpec.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(f"{where}: {loc + ': ' if loc else ''}{msg}")
            continue
        where = f"{path}: {spec.name}"
        if spec.name in seen:
            problems.append(f"{where}: named twice")
        seen.add(spec.name)
        try:
            if not spec.revoked:
                # What the store would refuse mid-way (an expiry in the past), refused now.
                checked_limits(**spec.limits(), now=time.time())
            secret = _secret(spec, env)
            if secret is not None:
                checked_secret(secret)
        except (KeyFileError, MeridianError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        out.append(Desired(spec, secret))
    if problems:
        raise KeyFileError("\n".join(problems))
    return out


def _secret(spec: KeySpec, env: Mapping[str, str]) -> str | None:
    if spec.secret_env:
        value = env.get(spec.secret_env, "")
        if not value:
            raise KeyFileError(f"secret_env: environment variable {spec.secret_env} is not set")
        return value
    if spec.secret_file:
        try:
            value = spec.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KeyFileError(f"secret_file: {spec.secret_file}: {exc.strerror}") from None
        if not value:
            raise KeyFileError(f"secret_file: {spec.secret_file} is empty")
        return value
    return None


def _differences(keys: KeyStore, info: KeyInfo, want: Desired) -> tuple[str, ...]:
    limits = want.spec.limits()
    have = {
        "models": None if info.models is None else list(info.models),
        "rpm": info.rpm,
        "tpm": info.tpm,
        "max_parallel": info.max_parallel,
        "budget_tokens_month": info.budget_tokens_month,
        "budget_usd_month": info.budget_usd_month,
        "expires_at": info.expires_at,
    }
    fields = [name for name in LIMITS if limits[name] != have[name]]
    if want.secret is not None and not keys.secret_matches(info.name, want.secret):
        fields.append("secret")
    return tuple(fields)


def _current(keys: KeyStore | None, name: str) -> KeyInfo | None:
    """The active key ``name``; None if there is none (or no database yet)."""
    if keys is None:
        return None
    try:
        info = keys.get(name)
    except NotFound:
        return None
    return None if info.revoked else info


def plan(keys: KeyStore | None, desired: Sequence[Desired]) -> list[Change]:
    """What `apply` would do; ``keys`` None stands for an empty store (no database yet)."""
    changes = []
    for want in desired:
        name = want.spec.name
        info = _current(keys, name)
        if want.spec.revoked:
            changes.append(Change(name, "unchanged" if info is None else "revoke"))
        elif info is None:
            changes.append(Change(name, "create", ("secret",) if want.secret else ()))
        else:
            assert keys is not None
            fields = _differences(keys, info, want)
            changes.append(Change(name, "update" if fields else "unchanged", fields))
    return changes


def apply(keys: KeyStore, desired: Sequence[Desired]) -> list[Change]:
    """Make the store match ``desired``; returns what was done."""
    done = []
    for want, change in zip(desired, plan(keys, desired), strict=True):
        name, generated = want.spec.name, None
        if change.action == "revoke":
            keys.revoke(name)
        elif change.action == "create":
            secret, _ = keys.create(name, secret=want.secret, **want.spec.limits())
            generated = None if want.secret else secret
        elif change.action == "update":
            if set(change.fields) - {"secret"}:
                keys.update(name, **want.spec.limits())
            if "secret" in change.fields:
                keys.rotate(name, want.secret)
        done.append(Change(name, change.action, change.fields, generated))
    return done
