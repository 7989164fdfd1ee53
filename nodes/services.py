"""Node state changes driven by the node's own daemon: connect, register, heartbeat, metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

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
MAX_INT = 2**53  # what a JavaScript daemon can send exactly; beyond is nonsense for these fields


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_INT:
        return None
    return int(value)


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        return None
    return float(value)


def reported_time(value: Any, default: datetime) -> datetime:
    """A node's timestamp if it is a sane ISO 8601 time (not far in the future), else `default`."""
    if isinstance(value, str) and len(value) < 64:
        parsed = parse_datetime(value)
        if parsed is not None:
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
            if parsed <= default + timedelta(minutes=5):
                return parsed
    return default


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


def node_connected(*, node_pk: str, connection_id: str) -> None:
    """The daemon holds a socket now; this connection speaks for the node from here on."""
    now = timezone.now()
    Node.objects.filter(pk=node_pk, is_deleted=False).update(
        websocket_connected=True, connection_id=connection_id, updated_at=now
    )


def node_disconnected(*, node_pk: str, connection_id: str) -> None:
    """Mark the node disconnected, unless a newer connection already took over (compare-and-swap)."""
    Node.objects.filter(pk=node_pk, connection_id=connection_id).update(
        websocket_connected=False, updated_at=timezone.now()
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
        gpus = _gpu_devices(data.get("gpuDevices"), node.gpu_devices)
        if gpus is not None:
            changes["gpu_devices"] = gpus
        Node.objects.filter(pk=node_pk).update(**changes)
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
    gpus = _gpu_devices(data.get("gpuStatus"), node.gpu_devices)
    if gpus is not None:
        changes["gpu_devices"] = gpus
    return changes


def nodes_mark_stale_offline(*, now: datetime | None = None) -> int:
    """Nodes with no heartbeat for 3 intervals become offline (the periodic sweep).

    One conditional UPDATE: safe to run in several processes at once.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(
        milliseconds=settings.AIWM_HEARTBEAT_INTERVAL_MS * settings.AIWM_NODE_OFFLINE_AFTER_HEARTBEATS
    )
    return Node.objects.filter(is_deleted=False, status=NodeStatus.ONLINE, last_heartbeat__lt=cutoff).update(
        status=NodeStatus.OFFLINE, updated_at=now
    )


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
