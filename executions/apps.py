from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"

    def ready(self) -> None:
        # The engine hears the node's answers to its commands (nodes knows nothing of executions).
        from executions.engine import ENGINE_OBSERVER
        from nodes.commands import OBSERVERS

        if ENGINE_OBSERVER not in OBSERVERS:
            OBSERVERS.append(ENGINE_OBSERVER)
