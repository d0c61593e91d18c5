"""The pytest face of the harness: ``pytest parity_tests`` runs every case as its own test item
(select with ``-k``), against real servers booted once for the session, exactly as
``make parity`` does. Reports are not written; use ``make parity`` for those."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from parity_tests.harness.lanes import LocalLanes
from parity_tests.harness.model import Case, load_corpus
from parity_tests.harness.rules import load_known, load_noise
from parity_tests.harness.runner import Runner
from shared.openapi import openapi_document

HERE = Path(__file__).resolve().parent


def all_cases() -> list[Case]:
    cases = load_corpus(HERE / "cases")
    count = int(os.environ.get("GENERATED", "100"))
    if count:
        from parity_tests.harness.generate import generate_cases

        cases += generate_cases(openapi_document(), count, int(os.environ.get("SEED",
                                                                               "20261122")))
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = all_cases()
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    with LocalLanes(tmp_path_factory.mktemp("parity-logs")) as lanes:
        yield Runner(lanes.lanes, load_noise(HERE / "noise.yaml"),
                     load_known(HERE / "known_differences.yaml"), lanes.effects,
                     today=dt.date.today())
