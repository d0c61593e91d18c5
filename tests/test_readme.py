"""The README and the reference pages in docs/ stay true: generated tables match the code they
describe, and every link between them resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parity_tests.harness.model import load_corpus
from shared import errors, settings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
SETTINGS = (ROOT / "docs" / "settings.md").read_text()


def test_error_table_is_current() -> None:
    assert errors.markdown_table() in API, "regenerate with: python -m shared.errors"


def test_settings_table_is_current() -> None:
    assert settings.markdown_table() in SETTINGS, "regenerate with: python -m shared.settings"


_REF = re.compile(r"`([a-z_]+/[0-9a-z-]+)(?::([0-9a-z-]+))?`")


def _bad_input_rows() -> list[tuple[str, int, str | None, list[tuple[str, str | None]]]]:
    section = API.split("## Bad input", 1)[1].split("\n\n|", 1)[1]
    rows = []
    for line in ("|" + section).split("\n\n", 1)[0].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        what, answer, code, refs = cells
        rows.append((what, int(answer.split()[0].rstrip(",")), code.strip("`") or None,
                     _REF.findall(refs)))
    return rows


def test_bad_input_table_matches_the_corpus_and_the_error_table() -> None:
    """Each row's status is the expected status of every parity case step it names, and its
    error_code has that status in shared/errors.py."""
    steps = {}
    for case in load_corpus(ROOT / "parity_tests" / "cases"):
        for step in case.steps:
            steps[(case.id, step.name)] = step.expect_status
            if len(case.steps) == 1:
                steps[(case.id, None)] = step.expect_status
    rows = _bad_input_rows()
    assert len(rows) >= 20
    for what, status, code, refs in rows:
        assert refs, f"no parity case named for: {what}"
        for case_id, step in refs:
            key = (case_id, step or None)
            assert key in steps, f"{case_id}:{step} is not in the corpus ({what})"
            assert steps[key] == status, f"{case_id}:{step} expects {steps[key]}, the doc {status}"
        if code is not None:
            assert errors.CATALOGUE[errors.ErrorCode(code)].status == status, what


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", ["README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_every_relative_link_resolves(page: str) -> None:
    path = ROOT / page
    for target in _LINK.findall(path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{page} links to {target}, which is not there"


def test_the_readme_names_the_two_commands_first_and_links_every_reference_page() -> None:
    first_screen = "\n".join(README.splitlines()[:30])
    assert "make parity" in first_screen
    assert "make test" in first_screen
    assert "docs/operations.md" in first_screen
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in README, f"the README does not link docs/{page.name}"
