"""Blue's gunicorn worker: the sync worker, plus a drain of the accept queue on SIGTERM.

On SIGTERM gunicorn's sync worker finishes the request in hand and exits. Connections that the
kernel had already accepted onto the shared listening socket, but that no worker had taken yet
(with 5 sync workers, any request beyond the fifth in flight), are reset when the last worker
closes the socket: the client sent its request and gets no answer. This worker, once SIGTERM
has stopped the normal loop, keeps taking connections off the queue until it is empty, and only
then exits (and ``worker_exit`` flushes its metrics). The drain is bounded by
``graceful_timeout`` less a margin for that flush, so the master never has to SIGKILL it.
"""

from __future__ import annotations

import errno
import time

from gunicorn import util  # type: ignore[import-untyped]
from gunicorn.workers.sync import SyncWorker  # type: ignore[import-untyped]

FLUSH_MARGIN_S = 5.0  # left of graceful_timeout for worker_exit's final metrics flush


class DrainingSyncWorker(SyncWorker):  # type: ignore[misc]
    def run(self) -> None:
        super().run()  # returns once SIGTERM cleared self.alive (after the request in hand)
        self.drain()

    def drain(self) -> int:
        """Answer every connection already queued on the listening sockets; how many."""
        deadline = time.monotonic() + max(1.0, self.cfg.graceful_timeout - FLUSH_MARGIN_S)
        served = 0
        for listener in self.sockets:
            while time.monotonic() < deadline:
                self.notify()
                try:
                    client, addr = listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        break  # the queue is empty
                    if exc.errno == errno.ECONNABORTED:
                        continue
                    raise
                client.setblocking(True)
                util.close_on_exec(client)
                self.handle(listener, client, addr)
                served += 1
        if served:
            self.log.info("drained %d queued connections on shutdown", served)
        return served
