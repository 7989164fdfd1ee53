"""A GPU server of the fleet, as registered by an operator and kept current by its daemon."""

from __future__ import annotations

from django.db import models

from aiwm_project.models import OwnedModel, tenant_constraints, tenant_indexes
from nodes.choices import NodeStatus


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

    class Meta:
        constraints = tenant_constraints("node", "node_id")
        indexes = tenant_indexes("node", "status")
