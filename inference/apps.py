from django.apps import AppConfig


class InferenceConfig(AppConfig):
    """The OpenAI-compatible gateway (/v1), its API keys and the usage it records."""

    name = "inference"
