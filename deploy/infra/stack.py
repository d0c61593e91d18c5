"""``stack plan`` / ``stack apply``: the template through a CloudFormation change set.

``plan`` creates a change set, prints it (every resource added, modified or removed, and
whether it is replaced) and deletes it; ``apply`` creates one, prints it, executes it, waits
(bounded, with progress) and prints the outputs. A change to the weighted rule while it is not
at 100/0 is refused: the stack would reset the traffic a cutover is moving (``--force`` to
override). After an apply the rule carries the role tag the cutover controller looks for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from botocore.exceptions import ClientError

from deploy.infra.template import template_body
from devstack.loadbalancer import ROLE_TAG

Printer = Callable[[str], None]
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
FAILED_SUFFIXES = ("_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED")


class StackError(RuntimeError):
    """A change set or stack operation that did not complete."""


@dataclass
class ChangeSet:
    name: str
    stack: str
    kind: str  # CREATE or UPDATE
    status: str
    reason: str = ""
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """CloudFormation refuses a change set without changes (FAILED, "didn't contain
        changes"); moto lists none for a parameter-only update yet completes it, so a
        completed change set is always executed."""
        return self.status == "FAILED"

    def lines(self) -> list[str]:
        out = [f"change set {self.name} ({self.kind} {self.stack}): {len(self.changes)} "
               "changes" + (f"; {self.reason}" if self.reason and self.empty else "")]
        if not self.changes and not self.empty:
            out.append("  (none listed; parameters changed)")
        for change in self.changes:
            rc = change.get("ResourceChange", {})
            replace = rc.get("Replacement")
            out.append(f"  {rc.get('Action', '?'):<7} {rc.get('LogicalResourceId', '?'):<28} "
                       f"{rc.get('ResourceType', '?')}"
                       + (f"  replacement={replace}" if rc.get("Action") == "Modify" else ""))
        return out

    def touches(self, logical_id: str) -> bool:
        return any(c.get("ResourceChange", {}).get("LogicalResourceId") == logical_id
                   and c.get("ResourceChange", {}).get("Action") in ("Modify", "Remove")
                   for c in self.changes)


def parameter_list(params: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(params.items())]


def stack_status(cfn: Any, name: str) -> str | None:
    try:
        return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])
    except ClientError as exc:  # "Stack with id ... does not exist"
        if "does not exist" in str(exc):
            return None
        raise


def _wait(describe: Callable[[], tuple[str, str]], done: Callable[[str], bool],
          timeout_s: float, what: str, printer: Printer, poll_s: float = 2.0) -> str:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        status, reason = describe()
        if status != last:
            printer(f"  {what}: {status}" + (f" ({reason})" if reason else ""))
            last = status
        if done(status):
            return status
        if time.monotonic() >= deadline:
            raise StackError(f"{what}: still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def create_change_set(cfn: Any, name: str, params: Mapping[str, str], *,
                      body: str | None = None, printer: Printer = print,
                      timeout_s: float = 300) -> ChangeSet:
    status = stack_status(cfn, name)
    kind = "UPDATE" if status and status != "REVIEW_IN_PROGRESS" else "CREATE"
    cs_name = f"chatbot-{uuid.uuid4().hex[:12]}"
    cfn.create_change_set(StackName=name, ChangeSetName=cs_name, ChangeSetType=kind,
                          TemplateBody=body or template_body(), Capabilities=CAPABILITIES,
                          Parameters=parameter_list(params))

    def describe() -> tuple[str, str]:
        got = cfn.describe_change_set(StackName=name, ChangeSetName=cs_name)
        return str(got["Status"]), str(got.get("StatusReason", "") or "")

    final = _wait(describe, lambda s: s in ("CREATE_COMPLETE", "FAILED"), timeout_s,
                  "change set", printer, poll_s=1.0)
    got = cfn.describe_change_set(StackName=name, ChangeSetName=cs_name)
    changes = list(got.get("Changes", []))
    while got.get("NextToken"):
        got = cfn.describe_change_set(StackName=name, ChangeSetName=cs_name,
                                      NextToken=got["NextToken"])
        changes.extend(got.get("Changes", []))
    reason = str(got.get("StatusReason", "") or "")
    if final == "FAILED" and "didn't contain changes" not in reason \
            and "No updates" not in reason:
        raise StackError(f"change set {cs_name} failed: {reason}")
    return ChangeSet(cs_name, name, kind, final, reason, changes)


def delete_change_set(cfn: Any, change_set: ChangeSet) -> None:
    cfn.delete_change_set(StackName=change_set.stack, ChangeSetName=change_set.name)
    if change_set.kind == "CREATE" and stack_status(cfn, change_set.stack) == "REVIEW_IN_PROGRESS":
        cfn.delete_stack(StackName=change_set.stack)


def outputs(cfn: Any, name: str) -> dict[str, str]:
    """The stack's outputs. moto computes none for a stack made or updated through a change set
    (its ChangeSet.apply skips them): then each output that is a plain ``Ref`` of a resource is
    that resource's physical id, as CloudFormation's would be."""
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    found = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
    if found:
        return found
    body = cfn.get_template(StackName=name)["TemplateBody"]
    declared = (yaml.safe_load(body) if isinstance(body, str) else body) or {}
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
                for page in cfn.get_paginator("list_stack_resources").paginate(StackName=name)
                for r in page["StackResourceSummaries"]}
    for key, spec in (declared.get("Outputs") or {}).items():
        ref = spec.get("Value", {}).get("Ref") if isinstance(spec.get("Value"), dict) else None
        if physical.get(ref):
            found[key] = physical[ref]
    return found


def rule_weights(elbv2: Any, rule_arn: str) -> dict[str, int]:
    rule = elbv2.describe_rules(RuleArns=[rule_arn])["Rules"][0]
    return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for a in rule["Actions"]
            if a["Type"] == "forward" for g in a.get("ForwardConfig", {}).get("TargetGroups", [])}


def plan(cfn: Any, name: str, params: Mapping[str, str], *, printer: Printer = print,
         body: str | None = None) -> ChangeSet:
    """Print what an apply would change, and change nothing."""
    change_set = create_change_set(cfn, name, params, body=body, printer=printer)
    for line in change_set.lines():
        printer(line)
    delete_change_set(cfn, change_set)
    return change_set


def apply(cfn: Any, elbv2: Any, name: str, params: Mapping[str, str], *,
          printer: Printer = print, body: str | None = None, force: bool = False,
          timeout_s: float = 1800) -> dict[str, str]:
    """Create or update the stack through a change set; the stack's outputs."""
    change_set = create_change_set(cfn, name, params, body=body, printer=printer)
    for line in change_set.lines():
        printer(line)
    if change_set.empty:
        delete_change_set(cfn, change_set)
        printer("nothing to change")
        return outputs(cfn, name)
    if change_set.kind == "UPDATE" and change_set.touches("CutoverRule") and not force:
        rule = outputs(cfn, name).get("CutoverRuleArn")
        weights = rule_weights(elbv2, rule) if rule else {}
        if sorted(weights.values()) != [0, 100]:
            delete_change_set(cfn, change_set)
            raise StackError(f"the change set modifies the weighted rule, which is at "
                             f"{sorted(weights.values())} (a cutover is moving traffic): the "
                             "update would reset it to 100/0. Finish or abort the cutover, "
                             "or pass --force")
    cfn.execute_change_set(StackName=name, ChangeSetName=change_set.name)

    def describe() -> tuple[str, str]:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        return str(stack["StackStatus"]), str(stack.get("StackStatusReason", "") or "")

    final = _wait(describe, lambda s: s in DONE or s.endswith(FAILED_SUFFIXES)
                  or s == "UPDATE_ROLLBACK_COMPLETE", timeout_s, f"stack {name}", printer)
    if final not in DONE:
        failed = [e for e in cfn.describe_stack_events(StackName=name)["StackEvents"]
                  if str(e.get("ResourceStatus", "")).endswith("FAILED")][:5]
        detail = "; ".join(f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                           for e in failed)
        raise StackError(f"stack {name} ended {final}" + (f": {detail}" if detail else ""))
    found = outputs(cfn, name)
    if found.get("CutoverRuleArn"):
        elbv2.add_tags(ResourceArns=[found["CutoverRuleArn"]], Tags=[ROLE_TAG])
        printer(f"  tagged the weighted rule {ROLE_TAG['Key']}={ROLE_TAG['Value']}")
    for key, value in sorted(found.items()):
        printer(f"  {key} = {value}")
    return found


def devstack_network(ec2: Any, name: str = "chatbot-stack") -> dict[str, str]:
    """On devstack: a VPC and two subnets for the stack's parameters (found by tag, or made)."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [name]}])["Vpcs"]
    if vpcs:
        vpc = vpcs[0]["VpcId"]
        subnets = [s["SubnetId"] for s in ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    else:
        vpc = ec2.create_vpc(CidrBlock="10.88.0.0/16")["Vpc"]["VpcId"]
        ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": name}])
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.88.{i}.0/24",
                                     AvailabilityZone=f"{ec2.meta.region_name}{zone}"
                                     )["Subnet"]["SubnetId"] for i, zone in enumerate("ab", 1)]
    joined = ",".join(sorted(subnets))
    return {"VpcId": vpc, "PublicSubnetIds": joined, "PrivateSubnetIds": joined}


DEVSTACK_PARAMS = {"BlueImage": "chatbot-blue:dev", "GreenImage": "chatbot-green:dev",
                   "AgentId": "DEVAGENT01", "AgentAliasId": "DEVALIAS01",
                   "ApiKeysSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
                                       "chatbot/api-keys"}
