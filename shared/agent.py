"""InvokeAgent: the request both colors send and how its event stream becomes one answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.calls import AgentCall
from shared.settings import Settings


@dataclass(frozen=True)
class AgentReply:
    text: str
    chunks: int
    tokens_used: int | None


@dataclass
class CompletionAccumulator:
    """Fed each event of ``response["completion"]`` in order, by either driver."""

    _parts: list[str] = field(default_factory=list)
    _tokens: int | None = None

    def add(self, event: dict[str, Any]) -> None:
        chunk = event.get("chunk")
        if chunk is not None:
            data = chunk.get("bytes", b"")
            self._parts.append(data.decode("utf-8", errors="replace"))
            return
        trace = event.get("trace")
        if trace is not None:
            usage = _usage_of(trace)
            if usage is not None:
                self._tokens = (self._tokens or 0) + usage

    def finish(self) -> AgentReply:
        return AgentReply(text="".join(self._parts), chunks=len(self._parts),
                          tokens_used=self._tokens)


def _usage_of(trace_event: dict[str, Any]) -> int | None:
    trace = trace_event.get("trace", {})
    for part in ("orchestrationTrace", "preProcessingTrace", "postProcessingTrace",
                 "routingClassifierTrace"):
        output = trace.get(part, {}).get("modelInvocationOutput")
        if output:
            usage = output.get("metadata", {}).get("usage")
            if usage:
                return int(usage.get("inputTokens", 0)) + int(usage.get("outputTokens", 0))
    return None


def invoke_call(settings: Settings, session_id: str, text: str) -> AgentCall:
    return AgentCall(
        params={
            "agentId": settings.bedrock_agent_id,
            "agentAliasId": settings.bedrock_agent_alias_id,
            "sessionId": session_id,
            "inputText": text,
            "enableTrace": settings.bedrock_enable_trace,
        },
        deadline_s=settings.agent_deadline_s,
    )
