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
    # Additive to the contract's enumeration: a llama.cpp GGUF file (the node runs llama.cpp's server).
    GGUF = "gguf"


# The model server a node's agent must run for a model of a framework (sent in deployment.start as
# `backend`). Only where the framework decides it: a "huggingface" model may well be a GGUF file of
# a Hugging Face repository, so for every other framework the agent decides by the model's files
# (aiwm_node.supervisor.backend_for: a .gguf file -> llama.cpp, a folder with config.json -> vLLM).
BACKEND_BY_FRAMEWORK: dict[str, str] = {ModelFramework.GGUF: "llama.cpp"}


def server_backend(chosen: str, framework: str) -> str:
    """The model server a deployment runs: its own choice (`backend`), else the one its model's
    framework implies; "" when neither says, and the node's agent decides by the model's files."""
    return chosen or BACKEND_BY_FRAMEWORK.get(framework, "")


class ModelStatus(models.TextChoices):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    READY = "ready"
    ERROR = "error"
