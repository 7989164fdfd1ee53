"""The node protocol, transport-neutral: what each node -> server message does, once.

Socket.IO and the plain-WebSocket consumer are thin adapters: they authenticate, then hand
every message to `handle_message` and send back what it returns. Nothing a node sends can
change another node's state or crash the server: every frame is validated, sized, rate
limited and deduplicated here, and a bad one gets an `error` reply and changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import ParseError

from aiwm_project import metrics, node_bus
from aiwm_project.correlation import node_context
from aiwm_project.datetimes import believable_time, iso_now
from aiwm_project.db import db_sync_to_async
from aiwm_project.exceptions import ServiceError
from aiwm_project.parsers import check_json_value
from deployments.services import deployment_append_logs, deployment_apply_node_status, deployments_reconcile_node
from executions.engine import execution_apply_result
from gateway import telemetry
from gateway.identity import NodeIdentity
from nodes import commands, services
from nodes.models import Node

logger = logging.getLogger("aiwm.gateway.protocol")
MAX_MESSAGE_ID = 128
MAX_TYPE = 64


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, *, close: bool = False):
        super().__init__(message)
        self.code, self.message, self.close = code, message, close


@dataclass
class Connection:
    """One daemon connection: who it speaks for, and its flood/abuse budget."""

    identity: NodeIdentity
    connection_id: str
    tokens: float = 0.0
    last_refill: float = field(default_factory=time.monotonic)
    errors: int = 0
    # Telemetry of this connection sits in the write-behind buffer (see handle_message).
    telemetry_pending: bool = False
    # Apply its messages only while it is its node's current session (the transports set it;
    # a bare Connection, as tests of the services build, skips the check).
    current_only: bool = False
    # Why this session is over while its socket is still open ("SUPERSEDED", "NODE_DELETED").
    ended: str | None = None
    # The peer's address as the server saw it (behind a trusted proxy: X-Forwarded-For's).
    remote_address: str = ""

    def __post_init__(self) -> None:
        self.tokens = float(settings.AIWM_NODE_RATE_BURST)

    def take_token(self) -> bool:
        now = time.monotonic()
        rate, burst = settings.AIWM_NODE_RATE_PER_SECOND, settings.AIWM_NODE_RATE_BURST
        self.tokens = min(burst, self.tokens + (now - self.last_refill) * rate)
        self.last_refill = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def envelope(type: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": type, "messageId": str(uuid.uuid4()), "timestamp": iso_now()}
    message.update(extra)
    if data is not None:
        message["data"] = data
    return message


def peer_address(scope: dict[str, Any]) -> str:
    """The client address of an ASGI scope ("" when the server gives none)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def connection_ack(conn: Connection) -> dict[str, Any]:
    return envelope(
        "connection.ack",
        status="success",
        nodeId=conn.identity.node_id,
        controllerId=settings.AIWM_CONTROLLER_ID,
        serverVersion=settings.AIWM_SERVER_VERSION,
    )


def error_reply(code: str, message: str, original: Any = None) -> dict[str, Any]:
    data: dict[str, Any] = {"code": code, "message": message}
    if isinstance(original, str):
        data["originalMessageId"] = original[:MAX_MESSAGE_ID]
    return envelope("error", data)


Reply = tuple[str, dict[str, Any]]


# --- one current session per node ---
#
# A node has one current session: the connection whose id its row holds (`Node.connection_id`,
# set by `nodes.services.node_connected` under a row lock, so the last to connect wins in every
# process alike). A newer authenticated connection supersedes the older one: the old one is sent
# an `error` SUPERSEDED and closed, wherever it is (`node_bus.close_connection`), and commands go
# to the current connection only (`node_bus.publish(..., connection_id)`). Anything a superseded
# session still sends is refused the same way, by two checks:
# - a flag on the connection (no query), set at once when the superseding connection reached
#   this process, or when the close arrives; buffered telemetry relies on it (and on the close);
# - for every applied message of a transport's connection (`current_only`), a check of the node
#   row inside the transaction that applies it (folded into the ledger's INSERT, one statement):
#   a supersede the flag has not seen yet (another process, a lost close) or a deleted node
#   refuses the message before it changes anything.

SUPERSEDED_MESSAGE = "another connection authenticated for this node; this one is closed"
NODE_DELETED_MESSAGE = "this node was deleted; the connection is closed"
_live: dict[str, Connection] = {}  # connection id -> the authenticated connections of this process


async def session_open(conn: Connection) -> None:
    """Make `conn` its node's current session and close the one it supersedes."""
    _live[conn.connection_id] = conn
    metrics.CONNECTED_SESSIONS.set(len(_live))
    superseded = await db_sync_to_async(services.node_connected)(
        node_pk=conn.identity.node_pk, connection_id=conn.connection_id, remote_address=conn.remote_address
    )
    if superseded is None:
        return
    logger.info("node %s: connection %s supersedes %s", conn.identity.node_id, conn.connection_id, superseded)
    old = _live.get(superseded)
    if old is not None:
        old.ended = "SUPERSEDED"
    # Not in the ORM's worker thread: the close may run this process's disconnect handler, which
    # needs that thread itself. Sync (through Redis it blocks), so in a thread of its own.
    await sync_to_async(node_bus.close_connection, thread_sensitive=False)(
        superseded, error_reply("SUPERSEDED", SUPERSEDED_MESSAGE)
    )


async def session_close(conn: Connection) -> None:
    """The socket is gone: forget it, and mark the node disconnected if it was current."""
    _live.pop(conn.connection_id, None)
    metrics.CONNECTED_SESSIONS.set(len(_live))
    identity = conn.identity
    await db_sync_to_async(services.node_disconnected)(
        node_pk=identity.node_pk, connection_id=conn.connection_id, org_id=identity.org_id, node_id=identity.node_id
    )


def _check_current(conn: Connection) -> None:
    """Refuse (and close) a session that is no longer its node's current one."""
    if conn.ended is None:
        row = Node.objects.filter(pk=conn.identity.node_pk).values_list("connection_id", "is_deleted").first()
        if row is None or row[1]:
            conn.ended = "NODE_DELETED"
        elif row[0] != conn.connection_id:
            conn.ended = "SUPERSEDED"
    if conn.ended == "NODE_DELETED":
        raise ProtocolError("NODE_DELETED", NODE_DELETED_MESSAGE, close=True)
    if conn.ended is not None:
        raise ProtocolError("SUPERSEDED", SUPERSEDED_MESSAGE, close=True)


# --- handlers: run in a worker thread (they use the ORM); each returns its replies ---


def _deployment_id(data: dict[str, Any]) -> str:
    """The deployment a report names (whether it is this node's, the deployment services check)."""
    deployment_id = data.get("deploymentId")
    if not isinstance(deployment_id, str) or not deployment_id:
        raise ProtocolError("INVALID_PAYLOAD", "data.deploymentId is required")
    return deployment_id


def on_register(conn: Connection, message: dict[str, Any]) -> list[Reply]:
    node = services.node_register(node_pk=conn.identity.node_pk, connection_id=conn.connection_id, data=message["data"])
    if isinstance(message["data"].get("deployments"), list):
        # A daemon that says what it runs (AIWM's agent) is reconciled with the records; one that
        # does not say (the contract's daemons) leaves them as they are.
        deployments_reconcile_node(
            org_id=conn.identity.org_id, node_id=conn.identity.node_id, reported=message["data"]["deployments"]
        )
    pending = commands.commands_pending_for(org_id=conn.identity.org_id, node_id=conn.identity.node_id)
    ack = {
        "status": "success",
        "nodeId": node.node_id,
        "registeredAt": iso_now(),
        "controllerInfo": {
            "controllerId": settings.AIWM_CONTROLLER_ID,
            "heartbeatInterval": settings.AIWM_HEARTBEAT_INTERVAL_MS,
            "metricsInterval": settings.AIWM_METRICS_INTERVAL_MS,
            "timezone": settings.TIME_ZONE,
        },
        "pendingCommands": pending,
    }
    return [("register.ack", envelope("register.ack", ack))]


# Telemetry is not applied here but handed to the write-behind buffer (gateway.telemetry), in the
# event loop itself: no thread hop, no transaction per message.


def buffer_heartbeat(conn: Connection, message: dict[str, Any]) -> None:
    telemetry.buffer.add_heartbeat(conn.identity.node_pk, message["data"])


def buffer_metrics(conn: Connection, message: dict[str, Any]) -> None:
    # The point is stored at its timestamp: one that is sent but not believable (unparseable, out
    # of range, before 2000 or ahead of our clock) is refused here, before it reaches the buffer.
    timestamp = message.get("timestamp")
    if timestamp is not None and believable_time(timestamp, timezone.now()) is None:
        raise ProtocolError(
            "INVALID_PAYLOAD",
            "timestamp must be an ISO 8601 date-time from 2000 to at most 5 minutes ahead of the server's clock",
        )
    # At most once: the point's messageId is unique per node (the flush skips a repeat).
    telemetry.buffer.add_metric(
        org_id=conn.identity.org_id,
        node_id=conn.identity.node_id,
        message_id=message["messageId"],
        data=message["data"],
        timestamp=message.get("timestamp"),
    )


def on_command_ack(conn: Connection, message: dict[str, Any]) -> list[Reply]:
    commands.command_acknowledged(
        org_id=conn.identity.org_id,
        node_id=conn.identity.node_id,
        original_message_id=message["data"].get("originalMessageId"),
        message_id=message["messageId"],
    )
    return []


def on_command_result(conn: Connection, message: dict[str, Any]) -> list[Reply]:
    # The engine applies it to the command and to the step waiting for it (lock order: execution, command).
    execution_apply_result(
        org_id=conn.identity.org_id,
        node_id=conn.identity.node_id,
        message_id=message["messageId"],
        data=message["data"],
    )
    return []


def on_deployment_status(conn: Connection, message: dict[str, Any]) -> list[Reply]:
    data = message["data"]
    deployment_apply_node_status(
        org_id=conn.identity.org_id,
        node_id=conn.identity.node_id,
        deployment_id=_deployment_id(data),
        data=data,
    )
    return []


def on_deployment_logs(conn: Connection, message: dict[str, Any]) -> list[Reply]:
    data = message["data"]
    deployment_append_logs(
        org_id=conn.identity.org_id,
        node_id=conn.identity.node_id,
        deployment_id=_deployment_id(data),
        logs=data.get("logs"),
    )
    return []


HANDLERS: dict[str, Callable[[Connection, dict[str, Any]], list[Reply]]] = {
    "node.register": on_register,
    "command.ack": on_command_ack,
    "command.result": on_command_result,
    "deployment.status": on_deployment_status,
    "deployment.logs": on_deployment_logs,
}
BUFFERED: dict[str, Callable[[Connection, dict[str, Any]], None]] = {
    "telemetry.heartbeat": buffer_heartbeat,
    "telemetry.metrics": buffer_metrics,
}


def validate_envelope(event: str, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ProtocolError("INVALID_ENVELOPE", "a message must be a JSON object {type, messageId, timestamp, data}")
    type_ = message.get("type", event)
    if not isinstance(type_, str) or not type_ or len(type_) > MAX_TYPE:
        raise ProtocolError("INVALID_ENVELOPE", "type must be a non-empty string")
    if event and type_ != event:
        raise ProtocolError("INVALID_ENVELOPE", f"type {type_[:MAX_TYPE]!r} does not match the event {event!r}")
    if type_ not in HANDLERS and type_ not in BUFFERED:
        raise ProtocolError("UNKNOWN_TYPE", f"unknown message type {type_!r}")
    message_id = message.get("messageId")
    if not isinstance(message_id, str) or not message_id or len(message_id) > MAX_MESSAGE_ID:
        raise ProtocolError("INVALID_ENVELOPE", f"messageId must be a string of 1-{MAX_MESSAGE_ID} characters")
    data = message.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError("INVALID_ENVELOPE", "data must be an object")
    metadata = message.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProtocolError("INVALID_ENVELOPE", "metadata must be an object")
    return {**message, "type": type_, "data": data}


def check_own_node(conn: Connection, message: dict[str, Any]) -> None:
    """A connection speaks only for its own node: a `nodeId` it names (in the envelope or its
    data) must be that node's nodeId or _id; anything else is refused before it changes anything."""
    for claimed in (message.get("nodeId"), message["data"].get("nodeId")):
        if claimed is not None and claimed not in (conn.identity.node_id, conn.identity.node_pk):
            raise ProtocolError("FORBIDDEN", f"this connection speaks only for node {conn.identity.node_id!r}")


def encoded_size(message: Any) -> int:
    """The size of a message a transport decoded itself (Socket.IO), held to the rules the plain
    WebSocket's strict parser applies: bounded depth, no NUL, finite numbers, JSON types only
    (python-socketio accepts NaN, any depth and binary attachments; the database does not)."""
    try:
        check_json_value(message, settings.AIWM_MAX_JSON_DEPTH)
    except ParseError as exc:
        raise ProtocolError("INVALID_PAYLOAD", str(exc.detail)) from exc
    try:
        return len(json.dumps(message, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ProtocolError("INVALID_PAYLOAD", "only JSON values with finite numbers are accepted") from exc


def apply_message(conn: Connection, message: dict[str, Any]) -> list[Reply]:
    """Apply one validated message at most once (sync; uses the ORM); for a transport's
    connection (`current_only`), only while it is still its node's current session."""
    handler = HANDLERS[message["type"]]
    try:
        with transaction.atomic():
            if conn.ended is not None:
                _check_current(conn)  # known to be over: refused without a query
            # The ledger row and the effect commit together: a duplicate messageId finds the
            # row and is skipped; a failed effect rolls the row back so a retry is applied. For a
            # transport's connection the row is written only while it is the node's current
            # session (the same statement checks it).
            if not services.inbound_message_record(
                org_id=conn.identity.org_id,
                node_id=conn.identity.node_id,
                message_id=message["messageId"],
                type=message["type"],
                session=(conn.identity.node_pk, conn.connection_id) if conn.current_only else None,
            ):
                if conn.current_only:
                    _check_current(conn)  # not written: not the current session (raises), or a duplicate
                logger.info("duplicate %s %s from %s ignored", message["type"], message["messageId"], conn.identity)
                return []
            return handler(conn, message)
    except ProtocolError:
        raise
    except ServiceError as exc:
        raise ProtocolError("REJECTED", " ".join([exc.message, *exc.errors])) from exc


async def handle_message(
    conn: Connection, event: str, message: Any, raw_size: int | None = None
) -> tuple[list[Reply], bool]:
    """Validate, rate-limit and apply one message. Returns (replies, close_connection)."""
    with node_context(conn.identity.node_id):  # every log line this message causes names its node
        return await _handle_message(conn, event, message, raw_size)


async def _handle_message(conn: Connection, event: str, message: Any, raw_size: int | None) -> tuple[list[Reply], bool]:
    original = message.get("messageId") if isinstance(message, dict) else None
    if conn.telemetry_pending and event not in BUFFERED:
        # A connection's messages take effect in the order it sent them: its buffered telemetry
        # is written before anything else it sent later is applied or answered.
        conn.telemetry_pending = False
        await telemetry.flush_now()
    try:
        if conn.ended is not None:
            _check_current(conn)  # refused at once, before anything else
        if not conn.take_token():
            raise ProtocolError("RATE_LIMITED", "too many messages; slow down")
        size = raw_size if raw_size is not None else encoded_size(message)
        if size > settings.AIWM_NODE_MAX_MESSAGE_BYTES:
            raise ProtocolError("PAYLOAD_TOO_LARGE", f"message over {settings.AIWM_NODE_MAX_MESSAGE_BYTES} bytes")
        validated = validate_envelope(event, message)
        check_own_node(conn, validated)
        buffered = BUFFERED.get(validated["type"])
        if buffered is not None:
            buffered(conn, validated)
            conn.telemetry_pending = True
            telemetry.ensure_flusher()
            return [], False
        return await db_sync_to_async(apply_message)(conn, validated), False
    except ProtocolError as exc:
        conn.errors += 1
        logger.warning("node %s: %s %s", conn.identity.node_id, exc.code, exc.message)
        close = exc.close or conn.errors >= settings.AIWM_NODE_MAX_ERRORS
        return [("error", error_reply(exc.code, exc.message, original))], close
    except Exception:  # never let one message take the connection's task (or the server) down
        conn.errors += 1
        logger.exception("node %s: message %r failed", conn.identity.node_id, original)
        return [("error", error_reply("INTERNAL_ERROR", "the message could not be applied", original))], False
