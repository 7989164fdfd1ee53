"""What running an agent changes: its task counters, and the usage log and counters of the tools it calls.

Both are written by the conversation chat (inference.chat), each in the caller's transaction.
Counters move with `UPDATE ... SET n = n + k` (F expressions) or under the row's lock, never by a
read-modify-save that a concurrent turn could overwrite.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import F, Value
from django.utils import timezone

from agents.models import Agent, Tool
from aiwm_project.datetimes import format_datetime

# A tool's `usage` lives in its row (as the contract has it): only the latest calls are kept, and a
# large result is kept as its first characters, so one row stays small whatever the tool returns.
TOOL_USAGE_KEPT = 200
TOOL_RESULT_KEPT_CHARS = 4096


def agent_task_record(*, org_id: str, agent_id: str, succeeded: bool, response_time: float, latency: float) -> None:
    """Count one task (a conversation turn) on the agent: `totalTasks`, `completedTasks` or
    `failedTasks`, `lastTask`; a completed task moves `averageResponseTime` and `averageLatency`
    (running means over completed tasks, milliseconds). An agent deleted meanwhile is left alone."""
    changes: dict[str, Any] = {"total_tasks": F("total_tasks") + 1, "last_task": timezone.now()}
    if succeeded:
        # Each F() reads the row as it was before this UPDATE (SQL semantics): n is the old count.
        n = F("completed_tasks") + 1
        changes["completed_tasks"] = n
        for field, value in (("average_response_time", response_time), ("average_latency", latency)):
            changes[field] = F(field) + (Value(float(value)) - F(field)) / n
    else:
        changes["failed_tasks"] = F("failed_tasks") + 1
    Agent.objects.for_org(org_id).filter(agent_id=agent_id).update(**changes)


def _kept_result(result: Any) -> Any:
    text = json.dumps(result, default=str)
    return result if len(text) <= TOOL_RESULT_KEPT_CHARS else text[:TOOL_RESULT_KEPT_CHARS]


def tool_call_record(
    *,
    org_id: str,
    tool_id: str,
    agent_id: str,
    arguments: dict[str, Any],
    result: Any,
    latency: float,
    error: str = "",
) -> None:
    """Append a call to the tool's `usage` (the latest TOOL_USAGE_KEPT) and move `totalUsage`,
    `totalFailures` and `averageLatency` (a running mean over every call), under the tool's row lock."""
    tool = Tool.objects.for_org(org_id).select_for_update().filter(tool_id=tool_id).first()
    if tool is None:  # deleted while it was being called
        return
    entry: dict[str, Any] = {
        "timestamp": format_datetime(timezone.now()),
        "agentId": agent_id,
        "arguments": arguments,
        "result": _kept_result(result),
        "latency": round(latency, 3),
        "success": not error,
    }
    if error:
        entry["error"] = error
    tool.usage = [*tool.usage, entry][-TOOL_USAGE_KEPT:]
    tool.total_usage += 1
    tool.total_failures += 1 if error else 0
    tool.average_latency += (latency - tool.average_latency) / tool.total_usage
    tool.save(update_fields=["usage", "total_usage", "total_failures", "average_latency"])
