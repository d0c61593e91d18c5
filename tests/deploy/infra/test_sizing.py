"""deploy/infra/sizing.py: the rule, the template that reads it, the doc that quotes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.infra import sizing
from deploy.infra import template as t

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def test_the_rule() -> None:
    assert sizing.task_cpu_units(1) == "1024"
    assert sizing.task_cpu_units(2) == "2048"
    assert [sizing.workers("green", v) for v in (1, 2, 4)] == [1, 2, 4]
    assert [sizing.workers("blue", v) for v in (1, 2, 4)] == [3, 5, 9]
    assert sizing.expected_chats_per_s(2) == 2 * sizing.GREEN_CHATS_PER_S_PER_VCPU
    with pytest.raises(ValueError, match="no such color"):
        sizing.workers("purple")


def test_the_template_reads_it() -> None:
    tpl = t.load()
    for color in t.COLORS:
        props = tpl["Resources"][f"{color.capitalize()}TaskDefinition"]["Properties"]
        assert props["Cpu"] == sizing.task_cpu_units()
        assert props["Memory"] == sizing.task_memory()
        env = {e["Name"]: e["Value"] for e in props["ContainerDefinitions"][0]["Environment"]}
        assert env["WEB_CONCURRENCY"] == str(sizing.workers(color))


def test_the_doc_quotes_it() -> None:
    doc = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    section = doc.split("## Sizing ECS tasks", 1)[1].split("\n## ", 1)[0]
    row = re.search(r"^\| green \| (\d+) vCPU \((\d+) CPU units\), ([\d,]+) MiB \| (\d+) \| "
                    r"([\d.,]+) \|", section, re.M)
    assert row is not None, "docs/performance.md's sizing table has no green row"
    vcpu, units, memory, workers, rate = row.groups()
    assert (int(vcpu), units) == (sizing.TASK_VCPU, sizing.task_cpu_units())
    assert memory.replace(",", "") == sizing.task_memory()
    assert int(workers) == sizing.workers("green")
    assert float(rate.replace(",", "")) == sizing.expected_chats_per_s()
