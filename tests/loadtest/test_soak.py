"""The soak's pure parts: where minute 1 is, growth between medians, and the verdict."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.soak import FD_TOLERANCE, Sample, fd_tolerance, growth, reference_index, verdict

pytestmark = pytest.mark.unit


def samples(rss: list[float], fds: list[int], step: float = 5.0) -> list[Sample]:
    return [Sample(t=(i + 1) * step, rss_mb=r, fds=f, processes=3, requests=10 * i,
                   errors_5xx=0) for i, (r, f) in enumerate(zip(rss, fds, strict=True))]


def test_minute_one_is_the_first_sample_at_60_s_or_a_fifth_of_a_short_run() -> None:
    run = samples([100.0] * 60, [50] * 60)
    assert run[reference_index(run, 300)].t == 60.0
    assert run[reference_index(run, 60)].t == 15.0  # 20 % of a one-minute run


def test_growth_compares_medians_of_three_samples() -> None:
    rss = [90.0] * 11 + [100.0, 300.0, 100.0] + [105.0] * 43 + [110.0, 500.0, 110.0]
    run = samples(rss, [40] * len(rss))
    g = growth(run, 300)
    assert g["rss_mb_minute_1"] == 100.0  # the spike at 65 s does not decide
    assert g["rss_mb_end"] == 110.0
    assert g["rss_growth_pct"] == 10.0
    assert g["fds_minute_1"] == g["fds_end"] == 40.0


def figures(**over: Any) -> dict[str, Any]:
    base = {"errors_5xx": 0, "transport_errors": 0, "rss_growth_pct": 3.0, "fds_minute_1": 80.0,
            "fds_end": 80.0 + FD_TOLERANCE, "requests": 1000}
    return {**base, **over}


def test_fd_tolerance_is_a_few_descriptors_or_five_percent() -> None:
    assert fd_tolerance(80) == FD_TOLERANCE
    assert fd_tolerance(400) == 20


def test_verdict_passes_a_clean_run() -> None:
    assert verdict(figures()) == []


@pytest.mark.parametrize(("over", "needle"), [
    ({"errors_5xx": 1}, "5xx"),
    ({"transport_errors": 2}, "no answer"),
    ({"rss_growth_pct": 10.0}, "RSS grew"),
    ({"fds_end": 80.0 + FD_TOLERANCE + 1}, "open fds grew"),
    ({"requests": 0}, "no request"),
])
def test_verdict_fails_on_each_criterion(over: dict[str, Any], needle: str) -> None:
    failures = verdict(figures(**over))
    assert len(failures) == 1
    assert needle in failures[0]
