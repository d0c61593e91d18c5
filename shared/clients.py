"""How every AWS client is configured: endpoints, timeouts, retries, pool size.

Both colors build their clients from :func:`client_specs`, so timeouts and retry budgets are the
same in blue (boto3) and green (aioboto3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from shared.calls import Service
from shared.settings import Settings

SDK_NAMES: dict[Service, str] = {
    "dynamodb": "dynamodb",
    "cloudwatch": "cloudwatch",
    "bedrock": "bedrock-agent-runtime",
}


@dataclass(frozen=True)
class ClientSpec:
    service: Service
    sdk_name: str
    kwargs: dict[str, Any]


def _config(settings: Settings, service: Service, pool: int) -> Config:
    if service == "bedrock":
        connect, read, attempts = (settings.agent_connect_timeout_s,
                                   settings.agent_read_timeout_s, settings.agent_max_attempts)
    else:
        connect, read, attempts = (settings.dynamodb_connect_timeout_s,
                                   settings.dynamodb_read_timeout_s,
                                   settings.dynamodb_max_attempts)
    return Config(
        region_name=settings.aws_region,
        connect_timeout=connect,
        read_timeout=read,
        retries={"mode": "standard", "total_max_attempts": attempts},
        max_pool_connections=pool,
        tcp_keepalive=True,
    )


def client_specs(settings: Settings, pool: int | None = None) -> list[ClientSpec]:
    size = pool or settings.aws_max_pool_connections
    specs = []
    for service, sdk_name in SDK_NAMES.items():
        kwargs: dict[str, Any] = {"region_name": settings.aws_region,
                                  "config": _config(settings, service, size)}
        endpoint = settings.endpoint_for(service)
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        specs.append(ClientSpec(service, sdk_name, kwargs))
    return specs
