"""A GPU server of the fleet, as registered by an operator and kept current by its daemon."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from aiwm_project.ids import new_object_id
from aiwm_project.models import OwnedModel, TenantModel, tenant_constraints, tenant_indexes
from nodes.choices import CommandStatus, NodeStatus

# A GPU counts as in use when it computes or holds more than this share of its memory.
GPU_BUSY_UTILIZATION = 5.0
GPU_BUSY_MEMORY_SHARE = 0.10


def gpu_summary(devices: Any) -> dict[str, int]:
    """A node's GPU figures for the fleet's totals, from its `gpuDevices`: how many, how many in
    use (by the thresholds above), and the free memory (MB) of those that report their total."""
    count = busy = free = 0
    for device in devices if isinstance(devices, list) else []:
        if not isinstance(device, dict):
            continue
        count += 1
        total, left = _number(device.get("memoryTotal")), _number(device.get("memoryFree"))
        held = 1 - left / total if total and left is not None else 0.0
        if (_number(device.get("utilization")) or 0.0) >= GPU_BUSY_UTILIZATION or held >= GPU_BUSY_MEMORY_SHARE:
            busy += 1
        if total is not None and left is not None:
            free += int(left)
    return {"gpu_count": count, "gpus_busy": busy, "gpu_memory_free": free}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Node(OwnedModel):
    business_id_field = "node_id"
    entity_label = "Node"

    node_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    role = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=NodeStatus.choices, default=NodeStatus.OFFLINE)
    is_local = models.BooleanField(default=False)
    vpn_ip = models.CharField(max_length=64, blank=True, default="")
    websocket_connected = models.BooleanField(default=False)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    cpu_cores = models.PositiveIntegerField()
    ram_total = models.BigIntegerField(default=0)
    ram_free = models.BigIntegerField(default=0)
    gpu_devices = models.JSONField(default=list, blank=True)
    # Derived from gpu_devices on every write of it (derived_fields): the fleet's GPU totals are a
    # sum over nodes, not a walk through every GPU's JSON (1,000 nodes of 8 GPUs: 10 ms a page).
    gpu_count = models.PositiveIntegerField("GPUs", default=0)
    gpus_busy = models.PositiveIntegerField("GPUs in use", default=0)
    gpu_memory_free = models.BigIntegerField("GPU memory free (MB)", default=0)

    # Reported by the daemon on node.register (the contract's registration payload).
    hostname = models.CharField(max_length=255, blank=True, default="")
    ip_address = models.CharField(max_length=64, blank=True, default="")
    public_ip_address = models.CharField(max_length=64, blank=True, default="")
    os = models.CharField(max_length=255, blank=True, default="")
    cpu_model = models.CharField(max_length=255, blank=True, default="")
    disk_total = models.BigIntegerField(default=0)
    daemon_version = models.CharField(max_length=64, blank=True, default="")
    uptime_seconds = models.BigIntegerField(default=0)
    container_runtime = models.CharField(max_length=64, blank=True, default="")
    registered_at = models.DateTimeField(null=True, blank=True)
    # Latest heartbeat figures (the full series is in NodeMetric).
    cpu_usage = models.FloatField(default=0)
    active_deployments = models.PositiveIntegerField(default=0)

    # The `jti` of the one valid node token; issuing a new token revokes the old one.
    token_id = models.CharField(max_length=64, blank=True, default="")
    # The connection that speaks for the node now; a stale connection's disconnect is ignored.
    connection_id = models.CharField(max_length=64, blank=True, default="")
    # The current session, for operators (admin): when it began and the address it came from.
    connected_at = models.DateTimeField(null=True, blank=True)
    remote_address = models.CharField(max_length=64, blank=True, default="")

    @classmethod
    def derived_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return gpu_summary(data["gpu_devices"]) if "gpu_devices" in data else {}

    class Meta:
        constraints = tenant_constraints("node", "node_id")
        indexes = [
            *tenant_indexes("node", "status"),
            # The offline sweep: online nodes ordered by their last heartbeat, across organizations.
            models.Index(
                fields=["last_heartbeat"],
                condition=models.Q(is_deleted=False, status=NodeStatus.ONLINE),
                name="node_online_heartbeat",
            ),
        ]


class NodeCommand(TenantModel):
    """The durable outbox of server -> node commands: stored first, then delivered.

    Transports (Socket.IO, Channels) only deliver; this row is the truth about a command.
    """

    id = models.CharField(primary_key=True, max_length=24, default=new_object_id, editable=False, db_column="_id")
    node_id = models.CharField(max_length=128)
    message_id = models.CharField(max_length=64, unique=True)
    type = models.CharField(max_length=32)
    resource = models.JSONField(default=dict, blank=True)
    data = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=CommandStatus.choices, default=CommandStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    progress = models.FloatField(default=0)
    created_by = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["owner_org_id", "node_id", "created_at"], name="cmd_node_created"),
            models.Index(
                fields=["owner_org_id", "node_id", "created_at"],
                condition=models.Q(status__in=["queued", "sent", "acknowledged"]),
                name="cmd_node_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} -> {self.node_id} ({self.status})"


class NodeMetric(TenantModel):
    """One `telemetry.metrics` report: a time series point, kept for AIWM_METRICS_RETENTION_DAYS."""

    node_id = models.CharField(max_length=128)
    # The report's messageId: unique per node, so a point is stored at most once.
    message_id = models.CharField(max_length=128, blank=True, default="")
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner_org_id", "node_id", "message_id"],
                condition=~models.Q(message_id=""),
                name="metric_once",
            )
        ]
        indexes = [
            models.Index(fields=["owner_org_id", "node_id", "timestamp"], name="metric_node_time"),
            models.Index(fields=["received_at"], name="metric_received"),
        ]

    def __str__(self) -> str:
        return f"metrics {self.node_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


class InboundMessage(TenantModel):
    """Every node -> server messageId seen, so each is applied at most once (the unique key)."""

    node_id = models.CharField(max_length=128)
    message_id = models.CharField(max_length=128)
    type = models.CharField(max_length=64)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner_org_id", "node_id", "message_id"], name="inbound_once")]
        indexes = [models.Index(fields=["received_at"], name="inbound_received")]

    def __str__(self) -> str:
        return f"{self.type} {self.message_id} from {self.node_id}"
