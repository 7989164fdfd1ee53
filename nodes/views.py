"""Nodes REST endpoints (thin: queryset scoping, filters and writes live in the shared base)."""

from __future__ import annotations

from aiwm_project.api.viewsets import EntityViewSet
from nodes.models import Node
from nodes.serializers import NodeSerializer


class NodeViewSet(EntityViewSet):
    model = Node
    serializer_class = NodeSerializer
    filter_fields = {"status": "status", "isLocal": "is_local", "role": "role", "nodeId": "node_id"}
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "nodeId": "node_id",
        "status": "status",
        "lastHeartbeat": "last_heartbeat",
        "cpuCores": "cpu_cores",
    }
