"""AIWM's node agent: the daemon on a GPU server that holds the node's connection to AIWM,
registers the machine, reports its telemetry and carries out the control plane's commands
(download a model, start or stop a model server). It imports nothing of the server."""

__version__ = "0.1.0"
# The node protocol this agent speaks (docs/asyncapi.yaml's info.version).
PROTOCOL_VERSION = "1.0.0"
