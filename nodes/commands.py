"""The command outbox, server -> node: store first, deliver after commit, re-send on register.

The row in NodeCommand is the truth about a command; the node bus (`aiwm_project.node_bus`) and
the gateway's transports only deliver, and at most once each. A command whose node is not
connected stays queued and goes out in the next `register.ack`'s `pendingCommands`. Every
transition of a command is a compare-and-swap on its status.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from aiwm_project import live_events, metrics, node_bus
from aiwm_project.datetimes import format_datetime
from aiwm_project.exceptions import NotFoundError, ValidationFailed
from nodes.choices import (
    DELIVERED_COMMAND_STATUSES,
    OPEN_COMMAND_STATUSES,
    UNACKNOWLEDGED_COMMAND_STATUSES,
    CommandPriority,
    CommandStatus,
    CommandType,
)
from nodes.models import Node, NodeCommand

logger = logging.getLogger("aiwm.nodes.commands")

# How many open commands one register.ack carries; the rest follow on the next register.
MAX_PENDING_ON_REGISTER = 100
# A queued command normally leaves on commit; one older than this for a connected node was dropped
# by a crash between commit and delivery.
QUEUED_GRACE_SECONDS = 5
REDELIVER_BATCH = 500


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
    metadata.setdefault("priority", CommandPriority.NORMAL.value)
    if metadata["priority"] not in CommandPriority.values:
        raise ValidationFailed([f"metadata.priority: must be one of: {', '.join(CommandPriority.values)}"])
    # The node's connection, read with the existence check: the delivery after commit then needs
    # no read of its own while the node stays on it (`_hand_over`).
    node = (
        Node.objects.for_org(org_id).filter(node_id=node_id).values_list("connection_id", "websocket_connected").first()
    )
    if node is None:
        raise NotFoundError(f"Node with ID {node_id} not found")
    connection_id = node[0] if node[1] else None
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
    _announce(command)
    # After the caller's transaction commits (at once outside one): a rolled-back command never goes out.
    transaction.on_commit(
        lambda: deliver_command(command_pk=command.pk, command=command, connection_hint=connection_id)
    )
    return command


def deliver_command(*, command_pk: str, command: NodeCommand | None = None, connection_hint: str | None = None) -> bool:
    """Hand a queued command to the transports if its node is connected (queued -> sent, a CAS).

    `command` spares a read when the caller holds the row it just stored; the CAS decides anyway.
    `connection_hint`: the node's connection as the caller last read it (see `_hand_over`).
    """
    command = command or NodeCommand.objects.filter(pk=command_pk).first()
    if command is None or command.status != CommandStatus.QUEUED:
        return False
    sent = _hand_over(command, still={"status": CommandStatus.QUEUED}, connection_hint=connection_hint)
    if sent and "executionId" in command.metadata and command.sent_at is not None:
        # Stored by the transition that made its step ready; handed over now, after that commit.
        metrics.STEP_DISPATCH_LATENCY.observe((command.sent_at - command.created_at).total_seconds())
    return sent


def _hand_over(command: NodeCommand, *, still: dict[str, Any], connection_hint: str | None = None) -> bool:
    """Mark the command sent (a CAS on `still`, the state it was read in) and hand it to the
    transport of its node's current connection. False when the node is not connected (it goes out
    in the next register's pendingCommands) or someone else (a register, another worker) sent it
    meanwhile.

    With `connection_hint` the CAS itself checks that this is still the node's connection, so the
    common case (the node is connected as it was when the command was stored) is one statement;
    otherwise, or when that CAS changed nothing, the node's connection is read first.
    """
    if connection_hint and _mark_sent(command, still, connection_id=connection_hint):
        _publish(command, connection_hint)
        return True
    connection_id = (
        _connected_nodes(command.owner_org_id, command.node_id).values_list("connection_id", flat=True).first()
    )
    if connection_id is None or not _mark_sent(command, still):
        return False
    _publish(command, connection_id)
    return True


def _mark_sent(command: NodeCommand, still: dict[str, Any], *, connection_id: str | None = None) -> bool:
    """The CAS to sent; with `connection_id`, only while that is the node's connected session."""
    rows = NodeCommand.objects.filter(pk=command.pk, **still)
    if connection_id is not None:
        rows = rows.filter(
            Exists(_connected_nodes(command.owner_org_id, command.node_id).filter(connection_id=connection_id))
        )
    now = timezone.now()
    if not rows.update(status=CommandStatus.SENT, sent_at=now, updated_at=now, attempts=F("attempts") + 1):
        return False
    command.status, command.sent_at = CommandStatus.SENT, now
    _announce(command)
    return True


def _announce(command: NodeCommand) -> None:
    """`command.status` to live subscribers, once the transition commits."""
    live_events.publish(
        command.owner_org_id,
        "command.status",
        {
            "_id": command.pk,
            "messageId": command.message_id,
            "nodeId": command.node_id,
            "type": command.type,
            "status": command.status,
            "progress": command.progress,
            "executionId": command.metadata.get("executionId"),
        },
    )


def _publish(command: NodeCommand, connection_id: str) -> None:
    node_bus.publish(command.owner_org_id, command.node_id, command.type, command_envelope(command), connection_id)


def _connected_nodes(org_id: Any, node_id: Any) -> Any:
    """The node while it is connected (values or OuterRef()s, for a subquery)."""
    return Node.objects.for_org(org_id).filter(node_id=node_id, websocket_connected=True)


def commands_pending_for(*, org_id: str, node_id: str) -> list[dict[str, Any]]:
    """Open commands the node has not acknowledged, oldest first, marked sent: for `register.ack`."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            NodeCommand.objects.select_for_update()
            .for_org(org_id)
            .filter(node_id=node_id, status__in=UNACKNOWLEDGED_COMMAND_STATUSES)
            .order_by("created_at")[:MAX_PENDING_ON_REGISTER]
        )
        if rows:
            NodeCommand.objects.filter(pk__in=[r.pk for r in rows]).update(
                status=CommandStatus.SENT, sent_at=now, updated_at=now, attempts=F("attempts") + 1
            )
    for row in rows:
        row.status, row.sent_at = CommandStatus.SENT, now
        _announce(row)
    return [command_envelope(row) for row in rows]


def _message_id(original_message_id: Any) -> str:
    if not isinstance(original_message_id, str) or not original_message_id:
        raise ValidationFailed(["data.originalMessageId: required"])
    return original_message_id


def command_answered(*, org_id: str, node_id: str, original_message_id: Any) -> NodeCommand:
    """The node's command that a `command.ack` or `command.result` answers (by its messageId).

    400 without an id; 404 for an unknown id or another node's command (the same answer, so
    nothing leaks across nodes).
    """
    message_id = _message_id(original_message_id)
    command = NodeCommand.objects.for_org(org_id).filter(node_id=node_id, message_id=message_id).first()
    if command is None:
        raise NotFoundError(f"command {message_id[:64]!r} not found for this node")
    return command


def command_acknowledged(*, org_id: str, node_id: str, original_message_id: Any, message_id: str = "") -> bool:
    """`command.ack`: queued/sent -> acknowledged (a CAS; a late ack after the result changes nothing).
    Returns whether the command changed.

    An ack moves only the command: a step waits for its result, and its timeout covers an ack
    that never comes, so the execution is not touched (nor locked) here. One UPDATE names the
    command by this node's id for it, so nothing is read first; only an ack that changed nothing
    reads the row, to tell an unknown command (404) from a late ack (ignored).
    """
    original = _message_id(original_message_id)
    now = timezone.now()
    changed = (
        NodeCommand.objects.for_org(org_id)
        .filter(node_id=node_id, message_id=original, status__in=UNACKNOWLEDGED_COMMAND_STATUSES)
        .update(status=CommandStatus.ACKNOWLEDGED, acknowledged_at=now, updated_at=now)
    )
    if not changed:
        command = command_answered(org_id=org_id, node_id=node_id, original_message_id=original)
        logger.info("command.ack %s for %s command %s ignored", message_id, command.status, command.message_id)
    else:  # nothing was read: the event names the command by its business id alone
        event = {"messageId": original, "nodeId": node_id, "status": CommandStatus.ACKNOWLEDGED}
        live_events.publish(org_id, "command.status", event)
    return bool(changed)


def _applied(command: NodeCommand, changes: dict[str, Any], changed: int) -> NodeCommand:
    """The command after a CAS: the values it wrote, or (CAS lost) what the row holds now."""
    if changed:
        for field, value in changes.items():
            setattr(command, field, value)
    else:
        command.refresh_from_db()
    return command


def command_apply_result(*, command: NodeCommand, data: dict[str, Any], message_id: str = "") -> bool:
    """`command.result` on the command it answers: success -> succeeded with its result, error ->
    failed with the node's error, anything else is a progress report. Only an open command changes
    (a CAS on status): a result for a finished, expired or cancelled command is logged and changes
    nothing. Returns whether the command changed; `command` then holds the values written.

    The engine calls this (`executions.engine.execution_apply_result`) holding the lock of the
    execution the command belongs to, so the lock order is execution, then command.
    """
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
        changes.update(status=CommandStatus.FAILED, completed_at=now)
        changes["error"] = node_error(data.get("error"))
    changed = NodeCommand.objects.filter(pk=command.pk, status__in=OPEN_COMMAND_STATUSES).update(**changes)
    _applied(command, changes, changed)
    if not changed:
        logger.info("command.result %s for %s command %s ignored", message_id, command.status, command.message_id)
    else:
        _announce(command)
    return bool(changed)


def node_error(error: Any) -> dict[str, Any]:
    """A node's `error` as {code, message, details}, whatever shape it came in (bounded)."""
    if not isinstance(error, dict):
        return {"code": "UNKNOWN", "message": str(error)[:1000] if error is not None else "no error given"}
    code, message = error.get("code"), error.get("message")
    shaped: dict[str, Any] = {
        "code": code[:64] if isinstance(code, str) and code else "UNKNOWN",
        "message": message[:4000] if isinstance(message, str) else "",
    }
    if error.get("details") is not None:
        shaped["details"] = error["details"]
    return shaped


def command_withdraw(*, message_id: str, reason: str, status: str = CommandStatus.CANCELLED) -> NodeCommand | None:
    """Close an open command the server no longer wants (its step was cancelled or timed out).

    The command becomes `status` (cancelled or expired), so a late answer to it changes nothing.
    If it had reached the node (sent or acknowledged), a `command.cancel` naming it follows, through
    the outbox like any command. Returns that cancel command, or None when nothing was sent.
    """
    now = timezone.now()
    with transaction.atomic():
        # Under the command's row lock: a delivery committing meanwhile (a register, the sweep,
        # another process's on_commit) cannot slip between "had it reached the node?" and the close.
        command = (
            NodeCommand.objects.select_for_update()
            .filter(message_id=message_id, status__in=OPEN_COMMAND_STATUSES)
            .first()
        )
        if command is None:
            return None
        NodeCommand.objects.filter(pk=command.pk).update(
            status=status, completed_at=now, updated_at=now, error={"code": status.upper(), "message": reason[:1000]}
        )
        was_status, command.status = command.status, status
        _announce(command)
    if was_status not in DELIVERED_COMMAND_STATUSES:
        return None
    metadata = {key: command.metadata[key] for key in ("executionId", "stepIndex") if key in command.metadata}
    return send_command(
        org_id=command.owner_org_id,
        node_id=command.node_id,
        type=CommandType.COMMAND_CANCEL,
        resource={"type": "command", "id": command.message_id},
        data={"originalMessageId": command.message_id, "reason": reason[:1000]},
        metadata={**metadata, "priority": CommandPriority.HIGH.value},
        actor_id=command.created_by,
    )


def commands_redeliver(*, now: datetime | None = None) -> int:
    """The sweep's outbox pass: deliver what a crash left undelivered, re-send what was not acknowledged.

    - A command still queued for a connected node (its process died between commit and delivery)
      is delivered, by the same compare-and-swap as always, so it goes out once.
    - A command sent but not acknowledged after AIWM_COMMAND_ACK_TIMEOUT_SECONDS is sent again,
      with the same messageId (a daemon that did get it recognises the repeat), up to
      AIWM_COMMAND_MAX_ATTEMPTS times; a CAS on (status, attempts) keeps concurrent sweeps from
      sending it twice in one round.
    """
    now = now or timezone.now()
    # Only commands of connected nodes: those of offline nodes wait for a register, and must not
    # fill the batch ahead of the ones that can go out.
    connected = _connected_nodes(OuterRef("owner_org_id"), OuterRef("node_id"))
    stale_queued = NodeCommand.objects.filter(
        status=CommandStatus.QUEUED, created_at__lte=now - timedelta(seconds=QUEUED_GRACE_SECONDS)
    ).filter(Exists(connected))
    delivered = 0
    for command in stale_queued.order_by("created_at")[:REDELIVER_BATCH]:
        delivered += deliver_command(command_pk=command.pk, command=command)
    unacknowledged = NodeCommand.objects.filter(
        status=CommandStatus.SENT,
        sent_at__lte=now - timedelta(seconds=settings.AIWM_COMMAND_ACK_TIMEOUT_SECONDS),
        attempts__lt=settings.AIWM_COMMAND_MAX_ATTEMPTS,
    )
    for command in unacknowledged.order_by("sent_at")[:REDELIVER_BATCH]:
        delivered += _hand_over(command, still={"status": CommandStatus.SENT, "attempts": command.attempts})
    return delivered
