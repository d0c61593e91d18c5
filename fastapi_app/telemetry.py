"""Green's metrics sink: an asyncio task flushes the CloudWatch buffer off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi_app.aws import AsyncAws
from shared import prom
from shared.calls import run_async
from shared.metrics import MetricBuffer, flush
from shared.perfwindow import PerfWindow
from shared.pipeline import Telemetry
from shared.settings import Settings

log = logging.getLogger("chatbot.metrics")


class Flusher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.telemetry = Telemetry(
            buffer=MetricBuffer(settings.namespace_for("green"), settings.metrics_buffer_max,
                                settings.metrics_storage_resolution),
            window=PerfWindow(settings.metrics_dir),
        )
        self._task: asyncio.Task[None] | None = None
        self._aws: AsyncAws | None = None
        self._lock = asyncio.Lock()

    def start(self, aws: AsyncAws) -> None:
        self._aws = aws
        if self.settings.metrics_enabled:
            self._task = asyncio.create_task(self._run(), name="metrics-flusher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_flush_interval_s)
            await self.flush_now()

    async def flush_now(self) -> int:
        if self._aws is None:
            return 0
        async with self._lock:
            delivered = await run_async(flush(self.telemetry.buffer, self._dropped),
                                        self._aws.execute)
        if delivered:
            prom.DATUMS_SENT.labels("green").inc(delivered)
        return delivered

    @staticmethod
    def _dropped(observations: int) -> None:  # a batch past its send attempts
        prom.DATUMS_DROPPED.labels("green").inc(observations)

    async def close(self) -> None:
        """Stop the task and flush what is left (lifespan shutdown, after requests drain)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.settings.metrics_enabled:
            await self.flush_now()
            buf = self.telemetry.buffer
            log.info("metrics flushed on shutdown",
                     extra={"sent": buf.sent, "dropped": buf.dropped, "pending": buf.pending})
