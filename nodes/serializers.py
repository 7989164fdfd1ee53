"""Node JSON, exactly as the contract's schema names it."""

from __future__ import annotations

from rest_framework import serializers

from aiwm_project.api.serializers import EntitySerializer, NestedObjectSerializer
from nodes.choices import NodeRole
from nodes.models import Node


class GpuDeviceSerializer(NestedObjectSerializer):
    deviceId = serializers.CharField(max_length=128)
    model = serializers.CharField(max_length=255, required=False, allow_blank=True)
    memoryTotal = serializers.IntegerField(min_value=0, max_value=2**40, required=False)
    memoryFree = serializers.IntegerField(min_value=0, max_value=2**40, required=False)
    utilization = serializers.FloatField(min_value=0, max_value=100, required=False)
    temperature = serializers.FloatField(min_value=-100, max_value=300, required=False)


# Facts the daemon reports on node.register and in heartbeats; read-only through the API.
DAEMON_REPORTED = [
    "hostname",
    "ip_address",
    "public_ip_address",
    "os",
    "cpu_model",
    "disk_total",
    "daemon_version",
    "uptime_seconds",
    "container_runtime",
    "registered_at",
    "cpu_usage",
    "active_deployments",
]


class NodeSerializer(EntitySerializer):
    role = serializers.ListField(child=serializers.ChoiceField(choices=NodeRole.choices), required=False, max_length=4)
    gpuDevices = serializers.ListField(source="gpu_devices", child=GpuDeviceSerializer(), required=False, max_length=64)

    class Meta:
        model = Node
        fields = [
            "node_id",
            "name",
            "role",
            "status",
            "is_local",
            "vpn_ip",
            "websocket_connected",
            "last_heartbeat",
            "cpu_cores",
            "ram_total",
            "ram_free",
            "gpuDevices",
            *DAEMON_REPORTED,
        ]
        # The daemon, not the client, reports these (through the node WebSocket).
        read_only_fields = ["websocket_connected", "last_heartbeat", *DAEMON_REPORTED]
        extra_kwargs = {
            "cpu_cores": {"max_value": 100_000},
            "ram_total": {"min_value": 0},
            "ram_free": {"min_value": 0},
        }
