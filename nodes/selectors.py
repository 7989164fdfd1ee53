"""Reads of a node's records beyond the entity itself: its command outbox and its metric points."""

from __future__ import annotations

from datetime import datetime

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
