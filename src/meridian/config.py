"""The config file: YAML, ``${VAR}`` interpolation, validated into `Settings`.

Errors are `ConfigError`s whose message names the file, the key path and what was expected,
one problem a line. A ``${VAR}`` that is not set is an error naming the variable (never an
empty string sent upstream); ``${VAR:-default}`` supplies a default. A command that reads only
part of the config (``meridian keys``, ``usage``, ``auth``) passes ``unset=`` to `load` /
`resolve`: unset variables are then recorded by key path and their keys left out, so that a
secret the command never reads need not be in its environment (see `meridian.cli`).

With no file, `default_settings()` builds the built-in defaults from the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from platformdirs import user_data_path
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from meridian.redact import redact_url
from meridian.storage import Store, make_store, sqlite_path
from meridian.storage.sqlite import SQLiteStore

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    pass


def data_dir() -> Path:
    return user_data_path("meridian", appauthor=False)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpLimits(_Model):
    """What one peer may cost before it has proven anything: enforced by the HTTP layer
    itself, before authentication (see meridian.http.protocol)."""

    # Open connections; beyond this a new connection gets 503 + retry-after and is closed.
    max_connections: int = Field(default=1024, ge=1)
    # API requests being answered (streams included); beyond this: 529 / 503 + retry-after.
    max_in_flight: int = Field(default=512, ge=1)
    # The request line and headers together, and how many header fields: else 431.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=8, le=10_000)
    # From a request's first byte to the end of its headers; then from there to the end of
    # its body. Past either: 408 and the connection is closed (nginx: 60 s for the head).
    header_timeout_s: float = Field(default=60, gt=0)
    body_timeout_s: float = Field(default=120, gt=0)
    # A kept-alive connection with no request in flight is closed after this.
    idle_timeout_s: float = Field(default=75, gt=0)
    # JSON bodies nested deeper than this are refused (400) when they are parsed.
    max_json_depth: int = Field(default=128, ge=8, le=200)


class ServerConfig(_Model):
    listen: list[str] = Field(default_factory=lambda: ["127.0.0.1:4000"], min_length=1)
    master_key: SecretStr | None = None
    max_body_mb: float = Field(default=32, gt=0)
    # The whole call, streams included: past it, 504 before the first byte, an in-band
    # timeout error after it. Per alias: ``models.ALIAS.timeout_s``.
    request_timeout_s: float = Field(default=600, gt=0)
    # On SIGTERM: how long calls in flight may take to finish before open streams get an
    # error event and the rest is cancelled.
    shutdown_grace_s: float = Field(default=30, ge=0)
    # The idle interval for stream keep-alives (SSE comments / Anthropic pings).
    keepalive_s: float = Field(default=15, gt=0)
    http: HttpLimits = Field(default_factory=HttpLimits)
    # ``provider/model`` reaches any model of a configured provider without an alias.
    provider_prefix_routing: bool = True
    # GET /metrics answers only to the master key (x-api-key or Bearer).
    metrics_require_key: bool = False
    # Debug only: log request/response bodies (secrets redacted). Prompts end up in the logs.
    log_bodies: bool = False
    # Processes serving the listeners (docs/scaling.md). More than one needs limits.redis_url.
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("listen", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for item in value:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError(f"expected HOST:PORT, got {item!r}")
        return value


class StorageConfig(_Model):
    # Where keys and usage live: sqlite:///ABS/PATH or postgresql://USER:PASS@HOST/DB. After
    # validation this holds only a PostgreSQL URL; a SQLite URL becomes `path`.
    url: str | None = None
    # The SQLite file (short for a sqlite:/// url), and the directory of the master key file.
    path: Path = Field(default_factory=lambda: data_dir() / "meridian.db")
    retention_days: int = Field(default=90, ge=1)
    # Record every call in the usage table. Off: no ledger rows (metrics and logs still run,
    # and monthly budgets count only what the running process has seen).
    usage_ledger: bool = True

    @model_validator(mode="before")
    @classmethod
    def _url_or_path(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("url") is None:
            return data
        url = data["url"]
        if not isinstance(url, str):
            raise ValueError("url: expected a string such as postgresql://USER:PASS@HOST/DB")
        if data.get("path") is not None:
            raise ValueError(
                "storage.path and storage.url both name the database: keep one "
                "(path: /x/meridian.db is short for url: sqlite:///x/meridian.db)"
            )
        file = sqlite_path(url)
        if file is not None:
            return {**data, "url": None, "path": file}
        if url.split(":", 1)[0] not in ("postgresql", "postgres") or "://" not in url:
            raise ValueError(
                f"url: expected sqlite:///ABSOLUTE/PATH or postgresql://USER:PASS@HOST/DB, "
                f"got {redact_url(url)!r}"
            )
        return data

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def describe(self) -> str:
        """The database for messages: the file, or the URL without its password."""
        return str(self.path) if self.url is None else redact_url(self.url)

    def store(self) -> Store:
        """The configured store, not yet opened."""
        return SQLiteStore(self.path) if self.url is None else make_store(self.url)


class LimitsConfig(_Model):
    """Where per-key limits and deployment cooldowns are kept (docs/scaling.md)."""

    # Unset: in this process's memory. ``redis://[:password@]host:port/db``, ``rediss://``
    # or ``unix:///path?db=N``: in Redis, shared by every replica that names the same one.
    redis_url: SecretStr | None = None
    # Redis unreachable: ``open`` admits calls under this process's own in-memory limits,
    # ``closed`` refuses calls of limited keys with a 503 until Redis answers again.
    on_store_error: Literal["open", "closed"] = "open"
    # The most one Redis command may take before it counts as a failure (a busy event loop
    # counts too: keep it well above Redis's own latency).
    timeout_s: float = Field(default=1.0, gt=0, le=30)

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError(
                    "expected redis://host:port/db, rediss://host:port/db or unix:///path"
                )
        return value


class Timeouts(_Model):
    """Per provider. The call's own deadline (``server.request_timeout_s``, split across
    fallbacks by the router) bounds all of these too."""

    # Establishing a connection to the upstream (TCP and TLS).
    connect_s: float = Field(default=10, gt=0)
    # From sending the request to the answer's first event (a stream) or its whole body (a
    # plain answer). None: only the call's deadline applies.
    first_byte_s: float | None = Field(default=None, gt=0)
    # The longest silence between two events of a stream, once it has started.
    idle_s: float = Field(default=300, gt=0)


class _ProviderBase(_Model):
    timeouts: Timeouts = Field(default_factory=Timeouts)
    # Gone: named here only to say what replaced it.
    timeout_s: None = Field(default=None, exclude=True)

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _no_timeout_s(cls, value: Any) -> None:
        raise ValueError(
            "replaced by `timeouts: {connect_s, first_byte_s, idle_s}` (and "
            "server.request_timeout_s for the whole call)"
        )


def _blank_is_none(value: Any) -> Any:
    """``api_key: "${OPENAI_API_KEY:-}"`` with the variable unset means no key (Ollama)."""
    return None if isinstance(value, str) and not value.strip() else value


class OpenAIProviderConfig(_ProviderBase):
    type: Literal["openai"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.openai.com/v1"
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=256, ge=1)
    # Whether the upstream serves the Responses API (/v1/responses) itself; else meridian
    # translates it to chat completions. None: yes for api.openai.com only.
    responses_api: bool | None = None

    _api_key = field_validator("api_key", mode="before")(_blank_is_none)

    @model_validator(mode="after")
    def _one_credential(self) -> OpenAIProviderConfig:
        if self.api_key is not None and "@" in urlsplit(self.base_url).netloc:
            raise ValueError(
                "base_url carries credentials (user:password@) and api_key is set: both would "
                "be an Authorization header; use one"
            )
        return self


class AnthropicProviderConfig(_ProviderBase):
    type: Literal["anthropic"]
    api_key: SecretStr | None = None
    base_url: str = "https://api.anthropic.com"
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=256, ge=1)

    _api_key = field_validator("api_key", mode="before")(_blank_is_none)


class ClaudeCodeProviderConfig(_ProviderBase):
    type: Literal["claude-code"]
    config_dir: Path = Field(default_factory=lambda: data_dir() / "claude")
    env: dict[str, str] = Field(default_factory=dict)
    # CLI processes at once, idle ones (kept for a conversation's next turn) included.
    max_concurrency: int = Field(default=4, ge=1)
    max_queue: int = Field(default=32, ge=0)
    queue_timeout_s: float = Field(default=30, gt=0)
    request_timeout_s: float = Field(default=600, gt=0)
    # How long a process that answered stays alive for the same caller's next turn of the
    # same conversation (a tool result, a follow-up); 0: every request spawns its own.
    continuation_ttl_s: float = Field(default=120, ge=0)
    # Processes started ahead for a caller's next first turn with the same system prompt,
    # tools and model.
    warm_spares: int = Field(default=0, ge=0)
    # The resident memory all idle processes together may hold; the oldest go first.
    live_memory_mb: int = Field(default=1024, ge=0)

    @field_validator("config_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _spares_leave_room(self) -> ClaudeCodeProviderConfig:
        if self.warm_spares and self.warm_spares >= self.max_concurrency:
            raise ValueError("warm_spares must be below max_concurrency (spares take slots)")
        return self


ProviderConfig = Annotated[
    OpenAIProviderConfig | AnthropicProviderConfig | ClaudeCodeProviderConfig,
    Field(discriminator="type"),
]


class ModelCapabilities(_Model):
    """What ``/v1/models`` says a deployment's model can do, where meridian's catalog does
    not know the model (a local one) or says otherwise. Unset: the catalog's word."""

    image_input: bool | None = None
    pdf_input: bool | None = None
    thinking: bool | None = None
    effort: bool | None = None
    structured_outputs: bool | None = None
    tools: bool | None = None


class DeploymentConfig(_Model):
    provider: str
    model: str
    # Used when the caller sends no max_tokens (Anthropic upstreams require one).
    default_max_tokens: int | None = Field(default=None, ge=1)
    # Requests asking for more are clamped to this.
    max_output_tokens: int | None = Field(default=None, ge=1)
    # The model's context window, for /v1/models (default: the catalog's).
    max_input_tokens: int | None = Field(default=None, ge=1)
    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)


class Cooldown(_Model):
    """The circuit breaker of each deployment (provider + model)."""

    # Consecutive failed attempts (overload, 5xx, timeouts, connection errors) that open it.
    failures: int = Field(default=3, ge=1)
    # How long an open deployment is skipped before one probe call may try it; doubled after
    # each failed probe, up to ``max_s``. A reset time the upstream reported wins.
    seconds: float = Field(default=30, gt=0)
    max_s: float = Field(default=300, gt=0)


class RouterConfig(_Model):
    # Further attempts on the same deployment after a retryable error (overload, 429 with a
    # short retry-after, 5xx, a refused connection), with jittered exponential backoff that
    # honours retry-after; never after 400/401/403, an exhausted quota or a timeout.
    retries: int = Field(default=2, ge=0, le=10)
    # The most a call may spend waiting between retries, in total.
    retry_budget_s: float = Field(default=15, ge=0)
    cooldown: Cooldown = Field(default_factory=Cooldown)


class AliasConfig(_Model):
    """The long form of an alias: its deployments plus its own routing policy."""

    deployments: list[DeploymentConfig] = Field(min_length=1)
    retries: int | None = Field(default=None, ge=0, le=10)
    retry_budget_s: float | None = Field(default=None, ge=0)
    # This alias's deadline per call, instead of server.request_timeout_s.
    timeout_s: float | None = Field(default=None, gt=0)


class Settings(_Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, DeploymentConfig | list[DeploymentConfig] | AliasConfig] = Field(
        default_factory=dict
    )
    # Where it came from, for messages; not a config key.
    source: str = Field(default="<built-in defaults>", exclude=True)

    @model_validator(mode="after")
    def _workers_share_limits(self) -> Settings:
        if self.server.workers > 1 and self.limits.redis_url is None:
            raise ValueError(
                f"server.workers: {self.server.workers} needs limits.redis_url: rpm, tpm, "
                "max_parallel, budgets in flight and deployment cooldowns are otherwise kept in "
                "each process's memory, and every worker would allow a key its whole limit "
                "(docs/scaling.md); set limits.redis_url, or keep workers: 1"
            )
        return self

    def deployments(self, alias: str) -> list[DeploymentConfig]:
        entry = self.models[alias]
        if isinstance(entry, AliasConfig):
            return entry.deployments
        return entry if isinstance(entry, list) else [entry]

    def alias_config(self, alias: str) -> AliasConfig | None:
        entry = self.models[alias]
        return entry if isinstance(entry, AliasConfig) else None


_LEFT_OUT = object()


def interpolate(
    value: Any, env: Mapping[str, str], path: str = "", unset: dict[str, str] | None = None
) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a YAML tree.

    An unset ``${VAR}`` without a default raises, unless ``unset`` is given: then the key
    path and the variable are recorded there and the key is left out of the tree."""
    if isinstance(value, dict):
        items = (
            (k, interpolate(v, env, f"{path}.{k}" if path else str(k), unset))
            for k, v in value.items()
        )
        return {k: v for k, v in items if v is not _LEFT_OUT}
    if isinstance(value, list):
        items = (interpolate(v, env, f"{path}[{i}]", unset) for i, v in enumerate(value))
        return [v for v in items if v is not _LEFT_OUT]
    if not isinstance(value, str) or "${" not in value:
        return value
    missing: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        if unset is None:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        missing.append(name)
        return ""

    out = _VAR.sub(sub, value)
    if missing and unset is not None:
        unset[path] = missing[0]
        return _LEFT_OUT
    return out


def unset_message(source: str, unset: Mapping[str, str]) -> str:
    return "\n".join(
        f"{source}: {path}: environment variable {name} is not set" for path, name in unset.items()
    )


def _check_references(settings: Settings) -> list[str]:
    problems = []
    for alias in settings.models:
        for i, dep in enumerate(settings.deployments(alias)):
            if dep.provider not in settings.providers:
                entry = settings.models[alias]
                where = f"models.{alias}" + (
                    f"[{i}]"
                    if isinstance(entry, list)
                    else f".deployments[{i}]"
                    if isinstance(entry, AliasConfig)
                    else ""
                )
                known = ", ".join(sorted(settings.providers)) or "none configured"
                problems.append(
                    f"{where}.provider: no provider named {dep.provider!r} (providers: {known})"
                )
    return problems


_UNION_TAGS = {
    "openai",
    "anthropic",
    "claude-code",
    "DeploymentConfig",
    "list[DeploymentConfig]",
    "AliasConfig",
}


def _loc(loc: tuple[int | str, ...]) -> str:
    """``providers.openai.api_key``: a key path without pydantic's union-member tags."""
    parts = [
        p
        for i, p in enumerate(loc)
        if not (i == 2 and loc[0] in ("providers", "models") and p in _UNION_TAGS)
    ]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validate(raw: Any, source: str) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        settings = Settings.model_validate({**raw, "source": source})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _loc(err["loc"])
            lines.append(f"{source}: {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
    problems = _check_references(settings)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return settings


def load(
    path: str | Path, env: Mapping[str, str] | None = None, *, unset: dict[str, str] | None = None
) -> Settings:
    path = Path(path)
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    found: dict[str, str] = {} if unset is None else unset
    raw = interpolate(raw, env, unset=found)
    if unset is None and found:
        raise ConfigError(unset_message(str(path), found))  # every one of them, not the first
    try:
        return validate(raw, str(path))
    except ConfigError as exc:
        if not unset:
            raise
        # A key left out for its unset variable may be why the rest does not validate.
        raise ConfigError(f"{exc}\n{unset_message(str(path), unset)}") from None


# The built-in defaults: providers switched on by the usual environment variables.
_DEFAULT_DIRECT: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "openai": (
        "OPENAI_API_KEY",
        {"type": "openai"},
        ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini"],
    ),
    "gemini": (
        "GEMINI_API_KEY",
        {"type": "openai", "base_url": "https://generativelanguage.googleapis.com/v1beta/openai"},
        ["gemini-2.5-flash", "gemini-2.5-pro"],
    ),
    "anthropic": ("ANTHROPIC_API_KEY", {"type": "anthropic"}, []),
}


_CLAUDE_MODELS = (
    "claude-haiku-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-opus-5-5",
)
_CLAUDE_FAMILIES = ("haiku", "sonnet", "opus")


def default_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name, (var, conf, aliases) in _DEFAULT_DIRECT.items():
        if env.get(var):
            providers[name] = {**conf, "api_key": env[var]}
            models.update({a: {"provider": name, "model": a} for a in aliases})
    # The Claude subscription, through the official CLI; logged in with `meridian auth login`.
    # Exact model ids (a name must mean one model), and the CLI's family shorthands, which
    # follow its newest model of the family, under names that say so.
    providers["claude"] = {"type": "claude-code"}
    models.update({m: {"provider": "claude", "model": m} for m in _CLAUDE_MODELS})
    models.update(
        {f"claude-{f}-latest": {"provider": "claude", "model": f} for f in _CLAUDE_FAMILIES}
    )
    raw: dict[str, Any] = {"providers": providers, "models": models}
    if env.get("MERIDIAN_MASTER_KEY"):
        raw["server"] = {"master_key": env["MERIDIAN_MASTER_KEY"]}
    return validate(raw, "<built-in defaults>")


# The system-wide config (the Ansible role and the systemd unit use it): found without
# --config or $MERIDIAN_CONFIG, so `sudo meridian keys ...` opens the service's database.
SYSTEM_CONFIG = Path("/etc/meridian/meridian.yaml")


def resolve(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    *,
    unset: dict[str, str] | None = None,
) -> Settings:
    """The settings in force: ``--config``, else ``$MERIDIAN_CONFIG``, else
    ``/etc/meridian/meridian.yaml`` if it exists, else the built-in defaults."""
    env = os.environ if env is None else env
    chosen = (
        path or env.get("MERIDIAN_CONFIG") or (SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None)
    )
    return load(chosen, env, unset=unset) if chosen else default_settings(env)
