"""How an upstream failure becomes a status and an ``error_code``: decided here, once.

Both SDKs raise botocore's exception types (aiobotocore re-uses them), so one mapping serves
both colors. The README's upstream-fault table documents the result; tests in
``tests/shared/test_faults.py`` pin each row.
"""

from __future__ import annotations

import logging

from botocore.eventstream import ParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from shared.errors import ApiError, ErrorCode

log = logging.getLogger("chatbot.upstream")

_THROTTLE_CODES = frozenset({
    "ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "Throttling",
})
_UNAVAILABLE_CODES = frozenset({
    "ServiceUnavailableException", "ServiceUnavailable", "DependencyFailedException",
    "ModelNotReadyException",
})


class AgentDeadlineExceeded(TimeoutError):
    """Raised by a driver when the overall agent deadline passes (stream included)."""


def _aws_code(exc: ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    # event-stream exceptions arrive lowerCamel (``throttlingException``)
    return code[:1].upper() + code[1:]


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _is_transport(exc: BaseException) -> bool:
    # Raised while a stream is read, past botocore's wrapping: urllib3's errors (blue) and
    # aiohttp's (green) for a dropped or broken connection.
    return isinstance(exc, OSError | BotoConnectionError | HTTPClientError | Urllib3Error) or type(
        exc).__module__.startswith("aiohttp")


def agent_failure(exc: BaseException) -> ApiError | None:
    """The decided error for a failed agent call, or None for a bug (which becomes a 500)."""
    code: ErrorCode
    if isinstance(exc, AgentDeadlineExceeded | ConnectTimeoutError | ReadTimeoutError
                  | TimeoutError | Urllib3Timeout):  # urllib3's: a stalled stream (blue)
        code = ErrorCode.AGENT_TIMEOUT
    elif isinstance(exc, ClientError):
        aws = _aws_code(exc)
        if aws in _THROTTLE_CODES or _status(exc) == 429:
            code = ErrorCode.AGENT_THROTTLED
        elif aws in _UNAVAILABLE_CODES or _status(exc) == 503:
            code = ErrorCode.AGENT_UNAVAILABLE
        else:
            code = ErrorCode.AGENT_ERROR
    elif isinstance(exc, ParserError):
        code = ErrorCode.AGENT_BAD_RESPONSE
    elif isinstance(exc, ResponseStreamingError) or _is_transport(exc):
        code = ErrorCode.AGENT_UNAVAILABLE
    elif isinstance(exc, BotoCoreError):
        code = ErrorCode.AGENT_ERROR
    else:
        return None
    log.warning("agent call failed", extra={"error_code": code.value,
                                            "exception": type(exc).__name__,
                                            "aws_code": _code_or_none(exc)})
    return ApiError(code)


def store_failure(exc: BaseException, *, writing: bool = False) -> ApiError | None:
    """The decided error for a failed DynamoDB call, or None for a bug (which becomes a 500).

    A failed write after the agent answered is ``SESSION_WRITE_FAILED``: the answer is not
    returned as a success when its session was not stored.
    """
    code: ErrorCode
    if isinstance(exc, ClientError):
        throttled = _aws_code(exc) in _THROTTLE_CODES or _status(exc) == 429
        code = ErrorCode.STORE_THROTTLED if throttled else ErrorCode.STORE_UNAVAILABLE
    elif isinstance(exc, BotoCoreError | TimeoutError | Urllib3Timeout) or _is_transport(exc):
        code = ErrorCode.STORE_UNAVAILABLE
    else:
        return None
    if writing:
        code = ErrorCode.SESSION_WRITE_FAILED
    log.warning("store call failed", extra={"error_code": code.value,
                                            "exception": type(exc).__name__,
                                            "aws_code": _code_or_none(exc)})
    return ApiError(code)


def is_conditional_failure(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _aws_code(exc) in (
        "ConditionalCheckFailedException", "TransactionConflictException"
    )


def _code_or_none(exc: BaseException) -> str | None:
    return _aws_code(exc) if isinstance(exc, ClientError) else None
