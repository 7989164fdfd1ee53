"""A model running (or meant to run) on a node: its desired shape, runtime state and event log."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from aiwm_project.models import OwnedModel, TenantModel, tenant_constraints, tenant_indexes
from deployments.choices import (
    DeploymentEnvironment,
    DeploymentStatus,
    DeploymentType,
    HardwareProfile,
    LogLevel,
    ModelServer,
)

# More replicas than this on one node is a typo, not a plan; the node could not schedule them.
MAX_REPLICAS = 64
# The event log lives in the row; keep it bounded so a flapping deployment cannot grow it forever.
MAX_EVENTS = 200


class Deployment(OwnedModel):
    business_id_field = "deployment_id"
    entity_label = "Deployment"
    references = {"model_id": "models_registry.AIModel", "node_id": "nodes.Node"}
    protected_references = frozenset({"model_id", "node_id"})

    deployment_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    environment = models.CharField(
        max_length=16, choices=DeploymentEnvironment.choices, default=DeploymentEnvironment.DEVELOPMENT
    )
    status = models.CharField(max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.PENDING)
    model_id = models.CharField(max_length=128)
    node_id = models.CharField(max_length=128)
    deployment_type = models.CharField(max_length=16, choices=DeploymentType.choices, default=DeploymentType.API)
    replicas = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(MAX_REPLICAS)]
    )
    hardware_profile = models.CharField(max_length=16, choices=HardwareProfile.choices, default=HardwareProfile.GPU)

    is_running = models.BooleanField(default=False)
    container_name = models.CharField(max_length=255, blank=True, default="")
    container_port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    # Additive to the contract: which model server runs it (else chosen by the model) and extra
    # arguments for it (before the agent's own host/port/name, which they cannot override).
    backend = models.CharField(max_length=16, choices=ModelServer.choices, blank=True, default="")
    backend_args = models.JSONField(default=list, blank=True)
    endpoint = models.CharField(max_length=2048, blank=True, default="")
    # Reported by the node (deployment.status): the runtime's container id and last health verdict.
    container_id = models.CharField(max_length=128, blank=True, default="")
    health_status = models.CharField(max_length=32, blank=True, default="")

    total_inferences = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    average_latency = models.FloatField(default=0, validators=[MinValueValidator(0)])
    uptime = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    last_health_check = models.DateTimeField(null=True, blank=True)

    # [{timestamp, event, message, severity}], oldest first; written only by services.
    events = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = tenant_constraints("deploy", "deployment_id")
        indexes = tenant_indexes("deploy", "status", "model_id", "node_id")


class DeploymentLog(TenantModel):
    """One log line a node reported for a deployment (`deployment.logs`)."""

    deployment_id = models.CharField(max_length=128)
    node_id = models.CharField(max_length=128)
    timestamp = models.DateTimeField()
    level = models.CharField(max_length=16, choices=LogLevel.choices, default=LogLevel.INFO)
    message = models.TextField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["owner_org_id", "deployment_id", "timestamp"], name="deplog_time"),
            models.Index(fields=["received_at"], name="deplog_received"),
        ]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.level}: {self.message[:60]}"
