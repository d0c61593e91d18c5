"""The ECS task size and the apps' worker counts: one definition, read by the CloudFormation
template (deploy/infra/template.py) and quoted by docs/performance.md ("Sizing ECS tasks").

The rule comes from ``make bench BENCH_ARGS=--scaling`` (loadtest/scaling.py): green is
CPU-bound once its agent calls overlap, one uvicorn worker uses one core, and one worker alone on
one core served :data:`GREEN_CHATS_PER_S_PER_VCPU` chats/s within the p90 objective. So:

- a task gets :data:`TASK_VCPU` vCPU and runs one green worker per vCPU (``WEB_CONCURRENCY``
  set explicitly: on Fargate ``os.cpu_count()`` can report more CPUs than the task's share);
- blue keeps gunicorn's rule for sync workers, 2 x vCPU + 1 (blocking: its throughput is
  workers / agent latency, not CPU);
- a task is planned for :func:`expected_chats_per_s` and the service scaled out in tasks
  (scaling within a task is measured too: docs/performance.md).
"""

from __future__ import annotations

# Fargate's 1 vCPU size; 2 GiB is the least memory Fargate pairs with 1 vCPU, and green's peak
# RSS in the bench is ~140 MB per worker (blue's 5 sync workers: ~400 MB)
TASK_VCPU = 1
TASK_MEMORY_MIB = 2048
# green's chats/s per vCPU within the objective (200 ms agent latency, p90 <= 350 ms, no error):
# `make bench BENCH_ARGS=--scaling` on a quiet machine, 1 worker alone on 1 core, served 174.3
# chats/s at p90 339 ms with the core 78 % busy (commit 5abd77e); planned a little under it
# (docs/performance.md, "Sizing ECS tasks", quotes this value)
GREEN_CHATS_PER_S_PER_VCPU = 170.0


def task_cpu_units(vcpu: int = TASK_VCPU) -> str:
    """ECS's ``Cpu`` of the task definition: 1,024 units per vCPU."""
    return str(1024 * vcpu)


def task_memory(memory_mib: int = TASK_MEMORY_MIB) -> str:
    return str(memory_mib)


def workers(color: str, vcpu: int = TASK_VCPU) -> int:
    """``WEB_CONCURRENCY`` of a task: green one uvicorn worker per vCPU, blue 2 x vCPU + 1."""
    if color not in ("blue", "green"):
        raise ValueError(f"no such color: {color!r}")
    return vcpu if color == "green" else 2 * vcpu + 1


def expected_chats_per_s(vcpu: int = TASK_VCPU) -> float:
    """What one green task is planned to serve within the objective."""
    return GREEN_CHATS_PER_S_PER_VCPU * vcpu
