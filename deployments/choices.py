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


class ModelServer(models.TextChoices):
    """The model server a node's agent runs for a deployment (additive to the contract). Empty: by
    the model (its framework, else its files: aiwm_node.supervisor)."""

    AUTO = "", "auto"
    LLAMA_CPP = "llama.cpp"
    VLLM = "vllm"


class EventSeverity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogLevel(models.TextChoices):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
