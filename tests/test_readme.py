"""The README's generated tables match the code they describe."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import errors, settings

pytestmark = pytest.mark.unit
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_error_table_is_current() -> None:
    assert errors.markdown_table() in README, "regenerate with: python -m shared.errors"


def test_settings_table_is_current() -> None:
    assert settings.markdown_table() in README, "regenerate with: python -m shared.settings"
