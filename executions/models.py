"""A multi-step workflow run on the fleet (deploy a model, download a model…), steps embedded."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from aiwm_project.models import OwnedModel, tenant_constraints, tenant_indexes
from executions.choices import ExecutionCategory, ExecutionStatus, ResourceType

MAX_STEPS = 100
# A week: long enough for a large model download or a batch run, short enough to catch a stuck run.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
DEFAULT_TIMEOUT_SECONDS = 3600
MAX_RETRIES_LIMIT = 10
DEFAULT_MAX_RETRIES = 3

# `type` names a workflow; it is open-ended (the service builds some, operators define others),
# so only its shape is enforced, to keep filters and statistics clean.
TYPE_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]{0,63}\Z",
    message="must be 1-64 lowercase letters, digits and . _ - (e.g. deploy-model)",
)


class Execution(OwnedModel):
    """One workflow run. `steps` is a JSON list of step documents in the contract's shape, sorted by
    `index` (steps[i]["index"] == i), so the engine addresses a step by its index.

    Status, progress, timing, result, error, message tracking and retry bookkeeping are written by
    the engine only; clients define the workflow (name, category, type, steps, target node).
    """

    business_id_field = "execution_id"
    entity_label = "Execution"
    references = {"node_id": "nodes.Node", "parent_execution_id": "executions.Execution"}

    execution_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    description = models.TextField(max_length=2000, blank=True, default="")
    category = models.CharField(max_length=16, choices=ExecutionCategory.choices)
    type = models.CharField(max_length=64, validators=[TYPE_VALIDATOR])

    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])

    parent_execution_id = models.CharField(max_length=128, null=True, blank=True)
    child_execution_ids = models.JSONField(default=list, blank=True)

    steps = models.JSONField(default=list, blank=True)

    resource_type = models.CharField(max_length=16, choices=ResourceType.choices, null=True, blank=True)
    resource_id = models.CharField(max_length=128, null=True, blank=True)

    node_id = models.CharField(max_length=128, null=True, blank=True)
    # The execution's node plus every step's node, deduplicated: computed by the services on write.
    involved_node_ids = models.JSONField(default=list, blank=True)

    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(
        default=DEFAULT_TIMEOUT_SECONDS, validators=[MinValueValidator(1), MaxValueValidator(MAX_TIMEOUT_SECONDS)]
    )
    timeout_at = models.DateTimeField(null=True, blank=True)
    # The engine's own: when the sweep must look at this running execution next (the earliest of
    # its timeout and its running steps' deadlines). Not part of the API.
    next_check_at = models.DateTimeField(null=True, blank=True, editable=False)

    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)

    sent_message_ids = models.JSONField(default=list, blank=True)
    received_message_ids = models.JSONField(default=list, blank=True)

    retry_count = models.PositiveSmallIntegerField(default=0)
    max_retries = models.PositiveSmallIntegerField(
        default=DEFAULT_MAX_RETRIES, validators=[MaxValueValidator(MAX_RETRIES_LIMIT)]
    )
    # ISO 8601 instants, one per retry, as the contract shows them.
    retry_attempts = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            *tenant_constraints("exec", "execution_id"),
            # The engine's writes bypass the serializer: the database keeps its values inside the state machine.
            models.CheckConstraint(condition=Q(status__in=ExecutionStatus.values), name="exec_status_known"),
            models.CheckConstraint(condition=Q(progress__lte=100), name="exec_progress_0_100"),
            models.CheckConstraint(condition=Q(timeout_seconds__gte=1), name="exec_timeout_positive"),
        ]
        indexes = [
            # status and category also answer the statistics' GROUP BY from the index alone.
            *tenant_indexes("exec", "status", "category", "resource_id", "node_id"),
            # The engine's sweep looks across organizations at running executions that are due.
            models.Index(
                fields=["next_check_at"],
                condition=Q(status=ExecutionStatus.RUNNING, is_deleted=False),
                name="exec_running_next_check",
            ),
        ]
