"""``/metrics/performance``: qps, percentiles and error rate over the last 60 s, per instance.

An instance runs several worker processes (gunicorn workers, uvicorn workers), and the figure
must cover all of them. Each worker appends ``(timestamp, duration_ms, status)`` records to its
own fixed-size ring file (mmap) in the instance's metrics directory; a snapshot reads every
worker's ring. Without a directory (in-process tests) the ring lives in memory.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from pathlib import Path

from shared.contracts import PerformanceSnapshot

_RECORD = struct.Struct("<dfI")  # epoch seconds, duration ms, status
_HEADER = struct.Struct("<Q")  # records written so far
CAPACITY = 1 << 16  # records per worker: ~1000 req/s per worker over a 60 s window
WINDOW_S = 60


class PerfWindow:
    def __init__(self, directory: str | None, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.directory = Path(directory) if directory else None
        self._lock = threading.Lock()
        self._pid = -1
        self._buf: mmap.mmap | bytearray = bytearray()

    def _size(self) -> int:
        return _HEADER.size + self.capacity * _RECORD.size

    def _ring(self) -> mmap.mmap | bytearray:
        pid = os.getpid()
        if self._pid != pid:  # first use in this process (after a fork, a fresh ring)
            if self.directory is None:
                self._buf = bytearray(self._size())
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"perf-{pid}.ring"
                with open(path, "w+b") as fh:
                    fh.truncate(self._size())
                    self._buf = mmap.mmap(fh.fileno(), self._size())
            self._pid = pid
        return self._buf

    def record(self, duration_ms: float, status: int, now: float | None = None) -> None:
        with self._lock:
            buf = self._ring()
            (written,) = _HEADER.unpack_from(buf, 0)
            offset = _HEADER.size + (written % self.capacity) * _RECORD.size
            _RECORD.pack_into(buf, offset, now if now is not None else time.time(),
                              duration_ms, status)
            _HEADER.pack_into(buf, 0, written + 1)

    def _rings(self) -> list[bytes]:
        if self.directory is None:
            with self._lock:
                return [bytes(self._ring())]
        rings = []
        for path in sorted(self.directory.glob("perf-*.ring")):
            try:
                rings.append(path.read_bytes())
            except FileNotFoundError:
                continue
        return rings

    def snapshot(self, now: float | None = None, window_s: int = WINDOW_S) -> PerformanceSnapshot:
        now = time.time() if now is None else now
        since = now - window_s
        durations: list[float] = []
        errors = 0
        for raw in self._rings():
            if len(raw) < _HEADER.size:
                continue
            (written,) = _HEADER.unpack_from(raw, 0)
            count = min(written, (len(raw) - _HEADER.size) // _RECORD.size)
            body = memoryview(raw)[_HEADER.size:_HEADER.size + count * _RECORD.size]
            for ts, duration, status in _RECORD.iter_unpack(body):
                if since < ts <= now:
                    durations.append(duration)
                    errors += status >= 500
        return summarize(durations, errors, window_s)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[min(rank, len(ordered)) - 1]


def summarize(durations: list[float], errors: int, window_s: int) -> PerformanceSnapshot:
    ordered = sorted(durations)
    n = len(ordered)
    return PerformanceSnapshot(
        qps=round(n / window_s, 3),
        p50_ms=round(percentile(ordered, 50), 3),
        p90_ms=round(percentile(ordered, 90), 3),
        p99_ms=round(percentile(ordered, 99), 3),
        error_rate=round(errors / n, 6) if n else 0.0,
        requests=n,
        window_s=window_s,
    )
