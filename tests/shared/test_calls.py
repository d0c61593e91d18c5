"""The two flow drivers: run_sync (blue) and run_async (green), driven with plain executors.

A flow yields calls and receives their results, or has their exceptions thrown into it; the
async driver runs LocalCall work in a thread, never on the event loop, and a cancellation is not
an exception handed to the flow: it leaves the driver with the flow suspended at its call (what
green's metrics flusher relies on to put an abandoned batch back, fastapi_app/telemetry.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from typing import Any

import pytest

from shared.calls import AgentCall, AwsCall, Call, LocalCall, SdkCall, run_async, run_sync

pytestmark = pytest.mark.unit

GET = AwsCall("dynamodb", "get_item", {"Key": {"id": {"S": "a"}}})
PUT = AwsCall("dynamodb", "put_item", {"Item": {"id": {"S": "a"}}})


def two_calls(log: list[Any]) -> Generator[Call, Any, str]:
    first = yield GET
    log.append(("got", first))
    try:
        yield PUT
    except ConnectionError as exc:
        log.append(("thrown", str(exc)))
        return "put failed"
    return f"done with {first['Item']}"


def answer(call: SdkCall) -> dict[str, Any]:
    if isinstance(call, AgentCall):
        raise AssertionError("no agent call here")
    if call.operation == "put_item":
        raise ConnectionError("store down")
    return {"Item": call.params["Key"]["id"]["S"]}


def test_run_sync_sends_results_and_throws_errors_into_the_flow() -> None:
    log: list[Any] = []
    assert run_sync(two_calls(log), answer) == "put failed"
    assert log == [("got", {"Item": "a"}), ("thrown", "store down")]
    ok: list[Any] = []
    assert run_sync(two_calls(ok), lambda call: {"Item": "b"}) == "done with b"


@pytest.mark.asyncio
async def test_run_async_sends_results_and_throws_errors_into_the_flow() -> None:
    async def execute(call: SdkCall) -> Any:
        await asyncio.sleep(0)
        return answer(call)

    log: list[Any] = []
    assert await run_async(two_calls(log), execute) == "put failed"
    assert log == [("got", {"Item": "a"}), ("thrown", "store down")]


@pytest.mark.asyncio
async def test_run_async_returns_at_once_for_a_flow_with_no_call() -> None:
    def no_call() -> Generator[Call, Any, int]:
        return 7
        yield GET  # pragma: no cover - makes this a generator

    async def never(call: SdkCall) -> Any:
        raise AssertionError("not called")

    assert await run_async(no_call(), never) == 7


@pytest.mark.asyncio
async def test_local_calls_run_in_a_thread_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    def flow() -> Generator[Call, Any, tuple[int, int]]:
        where = yield LocalCall(threading.get_ident)
        again = yield LocalCall(lambda: 1 // 0)  # its exception is thrown in, as an SDK error's
        return where, again

    def caught() -> Generator[Call, Any, int]:
        try:
            yield LocalCall(lambda: 1 // 0)
        except ZeroDivisionError:
            return -1
        return 0

    async def never(call: SdkCall) -> Any:
        raise AssertionError("a LocalCall never reaches the executor")

    assert await run_async(caught(), never) == -1
    with pytest.raises(ZeroDivisionError):
        await run_async(flow(), never)

    def only_where() -> Generator[Call, Any, int]:
        return (yield LocalCall(threading.get_ident))  # type: ignore[no-any-return]

    assert await run_async(only_where(), never) != loop_thread


@pytest.mark.asyncio
async def test_a_cancelled_call_leaves_the_flow_suspended_at_it() -> None:
    log: list[Any] = []
    started = asyncio.Event()

    async def hang(call: SdkCall) -> Any:
        started.set()
        await asyncio.Event().wait()

    flow = two_calls(log)
    task = asyncio.create_task(run_async(flow, hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == []  # the cancellation was not handed to the flow as an error
    # the flow still waits at its first call: the caller may answer or fail it
    assert flow.send({"Item": "late"}) == PUT
    with pytest.raises(StopIteration) as stop:
        flow.throw(ConnectionError("abandoned"))
    assert stop.value.value == "put failed"
    assert log == [("got", {"Item": "late"}), ("thrown", "abandoned")]
