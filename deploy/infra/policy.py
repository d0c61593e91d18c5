"""The task roles' permissions, derived from the AWS calls the apps make.

Every AWS call of the API is an :class:`~shared.calls.AwsCall` or an
:class:`~shared.calls.AgentCall` built in ``shared/`` (the flows, the metrics flush, the agent
call). :func:`app_calls` finds them in the source (the AST, not a list written by hand); each
becomes an IAM action (the operation's API name from botocore's service model) on the narrowest
resource: the table (or its index) the call names, the agent alias, the color's metric
namespace. :func:`task_role_statements` is what the template grants; :func:`allows` evaluates a
policy document (Allow statements, ``*``/``?`` wildcards, ``StringEquals`` conditions), so the
policy test can check "every call allowed, nothing more" on the document moto stores.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
from botocore import xform_name

from shared.sessions import USER_INDEX

ROOT = Path(__file__).resolve().parents[2]
APP_SOURCES = ("shared", "legacy_flask", "fastapi_app")
# an AwsCall's service -> the botocore client and the IAM prefix
BOTOCORE = {"dynamodb": "dynamodb", "cloudwatch": "cloudwatch",
            "bedrock": "bedrock-agent-runtime"}
IAM_PREFIX = {"dynamodb": "dynamodb", "cloudwatch": "cloudwatch", "bedrock": "bedrock"}
# the Settings field a call's TableName reads -> the template's table resource
TABLE_RESOURCES = {"sessions_table": "SessionsTable", "rate_limit_table": "RateLimitTable"}


@dataclass(frozen=True, order=True)
class AppCall:
    """One AWS call site: service, snake_case operation, the table setting (if any), whether it
    names an index, and where it is."""

    service: str
    operation: str
    table: str | None = None
    index: bool = False
    where: str = ""

    @property
    def action(self) -> str:
        return f"{IAM_PREFIX[self.service]}:{api_name(self.service, self.operation)}"


@cache
def _operations(service: str) -> dict[str, str]:
    model = botocore.session.get_session().get_service_model(BOTOCORE[service])
    return {xform_name(name): name for name in model.operation_names}


def api_name(service: str, operation: str) -> str:
    """``put_item`` -> ``PutItem``; an operation the service does not have is an error."""
    try:
        return _operations(service)[operation]
    except KeyError:
        raise ValueError(f"{service} has no operation {operation}") from None


def _settings_attr(node: ast.expr) -> str | None:
    """``ctx.settings.sessions_table`` / ``settings.rate_limit_table`` -> the field name."""
    if isinstance(node, ast.Attribute) and node.attr in TABLE_RESOURCES:
        return node.attr
    return None


def _calls_in(path: Path) -> list[AppCall]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[AppCall] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if node.func.id == "AgentCall":
            found.append(AppCall("bedrock", "invoke_agent", where=where))
        if node.func.id != "AwsCall":
            continue
        if len(node.args) < 2 or not all(isinstance(a, ast.Constant) for a in node.args[:2]):
            raise ValueError(f"{where}: AwsCall with a service or operation that is not a "
                             "literal; the policy cannot be derived")
        service, operation = (a.value for a in node.args[:2] if isinstance(a, ast.Constant))
        table, index = None, False
        params = node.args[2] if len(node.args) > 2 else None
        if isinstance(params, ast.Name):  # params built first, then passed: find the dict
            params = next((n.value for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)
                           and isinstance(n.target, ast.Name) and n.target.id == params.id
                           and n.value is not None), None)
        if isinstance(params, ast.Dict):
            for key, value in zip(params.keys, params.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "TableName":
                    table = _settings_attr(value)
                    if table is None:
                        raise ValueError(f"{where}: a TableName that is not a settings table")
                if isinstance(key, ast.Constant) and key.value == "IndexName":
                    index = True
        if service == "dynamodb" and table is None:
            raise ValueError(f"{where}: a DynamoDB call whose table cannot be read")
        api_name(str(service), str(operation))
        found.append(AppCall(str(service), str(operation), table, index, where))
    return found


def app_calls(root: Path = ROOT) -> list[AppCall]:
    """Every AWS call site in the apps' source (shared/, legacy_flask/, fastapi_app/)."""
    calls: list[AppCall] = []
    for package in APP_SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            calls.extend(_calls_in(path))
    return sorted(calls)


def needs(calls: Iterable[AppCall]) -> dict[str, set[str]]:
    """Resource key -> IAM actions: ``table:SessionsTable``, ``index:SessionsTable``,
    ``agent-alias``, ``metrics``, ``*`` (actions with no resource-level permission)."""
    out: dict[str, set[str]] = {}
    for call in calls:
        if call.table:
            key = f"{'index' if call.index else 'table'}:{TABLE_RESOURCES[call.table]}"
        elif call.action == "bedrock:InvokeAgent":
            key = "agent-alias"
        elif call.action == "cloudwatch:PutMetricData":
            key = "metrics"
        else:
            key = "*"
        out.setdefault(key, set()).add(call.action)
    return out


def _table_arn(resource: str, index: bool) -> dict[str, Any]:
    suffix = f"/index/{USER_INDEX}" if index else ""
    return {"Fn::Sub": f"${{{resource}.Arn}}{suffix}"}


def task_role_statements(namespace: str, calls: Iterable[AppCall] | None = None
                         ) -> list[dict[str, Any]]:
    """The task role's statements (CloudFormation, with intrinsic functions): each action on
    the narrowest resource the calls allow."""
    statements: list[dict[str, Any]] = []
    for key, actions in sorted(needs(app_calls() if calls is None else calls).items()):
        kind, _, name = key.partition(":")
        sid = {"*": "NoResourceLevel", "agent-alias": "AgentAlias", "metrics": "OwnNamespace"
               }.get(key, f"{name}{kind.capitalize()}")
        statement: dict[str, Any] = {"Sid": sid,
                                     "Effect": "Allow", "Action": sorted(actions)}
        if key.startswith(("table:", "index:")):
            statement["Resource"] = _table_arn(key.split(":", 1)[1], key.startswith("index:"))
        elif key == "agent-alias":
            statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:bedrock:${AWS::Region}:"
                                     "${AWS::AccountId}:agent-alias/${AgentId}/${AgentAliasId}"}
        elif key == "metrics":
            statement["Resource"] = "*"  # PutMetricData has no resource; the namespace is
            statement["Condition"] = {"StringEquals": {"cloudwatch:namespace": namespace}}
        else:
            statement["Resource"] = "*"
        statements.append(statement)
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allows(document: Mapping[str, Any], action: str, resource: str,
           context: Mapping[str, str] | None = None) -> bool:
    """Whether an identity policy allows ``action`` on ``resource`` (explicit Deny wins; only
    ``StringEquals`` conditions are understood, any other condition never matches)."""
    context = context or {}
    allowed = False
    for statement in _as_list(document.get("Statement", [])):
        actions = _as_list(statement.get("Action", []))
        resources = _as_list(statement.get("Resource", []))
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        ok = True
        for operator, tests in statement.get("Condition", {}).items():
            if operator != "StringEquals":
                ok = False
                continue
            for key, wanted in tests.items():
                if context.get(key) not in _as_list(wanted):
                    ok = False
        if not ok:
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = True
    return allowed
