"""An AI model of the registry: where it comes from, which node holds it, and how much it is used."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from aiwm_project.models import OwnedModel, tenant_constraints, tenant_indexes
from models_registry.choices import ModelFramework, ModelStatus, ModelType


class AIModel(OwnedModel):
    """Named AIModel so it is never confused with django.db.models.Model; the API calls it Model."""

    business_id_field = "model_id"
    entity_label = "Model"
    references = {"node_id": "nodes.Node"}
    protected_references = frozenset({"node_id"})

    model_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    version = models.CharField(max_length=64, blank=True, default="")
    type = models.CharField(max_length=16, choices=ModelType.choices)
    framework = models.CharField(max_length=16, choices=ModelFramework.choices)
    repository = models.CharField(max_length=1024, blank=True, default="")
    file_name = models.CharField(max_length=255, blank=True, default="")
    file_size = models.BigIntegerField(default=0)  # bytes
    # The file's expected SHA-256 (lowercase hex; additive to the contract): the node's agent
    # refuses a download that does not match. Empty: unknown (Hugging Face's own is used then).
    sha256 = models.CharField(
        max_length=64,
        blank=True,
        default="",
        validators=[RegexValidator(r"^[0-9a-f]{64}$", "sha256: 64 lowercase hexadecimal digits")],
    )
    is_downloaded = models.BooleanField(default=False)
    download_path = models.CharField(max_length=1024, blank=True, default="")
    download_progress = models.FloatField(default=0)  # percent, 0-100
    status = models.CharField(max_length=16, choices=ModelStatus.choices, default=ModelStatus.QUEUED)
    # A model may be registered before it is placed on a node, so no node is NULL (not "").
    node_id = models.CharField(max_length=128, null=True, blank=True, default=None)
    total_inference = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    total_processing_time = models.BigIntegerField(default=0)  # milliseconds
    tags = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        verbose_name = "AI model"
        verbose_name_plural = "AI models"
        constraints = tenant_constraints("aimodel", "model_id")
        indexes = tenant_indexes("aimodel", "type", "node_id", "status")
