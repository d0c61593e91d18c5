"""The three lock files agree, and the images' lock carries no test or dev tooling."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


def pins(name: str) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", (ROOT / name).read_text(), re.M)
    return {pkg.lower().split("[")[0]: version for pkg, version in found}


def test_image_locks_are_subsets_of_the_dev_lock() -> None:
    full = pins("requirements.lock")
    for name in ("requirements.app.lock", "requirements.devstack.lock"):
        subset = pins(name)
        assert subset, name
        mismatched = {p: (v, full.get(p)) for p, v in subset.items() if full.get(p) != v}
        assert not mismatched, f"{name} disagrees with requirements.lock: {mismatched}"


def test_app_lock_has_runtime_only() -> None:
    app = pins("requirements.app.lock")
    assert {"aioboto3", "boto3", "flask", "fastapi", "gunicorn", "uvicorn"} <= set(app)
    assert not {"pytest", "mypy", "ruff", "moto"} & set(app)
    assert "moto" in pins("requirements.devstack.lock")
