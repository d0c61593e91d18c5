"""One test per parity case (corpus and generated)."""

from __future__ import annotations

import pytest

from parity_tests.harness.model import Case
from parity_tests.harness.runner import Runner

pytestmark = pytest.mark.parity


def test_case(case: Case, runner: Runner) -> None:
    result = runner.run_case(case)
    problems = [result.error] if result.error else []
    for step in result.steps:
        where = f"{step.step} ({step.method} {step.path})"
        problems += [f"{where}: difference at {d.path}: blue={d.left!r} green={d.right!r}"
                     for d in step.differences]
        problems += [f"{where}: undeclared noise at {d.path}" for d in step.undeclared_noise]
        problems += [f"{where}: contract: {v}" for v in step.violations]
        problems += [f"{where}: {step.expectation}"] if step.expectation else []
        problems += [f"{where}: {step.error}"] if step.error else []
    assert not problems, "\n".join(problems)
