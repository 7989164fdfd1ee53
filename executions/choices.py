"""Execution enumerations, used by the model, serializers, services, filters and admin alike."""

from django.db import models


class ExecutionStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


# An execution in one of these has finished; only `retry` (failed/timeout/cancelled) leaves them.
TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.TIMEOUT}
)


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class ExecutionCategory(models.TextChoices):
    DEPLOYMENT = "deployment"
    MODEL = "model"
    AGENT = "agent"
    MAINTENANCE = "maintenance"
    BATCH = "batch"


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


class CommandType(models.TextChoices):
    """Commands a step may send to a node: exactly the server-to-node events of the node protocol.

    `command.cancel` is not here: the engine sends it for a cancelled step, a client never does.
    """

    MODEL_DOWNLOAD = "model.download"
    DEPLOYMENT_START = "deployment.start"
    DEPLOYMENT_STOP = "deployment.stop"


# The resource each command acts on: `command.resource.type` must agree with it.
COMMAND_RESOURCE_TYPE: dict[str, str] = {
    CommandType.MODEL_DOWNLOAD: ResourceType.MODEL,
    CommandType.DEPLOYMENT_START: ResourceType.DEPLOYMENT,
    CommandType.DEPLOYMENT_STOP: ResourceType.DEPLOYMENT,
}

# Command types seen in the contract's comments that a node daemon has no event for, with what to send.
COMMAND_TYPE_HINTS: dict[str, str] = {
    "deployment.create": "deployment.start (it creates and starts the container)",
}
