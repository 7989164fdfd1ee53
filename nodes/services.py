"""Node state changes: its token, and what its daemon's connection reports (connect, register,
heartbeat), the at-most-once ledger of its messages, and the sweep's offline and pruning passes."""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import jwt
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone

from aiwm_project import live_events
from aiwm_project.auth import Principal
from aiwm_project.exceptions import NotFoundError
from aiwm_project.services import entity_create, entity_update
from nodes.choices import NodeStatus
from nodes.models import InboundMessage, Node, NodeMetric

# node.register fields (contract name -> model field) copied onto the node when present and well typed.
REGISTER_TEXT_FIELDS = {
    "hostname": "hostname",
    "ipAddress": "ip_address",
    "publicIpAddress": "public_ip_address",
    "os": "os",
    "cpuModel": "cpu_model",
    "daemonVersion": "daemon_version",
    "containerRuntime": "container_runtime",
}
REGISTER_INT_FIELDS = {
    "cpuCores": "cpu_cores",
    "ramTotal": "ram_total",
    "ramFree": "ram_free",
    "diskTotal": "disk_total",
    "uptimeSeconds": "uptime_seconds",
}
# The `typ` claim of the tokens this service issues to nodes (gateway.identity checks it).
NODE_TOKEN_TYPE = "node"
MAX_INT = 2**53  # what a JavaScript daemon can send exactly; beyond is nonsense for these fields


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_INT:
        return None
    return int(value)


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        return None
    return float(value)


def _gpu_devices(reported: Any, known: list[dict[str, Any]] | None = None) -> list[dict[str, Any]] | None:
    """Merge a node's GPU list into the stored one by deviceId; ignore malformed entries."""
    if not isinstance(reported, list):
        return None
    by_id = {d.get("deviceId"): dict(d) for d in (known or []) if isinstance(d, dict)}
    order = list(by_id)
    for item in reported[:64]:
        if not isinstance(item, dict) or not isinstance(item.get("deviceId"), str) or not item["deviceId"]:
            continue
        device = by_id.setdefault(item["deviceId"][:128], {"deviceId": item["deviceId"][:128]})
        if device["deviceId"] not in order:
            order.append(device["deviceId"])
        if isinstance(item.get("model"), str):
            device["model"] = item["model"][:255]
        for key in ("memoryTotal", "memoryFree"):
            number = _int(item.get(key))
            if number is not None:
                device[key] = number
        used = _int(item.get("memoryUsed"))
        if used is not None and isinstance(device.get("memoryTotal"), int):
            device["memoryFree"] = max(device["memoryTotal"] - used, 0)
        utilization = _number(item.get("utilization"), 0, 100)
        if utilization is not None:
            device["utilization"] = utilization
        temperature = _number(item.get("temperature"), -100, 300)
        if temperature is not None:
            device["temperature"] = temperature
    return [by_id[i] for i in order]


def _gpu_changes(reported: Any, known: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The node fields a report of its GPUs changes: the merged gpuDevices and what is derived from
    them (Node.derived_fields); nothing when the report has no GPU list."""
    gpus = _gpu_devices(reported, known)
    return {} if gpus is None else {"gpu_devices": gpus, **Node.derived_fields({"gpu_devices": gpus})}


LOCAL_NODE_ACTOR = "system:local-node"


def local_node_enroll(*, org_id: str, node_id: str, name: str) -> tuple[Node, str]:
    """This machine as a node of `org_id` (`manage.py serve --local-node`, on by default in
    `make run`): the node record, made once and marked `isLocal`, and a fresh token for its agent
    (which revokes the one before: one agent speaks for it)."""
    node = Node.objects.for_org(org_id).filter(node_id=node_id).first()
    if node is None:
        actor = Principal(user_id=LOCAL_NODE_ACTOR, org_id=org_id, roles=("organization.owner",))
        # Hardware figures are the agent's to report (node.register); the record starts empty.
        data = {"node_id": node_id, "name": name, "is_local": True, "cpu_cores": 0}
        node = entity_create(model=Node, data=data, actor=actor)
    token, _ = node_issue_token(node=node, actor_id=LOCAL_NODE_ACTOR)
    return node, token


def node_issue_token(*, node: Node, actor_id: str) -> tuple[str, datetime]:
    """Issue the node's token and revoke any earlier one (only the newest `jti` is accepted).

    A compare-free UPDATE of the node's `token_id`: the last issue wins, which is what rotation means.
    """
    jti = uuid.uuid4().hex
    now = int(time.time())
    expires = now + settings.AIWM_NODE_TOKEN_TTL_DAYS * 86400
    claims = {
        "typ": NODE_TOKEN_TYPE,
        "sub": node.pk,
        "nodeId": node.node_id,
        "orgId": node.owner_org_id,
        "jti": jti,
        "iat": now,
        "exp": expires,
    }
    updated = Node.objects.filter(pk=node.pk, is_deleted=False).update(
        token_id=jti, updated_by=actor_id, updated_at=timezone.now()
    )
    if not updated:
        raise NotFoundError(f"Node with ID {node.pk} not found")
    token = jwt.encode(claims, settings.AIWM_NODE_TOKEN_SECRET, algorithm="HS256")
    return token, datetime.fromtimestamp(expires, tz=UTC)


def node_connected(*, node_pk: str, connection_id: str, remote_address: str = "") -> str | None:
    """The daemon holds a socket now; this connection is the node's one current session.

    Returns the connection it supersedes (the node's connected one before, if another), which the
    gateway then closes: a row lock orders two daemons connecting at once, the last one wins.
    """
    now = timezone.now()
    with transaction.atomic():
        before = (
            Node.objects.select_for_update()
            .filter(pk=node_pk, is_deleted=False)
            .values_list("connection_id", "websocket_connected", "owner_org_id", "node_id")
            .first()
        )
        if before is None:
            return None
        Node.objects.filter(pk=node_pk).update(
            websocket_connected=True,
            connection_id=connection_id,
            connected_at=now,
            remote_address=remote_address[:64],
            updated_at=now,
        )
        _announce(before[2], node_pk, before[3], {"websocket_connected": True})
    previous, connected = before[0], before[1]
    return previous if connected and previous and previous != connection_id else None


def node_disconnected(*, node_pk: str, connection_id: str, org_id: str, node_id: str) -> None:
    """Mark the node disconnected, unless a newer connection already took over (compare-and-swap).
    `org_id` and `node_id`: the connection's identity, for the live event."""
    if Node.objects.filter(pk=node_pk, connection_id=connection_id).update(
        websocket_connected=False, updated_at=timezone.now()
    ):
        _announce(org_id, node_pk, node_id, {"websocket_connected": False})


def node_update(*, instance: Node, data: dict[str, Any], actor: Principal) -> Node:
    """A REST or admin edit of a node (the shared entity update); a status change (maintenance
    and back) is announced to live subscribers."""
    before = instance.status
    with transaction.atomic():
        node = entity_update(instance=instance, data=data, actor=actor)
        if node.status != before:
            _announce(node.owner_org_id, node.pk, node.node_id, {"status": node.status})
    return node


# What a node's live events may carry: never its session or token ids.
ANNOUNCED_FIELDS = frozenset(
    {
        "status",
        "websocket_connected",
        "last_heartbeat",
        "registered_at",
        "cpu_usage",
        "ram_free",
        "gpu_devices",
        "uptime_seconds",
        "active_deployments",
        "daemon_version",
        "hostname",
    }
)


def _announce(org_id: str, node_pk: str, node_id: str, changes: dict[str, Any]) -> None:
    live_events.publish(org_id, "node.status", _event(node_pk, node_id, changes))


def _event(node_pk: str, node_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in changes.items() if k in ANNOUNCED_FIELDS}
    return {"_id": node_pk, "nodeId": node_id, **live_events.fields(shown)}


def announce_heartbeats(nodes: list[Node], changes: list[dict[str, Any]]) -> None:
    """`node.heartbeat` for each node of a telemetry batch (one commit hook for the batch)."""
    live_events.publish_many(
        (
            (node.owner_org_id, _event(node.pk, node.node_id, change))
            for node, change in zip(nodes, changes, strict=True)
        ),
        "node.heartbeat",
    )


def node_register(*, node_pk: str, connection_id: str, data: dict[str, Any]) -> Node:
    """Apply the daemon's registration: hardware and host facts, online, connected.

    One UPDATE of the node row; sends nothing (pending commands are the outbox's business).
    """
    now = timezone.now()
    changes: dict[str, Any] = {
        "status": NodeStatus.ONLINE,
        "websocket_connected": True,
        "connection_id": connection_id,
        "last_heartbeat": now,
        "registered_at": now,
        "updated_at": now,
    }
    for key, field in REGISTER_TEXT_FIELDS.items():
        if isinstance(data.get(key), str):
            changes[field] = data[key][:255]
    for key, field in REGISTER_INT_FIELDS.items():
        number = _int(data.get(key))
        if number is not None:
            changes[field] = number
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node_pk, is_deleted=False)
        if node.status == NodeStatus.MAINTENANCE:
            changes.pop("status")  # an operator's maintenance flag outlives a daemon restart
        changes.update(_gpu_changes(data.get("gpuDevices"), node.gpu_devices))
        Node.objects.filter(pk=node_pk).update(**changes)
        _announce(node.owner_org_id, node.pk, node.node_id, changes)
    for field, value in changes.items():
        setattr(node, field, value)
    return node


def heartbeat_changes(node: Node, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    """What one `telemetry.heartbeat` changes on its node: lastHeartbeat, online (unless an
    operator set maintenance), usage figures, and GPU state merged into gpuDevices by deviceId.

    Pure: the caller holds the node row (locked) and writes the result (nodes.telemetry batches it).
    """
    changes: dict[str, Any] = {"last_heartbeat": at, "updated_at": at}
    if node.status != NodeStatus.MAINTENANCE:
        changes["status"] = NodeStatus.ONLINE
    cpu = _number(data.get("cpuUsage"), 0, 100_000)
    if cpu is not None:
        changes["cpu_usage"] = cpu
    for key, field in (("uptimeSeconds", "uptime_seconds"), ("activeDeployments", "active_deployments")):
        number = _int(data.get(key))
        if number is not None:
            changes[field] = number
    ram_used = _int(data.get("ramUsage"))
    if ram_used is not None and node.ram_total:
        changes["ram_free"] = max(node.ram_total - ram_used, 0)
    changes.update(_gpu_changes(data.get("gpuStatus"), node.gpu_devices))
    return changes


def inbound_message_record(
    *, org_id: str, node_id: str, message_id: str, type: str, session: tuple[str, str] | None = None
) -> bool:
    """Record a node message's id in the at-most-once ledger; False when it was already there.

    Call inside the transaction that applies the message: the ledger row and the effect commit
    together (a failed effect rolls the row back, so a re-send is applied).

    One `INSERT … ON CONFLICT DO NOTHING` (PostgreSQL and SQLite alike) rather than the ORM's
    create in a savepoint that catches the IntegrityError: one statement instead of three, on
    the path of every acknowledged and answered command (BENCHMARKS.md "Execution dispatch").
    A concurrent duplicate waits on the unique index until the first commits, then inserts nothing.

    With `session` (node pk, connection id) the row is written only while that connection is
    the node's current session and the node is not deleted, in the same statement: False then
    also means "not current", which the caller tells apart by reading the node row (the rare case).
    """
    received_at = connection.ops.adapt_datetimefield_value(timezone.now())
    values: list[Any] = [org_id, node_id, message_id, type, received_at]
    if session is not None:
        values += list(session)
    sql = _ledger_sql(connection.vendor, guarded=session is not None)
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.rowcount == 1


@functools.cache
def _ledger_sql(vendor: str, *, guarded: bool) -> str:
    """inbound_message_record's statement, built once per database vendor (it is on the path of
    every node message; `vendor` keys the cache on the quoting it was built with)."""
    meta, node_meta = InboundMessage._meta, Node._meta
    quote = connection.ops.quote_name

    def column(model_meta: Any, name: str) -> str:
        return quote(str(cast(Field, model_meta.get_field(name)).column))

    names = ("owner_org_id", "node_id", "message_id", "type", "received_at")
    columns = [column(meta, name) for name in names]
    unique = ", ".join(columns[:3])
    # A WHERE either way: it keeps SQLite from reading ON CONFLICT as part of the SELECT (its
    # documented parsing ambiguity of INSERT … SELECT … ON CONFLICT).
    guard = " WHERE TRUE"
    if guarded:
        guard = (
            f" WHERE EXISTS (SELECT 1 FROM {quote(node_meta.db_table)} WHERE {column(node_meta, 'id')} = %s"
            f" AND {column(node_meta, 'connection_id')} = %s AND NOT {column(node_meta, 'is_deleted')})"
        )
    return (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)}) SELECT %s, %s, %s, %s, %s{guard}"
        f" ON CONFLICT ({unique}) DO NOTHING"
    )


def nodes_mark_stale_offline(*, now: datetime | None = None) -> int:
    """Nodes with no heartbeat for 3 intervals become offline (the periodic sweep).

    Safe to run in several processes at once: each takes the rows it can lock.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(
        milliseconds=settings.AIWM_HEARTBEAT_INTERVAL_MS * settings.AIWM_NODE_OFFLINE_AFTER_HEARTBEATS
    )
    stale = Node.objects.filter(is_deleted=False, status=NodeStatus.ONLINE, last_heartbeat__lt=cutoff)
    with transaction.atomic():
        # Read under the rows' locks (SKIP LOCKED: a heartbeat flush holding one wins and the node
        # is looked at again next pass), so what is announced is exactly what changed.
        rows = list(stale.select_for_update(skip_locked=True).values_list("pk", "owner_org_id", "node_id"))
        Node.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(status=NodeStatus.OFFLINE, updated_at=now)
        for pk, org_id, node_id in rows:
            _announce(org_id, pk, node_id, {"status": NodeStatus.OFFLINE})
    return len(rows)


def metrics_prune(*, now: datetime | None = None) -> int:
    """Drop metric points older than the retention window."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.AIWM_METRICS_RETENTION_DAYS)
    deleted, _ = NodeMetric.objects.filter(received_at__lt=cutoff).delete()
    return deleted


def inbound_prune(*, now: datetime | None = None) -> int:
    """Forget message ids seen longer ago than AIWM_INBOUND_RETENTION_HOURS.

    The at-most-once ledger only has to outlast a daemon's re-sends of what it sent before a
    reconnect (seconds to minutes); kept for ever it would grow by two rows per step and one per
    other message.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.AIWM_INBOUND_RETENTION_HOURS)
    deleted, _ = InboundMessage.objects.filter(received_at__lt=cutoff).delete()
    return deleted
