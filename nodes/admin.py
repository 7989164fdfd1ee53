"""Operator view of the fleet: which nodes are up, connected, and with what hardware."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from aiwm_project.admin import OwnedModelAdmin
from nodes.models import Node, NodeCommand, NodeMetric
from nodes.serializers import NodeSerializer
from nodes.services import node_update


@admin.register(Node)
class NodeAdmin(OwnedModelAdmin):
    api_serializer = NodeSerializer
    update_service = staticmethod(node_update)
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


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the gateway writes (outbox, telemetry): operators look, the services write."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(NodeCommand)
class NodeCommandAdmin(ReadOnlyAdmin):
    list_display = ("message_id", "type", "node_id", "status", "attempts", "created_at", "sent_at", "completed_at")
    list_filter = ("status", "type")
    search_fields = ("message_id", "node_id", "owner_org_id")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(NodeMetric)
class NodeMetricAdmin(ReadOnlyAdmin):
    list_display = ("node_id", "timestamp", "received_at", "owner_org_id")
    search_fields = ("node_id", "owner_org_id")
    date_hierarchy = "timestamp"
    show_full_result_count = False
