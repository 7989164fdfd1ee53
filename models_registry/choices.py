"""AI model enumerations, used by the model, serializers, filters and admin alike."""

from django.db import models


class ModelType(models.TextChoices):
    LLM = "llm"
    DIFFUSION = "diffusion"
    EMBEDDING = "embedding"
    CLASSIFIER = "classifier"


class ModelFramework(models.TextChoices):
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    ONNX = "onnx"
    HUGGINGFACE = "huggingface"


class ModelStatus(models.TextChoices):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    READY = "ready"
    ERROR = "error"
