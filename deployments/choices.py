"""Deployment enumerations, used by the model, serializers, filters and admin alike."""

from django.db import models


class DeploymentEnvironment(models.TextChoices):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class DeploymentStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class DeploymentType(models.TextChoices):
    API = "api"
    BATCH = "batch"
    STREAMING = "streaming"


class HardwareProfile(models.TextChoices):
    CPU = "cpu"
    GPU = "gpu"
    MULTI_GPU = "multi-gpu"


class EventSeverity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogLevel(models.TextChoices):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
