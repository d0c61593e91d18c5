"""shared/faults.py: every store-failure row of the README's table, as the SDKs raise it.

The exceptions are the ones botocore raises for what devstack's fault injector
(devstack/moto_faults.py) answers; tests/apps/test_store_faults.py checks the same rows over the
wire in both colors.
"""

from __future__ import annotations

from typing import Any

import pytest
import urllib3.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from shared import flows
from shared.calls import AwsCall, Call, run_sync
from shared.errors import ApiError, ErrorCode
from shared.faults import is_conditional_failure, store_failure
from shared.settings import Settings

pytestmark = pytest.mark.unit


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetItem")


STORE_ROWS: list[tuple[BaseException, ErrorCode]] = [
    (client_error("ProvisionedThroughputExceededException", 400), ErrorCode.STORE_THROTTLED),
    (client_error("ThrottlingException", 400), ErrorCode.STORE_THROTTLED),
    (client_error("RequestLimitExceeded", 400), ErrorCode.STORE_THROTTLED),
    (client_error("SomethingNew", 429), ErrorCode.STORE_THROTTLED),
    (client_error("ResourceNotFoundException", 400), ErrorCode.STORE_UNAVAILABLE),
    (client_error("InternalServerError", 500), ErrorCode.STORE_UNAVAILABLE),
    (client_error("ServiceUnavailableException", 503), ErrorCode.STORE_UNAVAILABLE),
    (client_error("ValidationException", 400), ErrorCode.STORE_UNAVAILABLE),
    (ConnectionClosedError(endpoint_url="http://x"), ErrorCode.STORE_UNAVAILABLE),
    (EndpointConnectionError(endpoint_url="http://x"), ErrorCode.STORE_UNAVAILABLE),
    (ReadTimeoutError(endpoint_url="http://x"), ErrorCode.STORE_UNAVAILABLE),
    (ConnectTimeoutError(endpoint_url="http://x"), ErrorCode.STORE_UNAVAILABLE),
    (urllib3.exceptions.ProtocolError("reset"), ErrorCode.STORE_UNAVAILABLE),
    (TimeoutError(), ErrorCode.STORE_UNAVAILABLE),
]


@pytest.mark.parametrize(("exc", "code"), STORE_ROWS, ids=lambda v: type(v).__name__
                         if isinstance(v, BaseException) else str(v))
def test_store_failure_rows(exc: BaseException, code: ErrorCode) -> None:
    mapped = store_failure(exc)
    assert mapped is not None
    assert mapped.code is code
    assert mapped.status == 503
    written = store_failure(exc, writing=True)  # after the agent answered: never a success
    assert written is not None
    assert written.code is ErrorCode.SESSION_WRITE_FAILED


@pytest.mark.parametrize("exc", [KeyError("x"), ValueError("bug"), AttributeError("a")])
def test_a_bug_is_not_a_store_failure(exc: BaseException) -> None:
    assert store_failure(exc) is None  # it becomes a 500 INTERNAL_ERROR, never exception text


def test_a_lost_condition_is_told_apart() -> None:
    assert is_conditional_failure(client_error("ConditionalCheckFailedException", 400))
    assert not is_conditional_failure(client_error("ThrottlingException", 400))


def failing(exc: BaseException) -> Any:
    def execute(call: Call) -> Any:
        assert isinstance(call, AwsCall)
        raise exc
    return execute


@pytest.mark.parametrize(("exc", "code"), [
    (client_error("ThrottlingException", 400), ErrorCode.STORE_THROTTLED),
    (ConnectionClosedError(endpoint_url="http://x"), ErrorCode.STORE_UNAVAILABLE),
])
def test_a_failed_delete_is_a_store_error_not_a_write_failure(exc: BaseException,
                                                              code: ErrorCode) -> None:
    """SESSION_WRITE_FAILED means an agent answer was not returned; a delete has none."""
    ctx = flows.Context(Settings())
    with pytest.raises(ApiError) as info:
        run_sync(flows.delete_session(ctx, "s1"), failing(exc))
    assert info.value.code is code


@pytest.mark.parametrize("flow", ["rate_limit", "get_session", "list_user_sessions"])
def test_every_read_path_maps_the_same_way(flow: str) -> None:
    ctx = flows.Context(Settings())
    run = {"rate_limit": lambda: flows.rate_limit(ctx, "key"),
           "get_session": lambda: flows.get_session(ctx, "s1"),
           "list_user_sessions": lambda: flows.list_user_sessions(ctx, "u1", 20, None)}[flow]
    with pytest.raises(ApiError) as info:
        run_sync(run(), failing(client_error("ProvisionedThroughputExceededException", 400)))
    assert info.value.code is ErrorCode.STORE_THROTTLED
