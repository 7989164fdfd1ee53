from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """Talking to node daemons: the protocol, its two transports, identity, telemetry intake."""

    name = "gateway"
    verbose_name = "Node gateway"
