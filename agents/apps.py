from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents, instructions and tools"

    def ready(self) -> None:
        # Registers how the Agent's populated `instruction` appears in the OpenAPI document.
        from agents import schema  # noqa: F401
