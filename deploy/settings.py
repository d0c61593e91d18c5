"""The controller's settings (pydantic-settings): where the rule, the tables, the metrics and
the topic are. Every field is the environment variable of the same name in upper case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.sessions import CUTOVER_TABLE
from shared.settings import DEFAULT_NAMESPACES


class DeploySettingsError(RuntimeError):
    """A bad setting; the message names the variable."""


class DeploySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    aws_region: str = Field(default="us-east-1", min_length=1)
    aws_endpoint_url: AnyHttpUrl | None = Field(
        default=None, description="devstack's moto for every AWS API (unset on AWS)")
    cutover_rule_arn: str | None = Field(default=None, description="the weighted rule")
    cutover_listener_arn: str | None = Field(
        default=None, description="or: the listener whose rule carries CUTOVER_RULE_TAG")
    cutover_rule_tag: str = Field(default="chatbot:role=cutover", pattern=r"^[^=]+=.+$")
    blue_target_group_arn: str | None = Field(
        default=None, description="unset: the rule's target group whose name ends in blue")
    green_target_group_arn: str | None = None
    cutover_table: str = Field(default=CUTOVER_TABLE, pattern=r"^[a-zA-Z0-9_.-]{3,255}$")
    cutover_topic_arn: str | None = Field(default=None, description="SNS topic for every "
                                          "transition (unset: no notifications)")
    blue_namespace: str = DEFAULT_NAMESPACES["blue"]
    green_namespace: str = DEFAULT_NAMESPACES["green"]
    parity_blue_url: str | None = Field(
        default=None, description="pre-traffic parity: blue (the production listener at 100/0)")
    parity_green_url: str | None = Field(
        default=None, description="pre-traffic parity: green (the test listener)")
    parity_api_key: SecretStr | None = None
    cutover_report_dir: Path = Path("reports/cutover")

    @property
    def rule_tag(self) -> tuple[str, str]:
        key, value = self.cutover_rule_tag.split("=", 1)
        return key, value

    def client(self, service: str) -> Any:
        endpoint = str(self.aws_endpoint_url).rstrip("/") if self.aws_endpoint_url else None
        config = Config(retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=3, read_timeout=10)
        return boto3.client(service, region_name=self.aws_region,  # type: ignore[call-overload]
                            endpoint_url=endpoint, config=config)


def load_deploy_settings(**overrides: Any) -> DeploySettings:
    try:
        return DeploySettings(**overrides)
    except ValidationError as exc:
        lines = [f"  {'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                 for e in exc.errors()]
        raise DeploySettingsError("invalid settings:\n" + "\n".join(lines)) from None
