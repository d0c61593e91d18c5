"""One pydantic-settings class for both colors. Read once at start-up and passed down.

Every field maps to the environment variable of the same name in upper case. Bad values stop the
process at start-up with a message naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared import __version__

Color = Literal["blue", "green"]
DEFAULT_NAMESPACES: dict[str, str] = {"blue": "ChatBot/Flask", "green": "ChatBot/FastAPI"}
DEV_API_KEY = "dev-key-not-for-production"
AGENT_ID_PATTERN = r"^[0-9a-zA-Z]{1,10}$"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SettingsError(RuntimeError):
    """Raised at start-up for a bad setting; the message names each bad variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", validate_default=True, frozen=True
    )

    # identity
    environment: Literal["local", "dev", "test", "staging", "prod"] = Field(
        default="local", description="Shown by /health; staging/prod refuse the dev API key "
        "and an empty API_KEYS.")
    app_version: str = Field(default=__version__, description="Shown by /health.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the JSON log lines on stdout.")

    # AWS
    aws_region: str = Field(default="us-east-1", min_length=1, description="AWS region.")
    aws_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="One endpoint for every service (a local emulator).")
    dynamodb_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="DynamoDB endpoint; unset means AWS.")
    cloudwatch_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="CloudWatch endpoint; unset means AWS.")
    bedrock_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="bedrock-agent-runtime endpoint; unset means AWS.")
    aws_max_pool_connections: int = Field(
        default=1000, ge=1, le=10_000,
        description="HTTP connections per client (green's concurrency needs many).")

    # the agent
    bedrock_agent_id: str = Field(default="DEVAGENT01", pattern=AGENT_ID_PATTERN,
                                  description="The Bedrock agent's id.")
    bedrock_agent_alias_id: str = Field(default="DEVALIAS01", pattern=AGENT_ID_PATTERN,
                                        description="The agent alias to invoke.")
    bedrock_enable_trace: bool = Field(
        default=False, description="Ask for traces; needed to report tokens_used.")
    agent_connect_timeout_s: float = Field(default=2.0, gt=0, le=60,
                                           description="Connect timeout to the agent.")
    agent_read_timeout_s: float = Field(default=30.0, gt=0, le=900,
                                        description="Socket read timeout (stream stalls).")
    agent_deadline_s: float = Field(default=45.0, gt=0, le=900,
                                    description="Overall deadline for one agent call, stream "
                                    "included (green: exact; blue: checked between events).")
    agent_max_attempts: int = Field(default=2, ge=1, le=10,
                                    description="Attempts (standard retry mode) per agent call.")

    # DynamoDB
    sessions_table: str = Field(default="chat_sessions", pattern=r"^[a-zA-Z0-9_.-]{3,255}$",
                                description="Session table (TTL expires_at, GSI on user_id).")
    rate_limit_table: str = Field(default="chat_rate_limits", pattern=r"^[a-zA-Z0-9_.-]{3,255}$",
                                  description="Rate-limit counters (TTL expires_at).")
    session_ttl_s: int = Field(default=86_400, ge=60,
                               description="A session expires this long after its last turn.")
    session_history_limit: int = Field(default=20, ge=0, le=100,
                                       description="Messages kept in a session record.")
    dynamodb_connect_timeout_s: float = Field(default=1.0, gt=0, le=60,
                                              description="Connect timeout to DynamoDB.")
    dynamodb_read_timeout_s: float = Field(default=3.0, gt=0, le=60,
                                           description="Read timeout to DynamoDB.")
    dynamodb_max_attempts: int = Field(default=3, ge=1, le=10,
                                       description="Attempts per DynamoDB/CloudWatch call.")

    # rate limits
    rate_limit_enabled: bool = Field(default=True, description="Rate-limit /api routes.")
    rate_limit_requests: int = Field(default=600, ge=1,
                                     description="Requests per window per API key or client IP.")
    rate_limit_window_s: int = Field(default=60, ge=1, le=86_400,
                                     description="Fixed window length.")
    trust_forwarded_for: bool = Field(
        default=False, description="Take the client IP from X-Forwarded-For (behind an ALB): "
        "the hop TRUSTED_PROXY_HOPS from the right, never one the client wrote.")
    trusted_proxy_hops: int = Field(
        default=1, ge=1, le=10,
        description="With TRUST_FORWARDED_FOR: how many proxies in front append to "
        "X-Forwarded-For (1: the ALB alone). Fewer hops than this: the peer address.")

    # auth and CORS
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Comma-separated; empty disables auth on /api "
        "(refused in staging/prod unless AUTH_DISABLED=true).")
    auth_disabled: bool = Field(
        default=False, description="Serve /api without API keys in staging/prod, on purpose "
        "(API_KEYS must then be empty).")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated allowed origins; empty: no CORS.")
    cors_allow_credentials: bool = Field(
        default=False, description="Send Access-Control-Allow-Credentials (never with *).")

    # HTTP
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576,
                                description="Largest request body; more is 413.")
    gzip_min_bytes: int = Field(default=1000, ge=0,
                                description="Bodies this large are gzipped if accepted.")
    # wire bounds, the same in both servers (shared/wire.py, docs/alb.md)
    keepalive_timeout_s: int = Field(
        default=65, ge=61, le=4000, description="Idle time a kept-alive connection is held "
        "(green; blue closes after every answer): above the ALB's 60 s idle timeout.")
    client_header_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="From the accept: the first byte and the whole "
        "header block; past it the connection is closed without an answer.")
    client_body_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="From the end of the headers: the whole body; "
        "past it the connection is closed and the request is not acted on.")

    # metrics
    metrics_enabled: bool = Field(default=True, description="Send metrics to CloudWatch.")
    metrics_namespace: str | None = Field(
        default=None, description="Defaults to ChatBot/Flask (blue) or ChatBot/FastAPI (green).")
    metrics_flush_interval_s: float = Field(default=5.0, gt=0, le=300,
                                            description="How often buffered metrics are sent.")
    metrics_buffer_max: int = Field(default=100_000, ge=100,
                                    description="Observations buffered before new ones drop.")
    metrics_storage_resolution: int = Field(
        default=60, description="1 or 60: the datums' StorageResolution and their aggregation "
        "bucket (1: per second, high resolution, for gates on short windows; 60: per minute).")
    metrics_shutdown_timeout_s: float = Field(
        default=5.0, gt=0, le=60,
        description="At shutdown: time for the flush in flight and the final flush; what is "
        "still unsent then is counted as dropped.")
    metrics_access: Literal["off", "open", "key"] = Field(
        default="open", description="/metrics and /metrics/performance: off (404), open, or "
        "key (Authorization: Bearer METRICS_API_KEY, else 401). Never on a public listener.")
    metrics_api_key: SecretStr | None = Field(
        default=None, description="The bearer token /metrics* need when METRICS_ACCESS=key.")
    metrics_dir: str | None = Field(
        default=None,
        description="Directory shared by one instance's workers for /metrics and "
        "/metrics/performance (the launchers set it).",
    )

    # traffic capture (for replay by the parity harness)
    capture_path: str | None = Field(
        default=None,
        description="Append one JSON line per request to this file (secrets redacted); "
        "unset: no capture.")
    capture_sample_rate: float = Field(
        default=1.0, ge=0, le=1,
        description="Share of requests captured, decided by a hash of the request id.")

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("metrics_storage_resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value not in (1, 60):
            raise ValueError("must be 1 (high resolution) or 60 (standard)")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must start with http:// or https://")
        return [o.rstrip("/") for o in value]

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError(
                "CORS_ORIGINS='*' cannot be combined with CORS_ALLOW_CREDENTIALS=true"
            )
        if self.environment in ("staging", "prod") and any(
                k.get_secret_value() == DEV_API_KEY for k in self.api_keys):
            raise ValueError("API_KEYS holds the local dev key outside local/dev/test")
        if self.environment in ("staging", "prod") and not self.api_keys \
                and not self.auth_disabled:
            raise ValueError(f"API_KEYS is empty in ENVIRONMENT={self.environment}: set "
                             "API_KEYS, or AUTH_DISABLED=true to serve /api without auth")
        if self.auth_disabled and self.api_keys:
            raise ValueError("AUTH_DISABLED=true contradicts a non-empty API_KEYS")
        if self.metrics_access == "key" and not (
                self.metrics_api_key and self.metrics_api_key.get_secret_value()):
            raise ValueError("METRICS_ACCESS=key needs METRICS_API_KEY")
        if self.agent_deadline_s < self.agent_connect_timeout_s:
            raise ValueError("AGENT_DEADLINE_S must be at least AGENT_CONNECT_TIMEOUT_S")
        return self

    def endpoint_for(self, service: Literal["dynamodb", "cloudwatch", "bedrock"]) -> str | None:
        specific = {
            "dynamodb": self.dynamodb_endpoint_url,
            "cloudwatch": self.cloudwatch_endpoint_url,
            "bedrock": self.bedrock_endpoint_url,
        }[service]
        url = specific or self.aws_endpoint_url
        return str(url).rstrip("/") if url is not None else None

    def namespace_for(self, color: Color) -> str:
        return self.metrics_namespace or DEFAULT_NAMESPACES[color]

    def api_key_values(self) -> list[bytes]:
        return [k.get_secret_value().encode() for k in self.api_keys]


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus overrides), or fail naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "SETTINGS"
            lines.append(f"  {name}: {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


def settings_or_exit() -> Settings:
    """:func:`load_settings` for a server's start-up: a bad setting is one line on stderr and
    exit status 2 (before any worker starts), the same in both colors."""
    try:
        return load_settings()
    except SettingsError as exc:
        reasons = "; ".join(line.strip().replace("SETTINGS: Value error, ", "")
                            for line in str(exc).splitlines()[1:])
        print(f"chatbot: refusing to start: {reasons}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def markdown_table() -> str:
    """The README's settings table: every variable, its default and what it does."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "(empty)"
        elif field.default is None:
            default = "(unset)"
        else:
            default = f"`{field.default}`"
        meaning = (field.description or "").replace("|", "/")
        rows.append(f"| `{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
