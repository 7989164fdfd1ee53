"""Reads of a node's records beyond the entity itself: its command outbox, its metric points, its GPUs as rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from aiwm_project.selectors import in_time_range
from nodes.models import Node, NodeCommand, NodeMetric


def node_commands(*, node: Node, status: str | None = None) -> QuerySet[NodeCommand]:
    """The node's commands, newest first; only those in `status` when given."""
    commands = NodeCommand.objects.for_org(node.owner_org_id).filter(node_id=node.node_id)
    if status:
        commands = commands.filter(status=status)
    return commands.order_by("-created_at", "-id")


def node_metrics(*, node: Node, start: datetime | None, end: datetime | None) -> QuerySet[NodeMetric]:
    """The node's metric points with a timestamp in [start, end] (either end open when None), oldest first."""
    points = NodeMetric.objects.for_org(node.owner_org_id).filter(node_id=node.node_id)
    return in_time_range(points, "timestamp", start, end).order_by("timestamp", "id")


def gpu_rows(devices: Any) -> list[dict[str, Any]]:
    """A node's `gpuDevices` as table rows: memory used/total (MB) and its share, utilization, temperature."""
    rows = []
    for device in devices if isinstance(devices, list) else []:
        if not isinstance(device, dict):
            continue
        total, free = device.get("memoryTotal"), device.get("memoryFree")
        used = max(total - free, 0) if isinstance(total, int | float) and isinstance(free, int | float) else None
        rows.append(
            {
                "device_id": str(device.get("deviceId", "?")),
                "model": str(device.get("model", "")),
                "memory_total": total,
                "memory_used": used,
                "memory_share": round(100 * used / total) if used is not None and total else None,
                "utilization": _tidy(device.get("utilization")),
                "temperature": _tidy(device.get("temperature")),
            }
        )
    return rows


def _tidy(value: Any) -> Any:
    """81.0 as 81 (as the browser writes the same number from the live events)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
