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
