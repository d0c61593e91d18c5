"""Green's metrics sink: an asyncio task flushes the CloudWatch buffer off the request path.

At shutdown (:meth:`Flusher.close`) the periodic task is asked to stop, never cancelled while a
PutMetricData is in flight: a batch in flight has already left the buffer, so cancelling it lost
it uncounted (about 2 ``make parity`` runs in 51 were short in green's CloudWatch totals). The
flush in flight finishes, then what is left is flushed, all within METRICS_SHUTDOWN_TIMEOUT_S;
what still cannot be sent by then is counted as dropped, as blue counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi_app.aws import AsyncAws
from shared import prom
from shared.calls import run_async
from shared.metrics import MAX_SEND_ATTEMPTS, MetricBuffer, flush
from shared.perfwindow import PerfWindow
from shared.pipeline import Telemetry
from shared.settings import Settings

log = logging.getLogger("chatbot.metrics")


class FlushAbandoned(Exception):
    """Thrown into a flush whose task was cancelled: its batches go back to the buffer."""


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
        self._stop = asyncio.Event()

    def start(self, aws: AsyncAws) -> None:
        self._aws = aws
        self._stop.clear()
        if self.settings.metrics_enabled:
            self._task = asyncio.create_task(self._run(), name="metrics-flusher")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.metrics_flush_interval_s)
            if self._stop.is_set():
                return
            await self.flush_now()

    async def flush_now(self) -> int:
        if self._aws is None:
            return 0
        async with self._lock:
            flow = flush(self.telemetry.buffer, self._dropped)
            try:
                delivered = await run_async(flow, self._aws.execute)
            except asyncio.CancelledError:
                # the flow is suspended at the call in flight: fail it and every batch after it,
                # so that they go back to the buffer (for the final flush) instead of vanishing
                with contextlib.suppress(StopIteration, FlushAbandoned):
                    while True:
                        flow.throw(FlushAbandoned())
                raise
        if delivered:
            prom.DATUMS_SENT.labels("green").inc(delivered)
        return delivered

    @staticmethod
    def _dropped(observations: int) -> None:  # a batch past its send attempts
        prom.DATUMS_DROPPED.labels("green").inc(observations)

    async def close(self) -> None:
        """Stop the task and flush what is left (lifespan shutdown, after requests drain).

        A flush in flight is let finish; then what is left is flushed. Both within
        METRICS_SHUTDOWN_TIMEOUT_S: past it the flush is cancelled and what it had not sent
        is counted as dropped (it may have reached CloudWatch: it is never sent twice).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.metrics_shutdown_timeout_s
        self._stop.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=deadline - loop.time())
            if not done:
                log.warning("metrics flush in flight cancelled at shutdown", extra={
                    "timeout_s": self.settings.metrics_shutdown_timeout_s})
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self.settings.metrics_enabled:
            return
        left = deadline - loop.time()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.flush_now()
        unsent = self._drop_unsent()
        buf = self.telemetry.buffer
        log.info("metrics flushed on shutdown",
                 extra={"sent": buf.sent, "dropped": buf.dropped, "unsent": unsent,
                        "pending": buf.pending})

    def _drop_unsent(self) -> int:
        """Count what is still buffered as dropped: there is no flush after this one."""
        buf = self.telemetry.buffer
        unsent = 0
        for batch in buf.take():
            batch.attempts = MAX_SEND_ATTEMPTS - 1  # its last attempt: failed() drops it
            buf.failed(batch)
            unsent += batch.observations
        if unsent:
            self._dropped(unsent)
            log.warning("metrics dropped at shutdown", extra={
                "observations": unsent, "dropped_total": buf.dropped})
        return unsent
