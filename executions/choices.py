"""Execution enumerations, used by the model, serializers, services, filters and admin alike."""

from django.db import models

from nodes.choices import CommandPriority, CommandType


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


# The status groups the engine, the workflows and the API decide by.
# Not finished yet: it may still send commands (one active workflow per resource at a time).
ACTIVE_STATUSES = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
# Finished without success: `retry` runs it again (while retryCount < maxRetries).
RETRYABLE_STATUSES = (ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT, ExecutionStatus.CANCELLED)


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


# A step in one of these no longer holds up the steps that depend on it.
DONE_STEP_STATUSES = (StepStatus.COMPLETED, StepStatus.SKIPPED)
# A step in one of these runs again on `retry` without resetSteps (with everything after it).
RERUN_STEP_STATUSES = (StepStatus.FAILED, StepStatus.SKIPPED)


class ExecutionCategory(models.TextChoices):
    DEPLOYMENT = "deployment"
    MODEL = "model"
    AGENT = "agent"
    MAINTENANCE = "maintenance"
    BATCH = "batch"


# The priority of the commands an execution's steps send, by its category (normal otherwise): a
# deployment being started or stopped goes ahead of a node's other queued work.
COMMAND_PRIORITY_BY_CATEGORY: dict[str, str] = {ExecutionCategory.DEPLOYMENT: CommandPriority.HIGH}


class ExecutionType(models.TextChoices):
    """The workflows the service itself builds. `type` is not limited to these (see Execution.type)."""

    DEPLOY_MODEL = "deploy-model"
    DOWNLOAD_MODEL = "download-model"
    STOP_DEPLOYMENT = "stop-deployment"
    SETUP_AGENT = "setup-agent"


class ResourceType(models.TextChoices):
    DEPLOYMENT = "deployment"
    MODEL = "model"
    NODE = "node"
    AGENT = "agent"


# The commands a step may send (the node protocol's server events but `command.cancel`, which the
# engine sends for a withdrawn step, a client never), each with the resource it acts on:
# `command.resource.type` must agree with it.
COMMAND_RESOURCE_TYPE: dict[str, str] = {
    CommandType.MODEL_DOWNLOAD: ResourceType.MODEL,
    CommandType.DEPLOYMENT_START: ResourceType.DEPLOYMENT,
    CommandType.DEPLOYMENT_STOP: ResourceType.DEPLOYMENT,
}

STEP_COMMAND_TYPES = tuple(CommandType(value) for value in COMMAND_RESOURCE_TYPE)

# Command types seen in the contract's comments that a node daemon has no event for, with what to send.
COMMAND_TYPE_HINTS: dict[str, str] = {
    "deployment.create": "deployment.start (it creates and starts the container)",
}
