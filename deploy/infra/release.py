"""``release COLOR --image URI``: the guide's ``deploy.sh`` as tested Python.

1. register a new revision of the color's task definition: the service's current revision with
   the container's image replaced (nothing else changes);
2. ``update_service`` to it;
3. wait for a steady state, bounded: the service's PRIMARY deployment on the new revision with
   ``rolloutState`` COMPLETED and runningCount == desiredCount; FAILED (the circuit breaker) or
   the bound is a failure;
4. the smoke test: a callable (the parity suite in staging mode against the test listener);
5. on any failure after step 2: ``update_service`` back to the previous revision, and wait.

moto's ECS never moves a deployment: see docs/operations.md for what only AWS shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Printer = Callable[[str], None]
# what describe_task_definition returns that register_task_definition does not take
READ_ONLY = {"taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
             "registeredAt", "registeredBy", "deregisteredAt"}


class ReleaseError(RuntimeError):
    pass


@dataclass
class ReleaseResult:
    color: str
    ok: bool
    new_revision: str | None = None
    previous_revision: str | None = None
    rolled_back: bool = False
    reason: str = ""
    steps: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else (3 if self.rolled_back else 1)


def new_revision(ecs: Any, current_arn: str, container: str, image: str) -> dict[str, Any]:
    """The register_task_definition arguments: the current revision, one image changed."""
    current = ecs.describe_task_definition(taskDefinition=current_arn, include=["TAGS"])
    td = {k: v for k, v in current["taskDefinition"].items() if k not in READ_ONLY}
    names = [c["name"] for c in td["containerDefinitions"]]
    if container not in names:
        raise ReleaseError(f"{current_arn} has no container {container} (has {names})")
    td["containerDefinitions"] = [dict(c, image=image) if c["name"] == container else c
                                  for c in td["containerDefinitions"]]
    if current.get("tags"):
        td["tags"] = current["tags"]
    return td


def steady(service: dict[str, Any], revision: str) -> tuple[bool, str]:
    """(done, state) of a service rolling out ``revision``; raises on a failed rollout."""
    primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"),
                   None)
    if primary is None:
        return False, "no primary deployment"
    rollout = primary.get("rolloutState", "")
    if rollout == "FAILED":
        raise ReleaseError(f"the deployment failed: {primary.get('rolloutStateReason', '')}")
    state = (f"{rollout or '?'} {primary.get('runningCount', 0)}/"
             f"{primary.get('desiredCount', 0)} running, {len(service['deployments'])} "
             "deployments")
    done = (service.get("taskDefinition") == revision and rollout == "COMPLETED"
            and len(service["deployments"]) == 1
            and primary.get("runningCount") == primary.get("desiredCount"))
    return done, state


def wait_steady(ecs: Any, cluster: str, service: str, revision: str, timeout_s: float,
                printer: Printer, poll_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
        done, state = steady(svc, revision)
        if state != last:
            printer(f"  {service}: {state}")
            last = state
        if done:
            return
        if time.monotonic() >= deadline:
            raise ReleaseError(f"{service} not steady after {timeout_s:.0f} s ({state})")
        time.sleep(poll_s)


def release(ecs: Any, *, cluster: str, service: str, container: str, image: str,
            smoke: Callable[[], tuple[bool, str]] | None, timeout_s: float = 900,
            poll_s: float = 5.0, printer: Printer = print) -> ReleaseResult:
    result = ReleaseResult(container, ok=False)

    def say(line: str) -> None:
        result.steps.append(line)
        printer(line)

    svc = ecs.describe_services(cluster=cluster, services=[service])["services"]
    if not svc or svc[0].get("status") != "ACTIVE":
        raise ReleaseError(f"no active service {service} in {cluster}")
    previous = str(svc[0]["taskDefinition"])
    result.previous_revision = previous
    args = new_revision(ecs, previous, container, image)
    revision = ecs.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]
    result.new_revision = revision
    say(f"registered {revision} (image {image}; previous {previous})")
    ecs.update_service(cluster=cluster, service=service, taskDefinition=revision)
    say(f"updated {service}; waiting up to {timeout_s:.0f} s for a steady state")
    try:
        wait_steady(ecs, cluster, service, revision, timeout_s, say, poll_s)
        say(f"{service} is steady on {revision}")
        if smoke is not None:
            ok, detail = smoke()
            say(f"smoke test: {'passed' if ok else 'FAILED'} {detail}")
            if not ok:
                raise ReleaseError(f"smoke test failed: {detail}")
    except ReleaseError as exc:
        result.reason = str(exc)
        say(f"release failed: {exc}; rolling back to {previous}")
        ecs.update_service(cluster=cluster, service=service, taskDefinition=previous)
        try:
            wait_steady(ecs, cluster, service, previous, timeout_s, say, poll_s)
            result.rolled_back = True
            say(f"rolled back: {service} is steady on {previous}")
        except ReleaseError as again:
            result.reason += f"; the rollback did not settle: {again}"
            say(f"ROLLBACK NOT STEADY: {again}")
        return result
    result.ok = True
    return result
