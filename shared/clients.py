"""How every AWS client is configured: endpoints, timeouts, retries, pool size.

Both colors build their clients from :func:`client_specs`, so timeouts and retry budgets are the
same in blue (boto3) and green (aioboto3).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.useragent import UserAgentString

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


@cache
def static_user_agent() -> str:
    """botocore's own User-Agent string, built once per process.

    Without ``Config(user_agent=...)`` botocore rebuilds (and sanitizes, component by component)
    this string twice for every call: 20% of the client CPU of a DynamoDB GetItem here (0.78 ->
    0.61 ms, docs/performance.md). Given a string, it only joins it with the session's extras.
    """
    ua = UserAgentString.from_environment()
    ua.set_session_config("Boto3", boto3.__version__, "")  # as boto3 and aioboto3 name it
    return str(ua.to_string())


def _config(settings: Settings, service: Service, pool: int) -> Config:
    """One service's client configuration, the same for boto3 (blue) and aioboto3 (green).

    ``parameter_validation=False``: botocore's client-side check of every call's parameters
    against the service model (required members, types, minimum lengths and values) walks the
    whole request, item attributes included, on every call: 10% of the Python calls of a chat.
    Every value in a request is either built by :mod:`shared.flows` / :mod:`shared.metrics` or
    validated before it gets there, more strictly than botocore would: message, session_id and
    user_id by the contracts (:mod:`shared.contracts`), limit and cursor by
    :class:`shared.web.ListQuery` and :func:`shared.sessions.decode_cursor`, agent ids and table
    names by :class:`shared.settings.Settings`. tests/shared/test_clients.py runs botocore's
    validator on every call the flows yield, at the contracts' limits; the service still
    validates everything it receives.
    """
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
        user_agent=static_user_agent(),
        parameter_validation=False,
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
