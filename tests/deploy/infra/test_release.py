"""The steady-state rule of a release, on the service shapes ECS returns (moto never moves a
deployment, so a rollout in progress and a circuit-breaker failure are shown here)."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.infra.release import READ_ONLY, ReleaseError, steady

pytestmark = pytest.mark.unit
NEW, OLD = "arn:td/green:8", "arn:td/green:7"


def svc(*deployments: dict[str, Any], td: str = NEW) -> dict[str, Any]:
    return {"taskDefinition": td, "deployments": list(deployments)}


def dep(status: str, rollout: str, running: int = 2, desired: int = 2,
        td: str = NEW) -> dict[str, Any]:
    return {"status": status, "rolloutState": rollout, "runningCount": running,
            "desiredCount": desired, "taskDefinition": td}


def test_steady_only_when_the_new_revision_is_alone_and_complete() -> None:
    assert steady(svc(dep("PRIMARY", "COMPLETED")), NEW)[0]
    assert not steady(svc(dep("PRIMARY", "IN_PROGRESS", running=1),
                          dep("ACTIVE", "COMPLETED", td=OLD)), NEW)[0]
    assert not steady(svc(dep("PRIMARY", "COMPLETED"), dep("ACTIVE", "COMPLETED", td=OLD)),
                      NEW)[0]
    assert not steady(svc(dep("PRIMARY", "COMPLETED", running=1)), NEW)[0]
    assert not steady(svc(dep("PRIMARY", "COMPLETED"), td=OLD), NEW)[0]


def test_a_circuit_breaker_failure_is_a_failure() -> None:
    failed = dep("PRIMARY", "FAILED")
    failed["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
    with pytest.raises(ReleaseError, match="circuit breaker"):
        steady(svc(failed), NEW)


def test_read_only_fields_are_not_sent_back() -> None:
    assert {"taskDefinitionArn", "revision", "status", "registeredAt"} <= READ_ONLY
