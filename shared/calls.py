"""AWS calls as plain data, and the two drivers that carry them out.

A *flow* (see :mod:`shared.flows`) is a generator: it yields the AWS calls it needs, receives
each result (or has the call's exception thrown into it), and returns the answer. The flows hold
every decision; the drivers here only execute calls. Blue passes a boto3 executor to
:func:`run_sync`, green an aioboto3 executor to :func:`run_async`: the httpx auth-flow pattern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Service = Literal["dynamodb", "cloudwatch", "bedrock"]
T = TypeVar("T")


@dataclass(frozen=True)
class AwsCall:
    """One SDK call: ``client(service).<operation>(**params)``; the result is the response dict."""

    service: Service
    operation: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentCall:
    """``invoke_agent(**params)`` and read the ``completion`` stream to its end.

    The executor feeds every event to an :class:`shared.agent.CompletionAccumulator` and sends
    back its :class:`shared.agent.AgentReply`. ``deadline_s`` bounds the whole call, stream
    included.
    """

    params: dict[str, Any]
    deadline_s: float


@dataclass(frozen=True)
class LocalCall:
    """Blocking local work (reading every worker's metrics files): the sync driver calls ``fn``,
    the async driver runs it in a thread, so it never blocks an event loop."""

    fn: Callable[[], Any]


SdkCall = AwsCall | AgentCall  # what an app's executor carries out
Call = SdkCall | LocalCall
Flow = Generator[Call, Any, T]


def run_sync(flow: Flow[T], execute: Callable[[SdkCall], Any]) -> T:
    """Drive ``flow`` to its end with a blocking executor."""
    try:
        call = next(flow)
        while True:
            try:
                result = call.fn() if isinstance(call, LocalCall) else execute(call)
            except Exception as exc:  # handed to the flow, which decides what it means
                call = flow.throw(exc)
            else:
                call = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], execute: Callable[[SdkCall], Awaitable[Any]]) -> T:
    """Drive ``flow`` to its end with an async executor."""
    try:
        call = next(flow)
        while True:
            try:
                if isinstance(call, LocalCall):
                    result = await asyncio.to_thread(call.fn)
                else:
                    result = await execute(call)
            except Exception as exc:
                call = flow.throw(exc)
            else:
                call = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
