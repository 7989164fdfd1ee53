"""The command outbox, server -> node: store first, deliver after commit, re-send on register.

The row in NodeCommand is the truth about a command; Socket.IO and Channels only deliver, and
at most once each. A command whose node is not connected stays queued and goes out in the
next `register.ack`'s `pendingCommands`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from aiwm_project.api.errors import format_datetime
from aiwm_project.exceptions import NotFoundError, ValidationFailed
from nodes import delivery
from nodes.choices import OPEN_COMMAND_STATUSES, CommandStatus, CommandType
from nodes.models import Node, NodeCommand

# How many open commands one register.ack carries; the rest follow on the next register.
MAX_PENDING_ON_REGISTER = 100
PRIORITIES = ("low", "normal", "high")


def command_envelope(command: NodeCommand) -> dict[str, Any]:
    """The contract's server -> node message: {type, messageId, timestamp, resource, data, metadata}."""
    return {
        "type": command.type,
        "messageId": command.message_id,
        "timestamp": format_datetime(command.sent_at or command.created_at),
        "resource": command.resource,
        "data": command.data,
        "metadata": command.metadata,
    }


def send_command(
    *,
    org_id: str,
    node_id: str,
    type: str,
    resource: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    actor_id: str = "",
) -> NodeCommand:
    """Store a command for a node (queued) and, once the transaction commits, deliver it if the
    node is connected, to whichever process holds its socket."""
    if type not in CommandType.values:
        raise ValidationFailed([f"type: {type!r} is not one of: {', '.join(CommandType.values)}"])
    metadata = dict(metadata or {})
    metadata.setdefault("priority", "normal")
    if metadata["priority"] not in PRIORITIES:
        raise ValidationFailed([f"metadata.priority: must be one of: {', '.join(PRIORITIES)}"])
    with transaction.atomic():
        if not Node.objects.for_org(org_id).filter(node_id=node_id).exists():
            raise NotFoundError(f"Node with ID {node_id} not found")
        command = NodeCommand.objects.create(
            owner_org_id=org_id,
            node_id=node_id,
            message_id=str(uuid.uuid4()),
            type=type,
            resource=resource or {},
            data=data or {},
            metadata=metadata,
            created_by=actor_id,
        )
        transaction.on_commit(lambda: deliver_command(command_pk=command.pk))
    return command


def deliver_command(*, command_pk: str) -> bool:
    """Hand a queued command to the transports if its node is connected (queued -> sent, a CAS)."""
    command = NodeCommand.objects.filter(pk=command_pk).first()
    if command is None or command.status != CommandStatus.QUEUED:
        return False
    connected = Node.objects.for_org(command.owner_org_id).filter(node_id=command.node_id, websocket_connected=True)
    if not connected.exists():
        return False
    now = timezone.now()
    marked = NodeCommand.objects.filter(pk=command.pk, status=CommandStatus.QUEUED).update(
        status=CommandStatus.SENT, sent_at=now, updated_at=now, attempts=F("attempts") + 1
    )
    if not marked:
        return False  # someone else (a register, another worker) sent it meanwhile
    command.sent_at = now
    delivery.deliver_to_node(command.owner_org_id, command.node_id, command.type, command_envelope(command))
    return True


def commands_pending_for(*, org_id: str, node_id: str) -> list[dict[str, Any]]:
    """Open commands the node has not acknowledged, oldest first, marked sent: for `register.ack`."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            NodeCommand.objects.select_for_update()
            .filter(owner_org_id=org_id, node_id=node_id, status__in=[CommandStatus.QUEUED, CommandStatus.SENT])
            .order_by("created_at")[:MAX_PENDING_ON_REGISTER]
        )
        if rows:
            NodeCommand.objects.filter(pk__in=[r.pk for r in rows]).update(
                status=CommandStatus.SENT, sent_at=now, updated_at=now, attempts=F("attempts") + 1
            )
    for row in rows:
        row.sent_at = now
    return [command_envelope(row) for row in rows]


def _open_command(org_id: str, node_id: str, message_id: Any) -> NodeCommand:
    if not isinstance(message_id, str) or not message_id:
        raise ValidationFailed(["data.originalMessageId: required"])
    command = NodeCommand.objects.filter(owner_org_id=org_id, node_id=node_id, message_id=message_id).first()
    if command is None:
        # Unknown, or another node's command: the same answer, so nothing leaks across nodes.
        raise NotFoundError(f"command {message_id[:64]!r} not found for this node")
    return command


def command_acknowledged(*, org_id: str, node_id: str, original_message_id: Any) -> NodeCommand:
    """`command.ack`: queued/sent -> acknowledged (a CAS; a late ack after the result changes nothing)."""
    command = _open_command(org_id, node_id, original_message_id)
    now = timezone.now()
    NodeCommand.objects.filter(pk=command.pk, status__in=[CommandStatus.QUEUED, CommandStatus.SENT]).update(
        status=CommandStatus.ACKNOWLEDGED, acknowledged_at=now, updated_at=now
    )
    command.refresh_from_db()
    return command


def command_result_received(
    *, org_id: str, node_id: str, original_message_id: Any, data: dict[str, Any]
) -> NodeCommand:
    """`command.result`: success -> succeeded with its result, error -> failed with the node's
    error, anything else is a progress report. Only an open command changes (a CAS on status)."""
    command = _open_command(org_id, node_id, original_message_id)
    now = timezone.now()
    outcome = data.get("status")
    progress = data.get("progress")
    changes: dict[str, Any] = {"updated_at": now}
    if isinstance(progress, int | float) and not isinstance(progress, bool) and 0 <= progress <= 100:
        changes["progress"] = float(progress)
    if outcome == "success":
        changes.update(status=CommandStatus.SUCCEEDED, completed_at=now, progress=100.0)
        changes["result"] = data.get("result") if isinstance(data.get("result"), dict | list) else None
    elif outcome == "error":
        error = data.get("error")
        changes.update(status=CommandStatus.FAILED, completed_at=now)
        changes["error"] = error if isinstance(error, dict) else {"code": "UNKNOWN", "message": str(error)[:1000]}
    open_statuses = list(OPEN_COMMAND_STATUSES)
    NodeCommand.objects.filter(pk=command.pk, status__in=open_statuses).update(**changes)
    command.refresh_from_db()
    return command
