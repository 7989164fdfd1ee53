"""Operator view of the fleet: which nodes are up, connected, and with what hardware."""

from django.contrib import admin

from aiwm_project.admin import OwnedModelAdmin
from nodes.models import Node
from nodes.serializers import NodeSerializer


@admin.register(Node)
class NodeAdmin(OwnedModelAdmin):
    api_serializer = NodeSerializer
    list_display = (
        "node_id",
        "name",
        "status",
        "websocket_connected",
        "last_heartbeat",
        "cpu_cores",
        "ram_total",
        "gpu_count",
        "is_local",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "websocket_connected", "is_local", "is_deleted")
    search_fields = ("node_id", "name", "vpn_ip", "owner_org_id")

    @admin.display(description="GPUs")
    def gpu_count(self, obj: Node) -> int:
        return len(obj.gpu_devices or [])
