"""Node enumerations, used by the model, serializers, filters and admin alike."""

from django.db import models


class NodeStatus(models.TextChoices):
    ONLINE = "online"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class NodeRole(models.TextChoices):
    CONTROLLER = "controller"
    WORKER = "worker"
    PROXY = "proxy"
    STORAGE = "storage"


class CommandType(models.TextChoices):
    """Server -> node commands (the contract's "Server Events")."""

    MODEL_DOWNLOAD = "model.download"
    DEPLOYMENT_START = "deployment.start"
    DEPLOYMENT_STOP = "deployment.stop"
    COMMAND_CANCEL = "command.cancel"


class CommandPriority(models.TextChoices):
    """`metadata.priority` of a server -> node command: the order a daemon works through its queue."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class CommandStatus(models.TextChoices):
    QUEUED = "queued"  # stored; the node was not connected (or not yet told)
    SENT = "sent"  # handed to the transport; no command.ack yet
    ACKNOWLEDGED = "acknowledged"  # the node said it received it
    SUCCEEDED = "succeeded"  # command.result success
    FAILED = "failed"  # command.result error
    EXPIRED = "expired"  # never answered in time (the engine's sweep decides)
    CANCELLED = (
        "cancelled"  # withdrawn by the engine (execution cancelled or ended); a command.cancel follows if it was sent
    )


# Not answered yet: a result may still move it.
OPEN_COMMAND_STATUSES = (CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.ACKNOWLEDGED)
# Not acknowledged yet: re-sent in the next register.ack's pendingCommands.
UNACKNOWLEDGED_COMMAND_STATUSES = (CommandStatus.QUEUED, CommandStatus.SENT)
# Handed to the node: withdrawing it needs a command.cancel.
DELIVERED_COMMAND_STATUSES = (CommandStatus.SENT, CommandStatus.ACKNOWLEDGED)
