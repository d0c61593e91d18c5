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


async def _open_http_session(client: Any) -> None:
    """Make the client's aiohttp session now, in the lifespan, not in its first call.

    aiobotocore makes it lazily, in the first request it sends, and making it loads the CA
    bundle (``SSLContext.load_verify_locations``, even for http:// endpoints): a blocking call
    of 10-50 ms on the event loop, once per client and worker, that stalled every request in
    flight on that worker (the CloudWatch client's first flush, mid-traffic). Done here, before
    the worker serves. The key is the one ``AIOHTTPSession.send`` uses (the endpoint's proxy,
    None without one). A later aiobotocore without these internals falls back to its lazy way.
    """
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    get_session = getattr(http, "_get_session", None)
    proxy_config = getattr(http, "_proxy_config", None)
    if get_session is None or proxy_config is None:
        return
    await get_session(proxy_config.proxy_url_for(client.meta.endpoint_url))


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
        for client in clients.values():
            await _open_http_session(client)
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
