"""The node protocol's envelopes as the agent writes them (docs/asyncapi.yaml is the reference)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

NAMESPACE = "/ws/node"
COMMANDS = ("model.download", "deployment.start", "deployment.stop", "command.cancel")
# The ids of a command's ack and result are derived from the command's own id: a repeat of either
# (after a reconnect, or a command the control plane re-sent) carries the same id, which the
# control plane applies once.
_DERIVED = uuid.UUID("6b1e7a5c-2f1d-4c2e-9d0e-5a7c3b9e8f10")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(type_: str, data: dict[str, Any], *, message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "messageId": message_id or str(uuid.uuid4()), "timestamp": now_iso(), "data": data, **extra}


def derived_id(original: str, kind: str) -> str:
    return str(uuid.uuid5(_DERIVED, f"{original}/{kind}"))


def _metadata(command: dict[str, Any]) -> dict[str, Any]:
    metadata = command.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    return {key: metadata[key] for key in ("executionId", "stepIndex") if key in metadata}


def command_ack(command: dict[str, Any]) -> dict[str, Any]:
    original = command["messageId"]
    data = {"originalMessageId": original, "status": "received", "receivedAt": now_iso()}
    return envelope("command.ack", data, message_id=derived_id(original, "ack"), metadata=_metadata(command))


def command_result(command: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """`outcome`: {"status": "success", "result": {...}} or {"status": "error", "error": {...}}."""
    original = command["messageId"]
    data = {"originalMessageId": original, **outcome}
    return envelope("command.result", data, message_id=derived_id(original, "result"), metadata=_metadata(command))


def command_progress(command: dict[str, Any], progress: float, **result: Any) -> dict[str, Any]:
    """A progress report (best effort, its own id: each one supersedes the one before)."""
    data = {"originalMessageId": command["messageId"], "status": "progress", "progress": round(progress, 1)}
    if result:
        data["result"] = result
    return envelope("command.result", data, metadata=_metadata(command))


def is_command(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("type") in COMMANDS
        and isinstance(body.get("messageId"), str)
        and bool(body["messageId"])
    )
