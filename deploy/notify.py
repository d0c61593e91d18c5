"""Notifications: one SNS message (JSON) per state transition, to the topic from settings."""

from __future__ import annotations

import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("deploy.notify")


class Notifier:
    def __init__(self, sns: Any | None, topic_arn: str | None) -> None:
        self.sns = sns
        self.topic_arn = topic_arn
        self.sent = 0
        self.failed = 0

    def send(self, message: dict[str, Any]) -> bool:
        """Publish; a failure is logged and counted, never raised (a notification must not
        stop a rollback), and the audit log holds the transition anyway."""
        if self.sns is None or not self.topic_arn:
            return False
        subject = f"cutover {message.get('cutover_id', '')}: {message.get('event', '')}"[:99]
        try:
            self.sns.publish(TopicArn=self.topic_arn, Subject=subject,
                             Message=json.dumps(message, default=str, sort_keys=True),
                             MessageAttributes={"event": {
                                 "DataType": "String", "StringValue": str(message["event"])}})
        except (BotoCoreError, ClientError) as exc:
            self.failed += 1
            log.warning("notification failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return False
        self.sent += 1
        return True
