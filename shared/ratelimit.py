"""Fixed-window rate limiting with one atomic DynamoDB counter per identity and window.

The counter lives in DynamoDB (``ADD`` is atomic), so the limit holds across gunicorn workers,
uvicorn workers and instances. Items carry a TTL so old windows disappear.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(self.limit),
                   "X-RateLimit-Remaining": str(self.remaining)}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


def identity(api_key: str | None, client_ip: str) -> str:
    """Whom a request counts against. Keys are hashed: no key is ever stored."""
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:24]
    return "ip:" + client_ip


def window_start(now_epoch: float, window_s: int) -> int:
    return int(now_epoch // window_s) * window_s


def bucket(ident: str, now_epoch: float, window_s: int) -> str:
    return f"{ident}#{window_start(now_epoch, window_s)}"


def decide(count: int, limit: int, now_epoch: float, window_s: int) -> RateDecision:
    """``count`` is the counter's value after this request's atomic increment."""
    end = window_start(now_epoch, window_s) + window_s
    return RateDecision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        retry_after_s=max(1, math.ceil(end - now_epoch)),
    )
