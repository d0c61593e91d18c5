"""Blue's metrics sink: a per-worker thread flushes the CloudWatch buffer off the request path."""

from __future__ import annotations

import atexit
import logging
import threading

from legacy_flask.aws import SyncAws
from shared import prom
from shared.calls import run_sync
from shared.metrics import MetricBuffer, flush
from shared.perfwindow import PerfWindow
from shared.pipeline import Telemetry
from shared.settings import Settings

log = logging.getLogger("chatbot.metrics")


class Flusher:
    def __init__(self, settings: Settings, aws: SyncAws) -> None:
        self.settings = settings
        self.aws = aws
        self.telemetry = Telemetry(
            buffer=MetricBuffer(settings.namespace_for("blue"), settings.metrics_buffer_max,
                                settings.metrics_storage_resolution),
            window=PerfWindow(settings.metrics_dir),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()

    def start(self) -> None:
        if self.settings.metrics_enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-flusher",
                                            daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.metrics_flush_interval_s):
            self.flush_now()

    def flush_now(self) -> int:
        with self._flush_lock:
            delivered = run_sync(flush(self.telemetry.buffer, self._dropped), self.aws.execute)
        if delivered:
            prom.DATUMS_SENT.labels("blue").inc(delivered)
        return delivered

    @staticmethod
    def _dropped(observations: int) -> None:  # a batch past its send attempts
        prom.DATUMS_DROPPED.labels("blue").inc(observations)

    def close(self) -> None:
        """Stop the thread and flush what is left (on worker exit / SIGTERM).

        A flush in flight is let finish (the thread is joined, for up to
        METRICS_SHUTDOWN_TIMEOUT_S, as green's close() waits for its task), then what is left is
        flushed. The worker's drain leaves time for this (legacy_flask/worker.py FLUSH_MARGIN_S).
        """
        atexit.unregister(self.close)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.metrics_shutdown_timeout_s)
            self._thread = None
        if self.settings.metrics_enabled:
            self.flush_now()
            buf = self.telemetry.buffer
            log.info("metrics flushed on shutdown",
                     extra={"sent": buf.sent, "dropped": buf.dropped, "pending": buf.pending})
