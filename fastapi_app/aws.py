"""Green's AWS I/O: aioboto3 clients entered once in the lifespan, and the async executor."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import aioboto3

from shared.agent import CompletionAccumulator
from shared.calls import AgentCall, SdkCall
from shared.clients import client_specs
from shared.faults import AgentDeadlineExceeded
from shared.settings import Settings


class AsyncAws:
    def __init__(self, clients: dict[str, Any]) -> None:
        self._clients = clients

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> AsyncAws:
        """Create every client once; the stack closes them at shutdown."""
        session = aioboto3.Session()
        clients: dict[str, Any] = {
            spec.service: await stack.enter_async_context(
                session.client(spec.sdk_name, **spec.kwargs))
            for spec in client_specs(settings)
        }
        return cls(clients)

    async def execute(self, call: SdkCall) -> Any:
        if isinstance(call, AgentCall):
            return await self._invoke_agent(call)
        return await getattr(self._clients[call.service], call.operation)(**call.params)

    async def _invoke_agent(self, call: AgentCall) -> Any:
        accumulator = CompletionAccumulator()
        try:
            async with asyncio.timeout(call.deadline_s):
                response = await self._clients["bedrock"].invoke_agent(**call.params)
                stream = response["completion"]
                try:
                    async for event in stream:
                        accumulator.add(event)
                finally:
                    stream.close()  # releases the connection on any exit
        except TimeoutError:
            raise AgentDeadlineExceeded from None
        return accumulator.finish()
