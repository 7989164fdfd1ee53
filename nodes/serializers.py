"""Node JSON, exactly as the contract's schema names it, and the JSON of its token, commands and metrics."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from aiwm_project.api.serializers import EntitySerializer, IsoDateTimeField, NestedObjectSerializer, choice_field
from aiwm_project.datetimes import format_datetime
from aiwm_project.naming import camelize
from nodes.choices import CommandPriority, CommandStatus, CommandType, NodeRole
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
    # Telemetry moves with every heartbeat: a node record read a moment ago holds stale values.
    live_fields = ("websocketConnected", "lastHeartbeat", *(camelize(name) for name in DAEMON_REPORTED))
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


class NodeTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    nodeId = serializers.CharField()
    expiresAt = serializers.CharField()


class OutboxResourceSerializer(serializers.Serializer):
    type = serializers.CharField(max_length=32)
    id = serializers.CharField(max_length=128)


class CommandMetadataSerializer(serializers.Serializer):
    executionId = serializers.CharField(max_length=128, required=False)
    stepIndex = serializers.IntegerField(min_value=0, max_value=10_000, required=False)
    timeout = serializers.IntegerField(min_value=1, max_value=7 * 86400, required=False)
    priority = choice_field(CommandPriority.choices, required=False)


class SendCommandSerializer(serializers.Serializer):
    type = choice_field(CommandType.choices)
    resource = OutboxResourceSerializer(required=False)
    # The name shadows Serializer.data only in the class body: DRF moves declared fields out of it.
    data = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]
    metadata = CommandMetadataSerializer(required=False)


class NodeCommandSerializer(serializers.Serializer):
    """A command of the outbox as the API shows it: the envelope plus its delivery state."""

    _id = serializers.CharField(source="id")
    messageId = serializers.CharField(source="message_id")
    nodeId = serializers.CharField(source="node_id")
    type = serializers.CharField()
    resource = serializers.DictField()
    data = serializers.DictField()  # type: ignore[assignment]
    metadata = serializers.DictField()
    status = choice_field(CommandStatus.choices)
    attempts = serializers.IntegerField()
    progress = serializers.FloatField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)
    createdBy = serializers.CharField(source="created_by")
    createdAt = IsoDateTimeField(source="created_at")
    sentAt = IsoDateTimeField(source="sent_at", allow_null=True)
    acknowledgedAt = IsoDateTimeField(source="acknowledged_at", allow_null=True)
    completedAt = IsoDateTimeField(source="completed_at", allow_null=True)


class NodeMetricSerializer(serializers.Serializer):
    timestamp = IsoDateTimeField()
    receivedAt = IsoDateTimeField(source="received_at")
    data = serializers.DictField()  # type: ignore[assignment]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # The stored report as the node sent it (cpu, ram, disk, gpu, network), with its times.
        return {
            "timestamp": format_datetime(instance.timestamp),
            "receivedAt": format_datetime(instance.received_at),
            **instance.data,
        }
