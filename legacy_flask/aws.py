"""Blue's AWS I/O: boto3 clients, one set per worker process, and the blocking executor."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import boto3

from shared.agent import CompletionAccumulator
from shared.calls import AgentCall, SdkCall
from shared.clients import client_specs
from shared.faults import AgentDeadlineExceeded
from shared.settings import Settings


class SyncAws:
    """boto3 clients for this process. Made after gunicorn forks (the app is built in the
    worker); if the process forks anyway, the clients are rebuilt once in the child.

    Each client keeps up to ``pool`` idle connections (default: the setting
    ``AWS_MAX_POOL_CONNECTIONS``): a sync worker uses one, but gthread and gevent workers have
    many calls in flight, and past the pool's size urllib3 opens a new connection per call and
    closes it after ("Connection pool is full, discarding connection")."""

    def __init__(self, settings: Settings, pool: int | None = None) -> None:
        self._settings = settings
        self._pool = pool
        self._lock = threading.Lock()
        self._pid = -1
        self._clients: dict[str, Any] = {}
        self._ensure()

    def _ensure(self) -> dict[str, Any]:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    session = boto3.session.Session()  # Sessions are not thread-safe; clients are
                    self._clients = {
                        spec.service: session.client(  # type: ignore[call-overload]
                            spec.sdk_name, **spec.kwargs)
                        for spec in client_specs(self._settings, self._pool)
                    }
                    self._pid = os.getpid()
        return self._clients

    def execute(self, call: SdkCall) -> Any:
        clients = self._ensure()
        if isinstance(call, AgentCall):
            return self._invoke_agent(clients["bedrock"], call)
        return getattr(clients[call.service], call.operation)(**call.params)

    @staticmethod
    def _invoke_agent(client: Any, call: AgentCall) -> Any:
        deadline = time.monotonic() + call.deadline_s
        response = client.invoke_agent(**call.params)
        stream = response["completion"]
        accumulator = CompletionAccumulator()
        try:
            for event in stream:  # a stalled stream is bounded by the read timeout
                accumulator.add(event)
                if time.monotonic() > deadline:
                    raise AgentDeadlineExceeded
        finally:
            stream.close()
        return accumulator.finish()
