"""The dispatch benchmark's command (`model.download`), the execution shapes, and a daemon's answers."""

from __future__ import annotations

import uuid
from typing import Any

from bench.harness.messages import iso_now

COMMAND = "model.download"
SHAPES: dict[str, list[list[int]]] = {"chain": [[], [0], [1]], "fanout": [[], [0], [0]]}
STEPS = 3


def command_body(execution_id: str, step: int, message_id: str | None = None) -> dict[str, Any]:
    """A `model.download` command as nodes.commands.command_envelope builds it for a step (the echo's reply)."""
    return {
        "type": COMMAND,
        "messageId": message_id or str(uuid.uuid4()),
        "timestamp": iso_now(),
        "resource": {"type": "model", "id": f"bench-model-{step}"},
        "data": {"modelName": f"bench-model-{step}", "url": "https://example.invalid/bench.gguf"},
        "metadata": {"executionId": execution_id, "stepIndex": step, "timeout": 3600, "priority": "normal"},
    }


def answers(command: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The daemon's `command.ack` and `command.result` success for a command, its metadata echoed."""
    original = command.get("messageId")
    metadata: dict[str, Any] = command["metadata"] if isinstance(command.get("metadata"), dict) else {}
    resource: dict[str, Any] = command["resource"] if isinstance(command.get("resource"), dict) else {}
    ack = {
        "type": "command.ack",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {"originalMessageId": original, "status": "received"},
        "metadata": metadata,
    }
    result = {
        "type": "command.result",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "data": {
            "originalMessageId": original,
            "status": "success",
            "progress": 100,
            "result": {"downloadPath": f"/models/{resource.get('id', 'model')}"},
        },
        "metadata": metadata,
    }
    return ack, result
