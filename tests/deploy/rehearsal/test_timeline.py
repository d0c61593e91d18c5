"""The timeline PNG: a synthetic cutover (steps, a fault, a rollback) and empty inputs."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest

from deploy.rehearsal.loadgen import RequestRecord
from deploy.rehearsal.timeline import plot_timeline

pytestmark = pytest.mark.unit
T0 = 1_767_000_000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def synthetic() -> tuple[list[dict[str, Any]], list[RequestRecord], list[tuple[float, str]]]:
    """60 s at ~20 req/s: green 0 -> 10 -> 25 -> 50 %, a fault at 38 s makes green fail and
    slow, the controller rolls back at 44 s; a few requests get no answer around it."""
    rng = random.Random(7)
    steps = [(0.0, 0), (8.0, 10), (20.0, 25), (32.0, 50), (44.5, 0)]
    audit: list[dict[str, Any]] = [
        {"event": "weights", "t": T0 + t, "weights": {"blue": 100 - g, "green": g}}
        for t, g in steps]
    audit += [
        {"event": "step_passed", "t": T0 + 19.8, "weights": {"blue": 90, "green": 10}},
        {"event": "step_passed", "t": T0 + 31.8, "weights": {"blue": 75, "green": 25}},
        {"event": "rollback", "t": T0 + 44.0, "reason": "green 5xx over budget"},
        {"event": "rolled_back", "t": T0 + 44.6},
        {"event": "completed", "t": T0 + 59.0},
    ]
    for end, verdict in ((14, "pass"), (19, "pass"), (26, "inconclusive"), (31, "pass"),
                         (38, "pass"), (43, "fail"), (44, "alarm")):
        slow = verdict in ("fail", "alarm")
        audit.append({"event": "window", "t": T0 + end, "verdict": verdict, "figures": {
            "service": {"blue": {"p90_ms": 40.0 + rng.random() * 5},
                        "green": {"p90_ms": (400.0 if slow else 30.0) + rng.random() * 5}}}})
    records: list[RequestRecord] = []
    t, n = 0.0, 0
    while t < 60:
        green_share = max(g for s, g in steps if s <= t) / 100
        faulty = 38 <= t < 44.5
        color = "green" if rng.random() < green_share else "blue"
        status = 200
        latency = rng.gauss(25, 5) if color == "green" else rng.gauss(40, 8)
        if color == "green" and faulty:
            status = 503 if rng.random() < 0.6 else 200
            latency = rng.gauss(350, 60)
        record_color: str | None = color
        code = "AGENT_UNAVAILABLE" if status == 503 else None
        if faulty and rng.random() < 0.05:
            status, record_color, code, latency = 0, None, "ReadTimeout", 10_000.0
        records.append(RequestRecord(t=T0 + t, latency_ms=max(1.0, latency), status=status,
                                     color=record_color, conversation=f"c{n // 4}", turn=n % 4,
                                     error_code=code))
        n += 1
        t += rng.expovariate(20)
    return audit, records, [(T0 + 38.0, "fault injected"), (T0 + 44.2, "alarm raised")]


def test_a_cutover_with_a_rollback_renders(tmp_path: Path) -> None:
    audit, records, marks = synthetic()
    out = tmp_path / "nested" / "timeline.png"
    plot_timeline(audit, records, out, title="rehearsal: fault at 50 %", marks=marks)
    width, height = png_size(out)
    assert (width, height) == (1300, 1100)
    assert out.stat().st_size > 60_000  # four panels of lines and text, not a blank canvas


@pytest.mark.parametrize("case", ["nothing", "records-only", "audit-only", "odd-events"])
def test_empty_or_odd_input_still_renders(tmp_path: Path, case: str) -> None:
    audit, records, _ = synthetic()
    if case == "nothing":
        audit, records = [], []
    elif case == "records-only":
        audit = []
    elif case == "audit-only":
        records = []
    else:  # events without time or figures, an unknown verdict, one single record
        audit = [{"event": "weights", "weights": {"green": 5}}, {"event": "window", "t": T0},
                 {"event": "window", "t": T0 + 1, "verdict": "odd",
                  "figures": {"service": {"green": {"p90_ms": 12.0}}}},
                 {"event": "promoted", "t": T0 + 2}, {"event": "unknown", "t": T0 + 3}]
        records = records[:1]
    out = tmp_path / f"{case}.png"
    plot_timeline(audit, records, out, title=case)
    assert png_size(out) == (1300, 1100)
    assert out.stat().st_size > 20_000


def test_sample_png_for_review(tmp_path: Path) -> None:
    """Keeps a copy where a person can look at it (REHEARSAL_SAMPLE_PNG, when set)."""
    import os

    target = os.environ.get("REHEARSAL_SAMPLE_PNG")
    audit, records, marks = synthetic()
    out = Path(target) if target else tmp_path / "sample.png"
    plot_timeline(audit, records, out, title="sample", marks=marks)
    assert out.exists()
