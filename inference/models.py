"""API keys for programs calling the gateway (/v1), and one usage record per request through it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from aiwm_project.models import OwnedModel, TenantModel, tenant_constraints, tenant_indexes


class ApiKey(OwnedModel):
    """A key a program calls /v1 with. The secret is shown once, when the key is created, and stored
    only as its SHA-256 (a random 256-bit secret needs no slow hash); deleting the key revokes it."""

    business_id_field = "api_key_id"
    entity_label = "API key"

    api_key_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    # The secret's first characters, kept to tell keys apart in a list (never enough to use one).
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # modelIds (or deploymentIds) the key may call; empty: every model of the organization. Last in
    # the class: from here on `models` in this body is the field, not django.db.models.
    models = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = tenant_constraints("akey", "api_key_id")
        indexes = tenant_indexes("akey")


class InferenceRecord(TenantModel):
    """One request through the gateway: who called, which model and deployment answered, the tokens,
    how long it took and how it ended. The source of GET /api/usage and of the counters on models,
    deployments and agents."""

    created_at = models.DateTimeField(default=timezone.now)
    api_key_id = models.CharField(max_length=128, blank=True, default="")
    user_id = models.CharField(max_length=64, blank=True, default="")
    model_id = models.CharField(max_length=128)
    deployment_id = models.CharField(max_length=128, blank=True, default="")
    node_id = models.CharField(max_length=128, blank=True, default="")
    # chat.completions | completions | embeddings
    endpoint = models.CharField(max_length=32)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error = models.CharField(max_length=500, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # How the tokens were counted: "backend" (its usage), "tokenizer" (counted afterwards), "none".
    tokens_from = models.CharField(max_length=16, default="backend")
    latency_ms = models.FloatField()  # from the request to the answer's last byte
    ttft_ms = models.FloatField(null=True, blank=True)  # to the first byte of the answer's body

    class Meta:
        indexes = [
            models.Index(fields=["owner_org_id", "created_at"], name="infer_org_time"),
            models.Index(fields=["owner_org_id", "model_id", "created_at"], name="infer_org_model_time"),
        ]
