"""Nodes REST endpoints (thin: queryset scoping, filters and writes live in the shared base)."""

from __future__ import annotations

from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import EntityViewSet
from nodes.models import Node
from nodes.serializers import NodeSerializer

NODE_EXAMPLE_REQUEST = {
    "nodeId": "node-gpu-01",
    "name": "GPU Server 1",
    "role": ["worker"],
    "status": "offline",
    "isLocal": True,
    "cpuCores": 16,
    "ramTotal": 65536,
    "ramFree": 32768,
}
NODE_EXAMPLE = {
    "_id": "68f2a1b3c4d5e6f7a8b9c0d1",
    **NODE_EXAMPLE_REQUEST,
    "vpnIp": "",
    "websocketConnected": False,
    "lastHeartbeat": None,
    "gpuDevices": [
        {
            "deviceId": "GPU-0",
            "model": "NVIDIA RTX 4090",
            "memoryTotal": 24576,
            "memoryFree": 20000,
            "utilization": 45,
            "temperature": 65,
        }
    ],
    "owner": {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""},
    "createdBy": "68dcf365f6a92c0d4911b619",
    "updatedBy": "68dcf365f6a92c0d4911b619",
    "createdAt": "2025-11-16T10:30:00.000Z",
    "updatedAt": "2025-11-16T10:30:00.000Z",
}


@entity_schema_view(
    singular="node",
    create_verb="Register",
    example=NODE_EXAMPLE,
    create_example=NODE_EXAMPLE_REQUEST,
    update_example=("Maintenance", {"name": "GPU Server 1 - Updated", "status": "maintenance", "ramFree": 30000}),
)
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
