"""How the clients are configured (shared/clients.py), and why botocore's own parameter
validation may be off: every request the flows build passes botocore's validator, at the limits
of what the contracts and settings let through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

from shared import flows
from shared import sessions as sess
from shared.agent import AgentReply
from shared.calls import AgentCall, AwsCall, Call, Flow, run_sync
from shared.clients import SDK_NAMES, client_specs
from shared.contracts import MESSAGE_MAX_CHARS, ChatRequest
from shared.errors import ApiError
from shared.metrics import MAX_VALUES_PER_DATUM, MetricBuffer, flush
from shared.settings import Settings

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LONGEST_SESSION = "s" * 100  # SESSION_ID_PATTERN: 2-100 characters
LONGEST_USER = "u" * 128  # USER_ID_PATTERN: 1-128 characters
LONGEST_MESSAGE = "m" * MESSAGE_MAX_CHARS


def _models() -> dict[str, ServiceModel]:
    session = botocore.session.get_session()
    return {service: session.get_service_model(name) for service, name in SDK_NAMES.items()}


MODELS = _models()


class ValidatingAws:
    """Runs botocore's ParamValidator on every call, then answers it from a dict table
    (``conflict_once``: the next put_item is refused as a conditional failure)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.checked: list[str] = []
        self.conflict_once = False

    def _validate(self, service: str, operation: str, params: dict[str, Any]) -> None:
        model = MODELS[service]
        names = {xform_name(op): op for op in model.operation_names}
        shape = model.operation_model(names[operation]).input_shape
        assert shape is not None
        report = ParamValidator().validate(params, shape)
        assert not report.has_errors(), report.generate_report()
        self.checked.append(names[operation])

    def execute(self, call: Call) -> Any:
        if isinstance(call, AgentCall):
            self._validate("bedrock", "invoke_agent", call.params)
            return AgentReply("r" * 10_000, 1, None)
        assert isinstance(call, AwsCall)
        self._validate(call.service, call.operation, call.params)
        key = call.params.get("Key", {}).get("session_id", {}).get("S")
        if call.operation == "get_item":
            return {"Item": self.items[key]} if key in self.items else {}
        if call.operation == "put_item":
            if self.conflict_once:
                self.conflict_once = False
                raise ClientError({"Error": {"Code": "ConditionalCheckFailedException",
                                             "Message": "m"}}, "PutItem")
            self.items[call.params["Item"]["session_id"]["S"]] = call.params["Item"]
            return {}
        if call.operation == "delete_item":
            old = self.items.pop(key, None)
            return {"Attributes": old} if old else {}
        if call.operation == "query":
            items = list(self.items.values())[:call.params["Limit"]]
            return {"Items": items, "LastEvaluatedKey": {
                "session_id": items[-1]["session_id"], "user_id": {"S": LONGEST_USER},
                "updated_at": items[-1]["updated_at"]}}
        if call.operation == "update_item":
            return {"Attributes": {"request_count": {"N": "1"}}}
        return {}


def _ctx(**settings: Any) -> flows.Context:
    return flows.Context(Settings(**settings), now=lambda: T0)


def _run(aws: ValidatingAws, flow: Flow[Any]) -> Any:
    return run_sync(flow, aws.execute)


@pytest.fixture
def aws() -> ValidatingAws:
    return ValidatingAws()


def test_chat_requests_pass_botocore_validation_at_the_contract_limits(
        aws: ValidatingAws) -> None:
    ctx = _ctx(session_history_limit=100)
    shortest = ChatRequest(message="m", session_id="s1")
    _run(aws, flows.chat(ctx, shortest))
    longest = ChatRequest(message=LONGEST_MESSAGE, session_id=LONGEST_SESSION,
                          user_id=LONGEST_USER)
    for _ in range(51):  # the history fills up to its bound (100 messages of 4,000 chars)
        _run(aws, flows.chat(ctx, longest))
    assert len(sess.from_item(aws.items[LONGEST_SESSION]).record.messages) == 100
    _run(aws, flows.chat(ctx, ChatRequest(message="new")))  # a generated session id
    aws.conflict_once = True  # the write is refused: the flow reads the item back
    with pytest.raises(ApiError):  # not its own write: a conflict
        _run(aws, flows.chat(ctx, ChatRequest(message="again", session_id="s1")))
    assert aws.checked.count("InvokeAgent") == 54
    assert aws.checked.count("GetItem") == 55  # one per chat, and the read-back
    assert aws.checked.count("PutItem") == 54


def test_session_requests_pass_botocore_validation(aws: ValidatingAws) -> None:
    ctx = _ctx()
    _run(aws, flows.chat(ctx, ChatRequest(message="hi", session_id=LONGEST_SESSION,
                                          user_id=LONGEST_USER)))
    _run(aws, flows.get_session(ctx, LONGEST_SESSION))
    for limit in (1, 100):  # ListQuery's bounds
        page = _run(aws, flows.list_user_sessions(ctx, LONGEST_USER, limit, None))
        assert page.next_cursor
        _run(aws, flows.list_user_sessions(ctx, LONGEST_USER, limit, page.next_cursor))
    _run(aws, flows.rate_limit(_ctx(rate_limit_window_s=86_400), "k" * 64))
    _run(aws, flows.detailed_health(ctx))
    _run(aws, flows.delete_session(ctx, LONGEST_SESSION))
    assert {"GetItem", "PutItem", "Query", "UpdateItem", "DeleteItem",
            "ListSessions"} <= set(aws.checked)


def test_metric_batches_pass_botocore_validation(aws: ValidatingAws) -> None:
    buffer = MetricBuffer("ChatBot/FastAPI", storage_resolution=1)
    for i in range(3 * MAX_VALUES_PER_DATUM):  # latency datums split at 150 values
        for status in (200, 404, 503):
            buffer.record("/api/v1/chat", status, 0.5 + i * 7.3,
                          when=T0 + timedelta(seconds=i % 3))

    def flush_all() -> Flow[None]:
        delivered = yield from flush(buffer)
        assert delivered == 9 * MAX_VALUES_PER_DATUM

    _run(aws, flush_all())
    assert aws.checked
    assert set(aws.checked) == {"PutMetricData"}


def test_every_client_skips_botocore_parameter_validation() -> None:
    specs = client_specs(Settings())
    assert sorted(s.service for s in specs) == sorted(SDK_NAMES)
    for spec in specs:
        assert spec.kwargs["config"].parameter_validation is False
