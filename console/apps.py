from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator's views of the whole fleet: Prometheus metrics, the admin dashboard, live events."""

    name = "console"
    verbose_name = "Operator console"
