"""`make help` lists every target and the variables each one takes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text()


def test_help_lists_every_target_and_variable() -> None:
    targets = re.search(r"^\.PHONY: (.+)$", MAKEFILE, re.M)
    assert targets is not None
    shown = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    for target in targets.group(1).split():
        if target != "help":
            assert f"make {target}" in shown, target
    variables = set(re.findall(r"\$\(if \$\((\w+)\)", MAKEFILE))
    variables |= set(re.findall(r"\$\((\w+_ARGS)\)", MAKEFILE))
    assert {"GENERATED", "SEED", "BLUE_URL", "PROFILE", "CUTOVER_ARGS"} <= variables
    for name in sorted(variables):
        assert f"{name}=" in shown, name
