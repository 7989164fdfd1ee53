"""Building blocks of the execution tests: step definitions, runs built from them, and state set directly."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from executions.models import Execution
from nodes.choices import CommandStatus
from nodes.models import NodeCommand
from tests.support.factories import ExecutionFactory
from tests.support.personas import ORG_A

URL = "/api/executions"
NODE = "node-gpu-01"


def step(index: int, depends_on: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    """A step downloading model-<index>, after the steps it depends on."""
    return {
        "index": index,
        "name": f"Step {index}",
        "command": {
            "type": "model.download",
            "resource": {"type": "model", "id": f"model-{index}"},
            "data": {"repository": f"hf/model-{index}"},
        },
        "dependsOn": depends_on or [],
        **extra,
    }


def chain(n: int = 3, **extra: Any) -> Execution:
    """A pending run of n steps, each after the one before."""
    return ExecutionFactory.create(steps=[step(i, [i - 1] if i else []) for i in range(n)], **extra)


def fresh(execution: Execution) -> Execution:
    return Execution.objects.get(pk=execution.pk)


def mark_sent(execution: Execution, index: int) -> None:
    """As if the node had been connected: the step's command reached it."""
    NodeCommand.objects.filter(message_id=fresh(execution).steps[index]["sentMessageId"]).update(
        status=CommandStatus.SENT, sent_at=timezone.now()
    )


def cancels_for(message_id: str) -> list[NodeCommand]:
    return list(NodeCommand.objects.filter(type="command.cancel", data__originalMessageId=message_id))


def set_status(execution_id: str, status: str, org_id: str = ORG_A) -> None:
    """Puts an execution in a state directly, for tests of what the API allows in that state."""
    Execution.objects.filter(owner_org_id=org_id, execution_id=execution_id).update(status=status)
