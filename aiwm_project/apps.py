from django.apps import AppConfig


class AiwmProjectConfig(AppConfig):
    name = "aiwm_project"
    verbose_name = "AIWM"

    def ready(self) -> None:
        # Registers the OpenAPI description of the bearer token with drf-spectacular.
        from aiwm_project.api import schema  # noqa: F401
