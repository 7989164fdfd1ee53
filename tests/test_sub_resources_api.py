"""The read-only lists under a node or a deployment: a node's commands and metrics, a deployment's logs.

Each gets the sub-resource contract (tests/support/api.py `SubResourceContract`): the paginated
envelope, the personas (org A's owner and viewer read, org B's owner gets a 404 for A's parent and
never sees its rows), bad query parameters with the error body, and a constant query count.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from deployments.serializers import DeploymentLogSerializer
from nodes.serializers import NodeCommandSerializer, NodeMetricSerializer
from tests.support.api import SubResourceContract
from tests.support.factories import (
    AIModelFactory,
    DeploymentFactory,
    DeploymentLogFactory,
    NodeCommandFactory,
    NodeFactory,
    NodeMetricFactory,
)
from tests.support.personas import PersonaClient

TO_BEFORE_FROM = {"from": "2025-11-16T12:00:00.000Z", "to": "2025-11-16T11:00:00.000Z"}


def recent(n: int) -> Any:
    """The n-th of a row's times, in creation order and within a list's default window (the last hour)."""
    return timezone.now() - timedelta(minutes=30) + timedelta(seconds=n)


class NodeSubResource(SubResourceContract):
    """A list under node-gpu-01 (in each organization)."""

    parent_collection = "/api/nodes"
    parent_id = "node-gpu-01"

    def make_references(self, client: PersonaClient) -> None:
        NodeFactory.create(node_id=self.parent_id, actor=client.principal)


class TestNodeCommandsAPI(NodeSubResource):
    sub_path = "commands"
    bad_filter_params = [({"status": "bogus"}, "status")]

    def create(self, client: PersonaClient, n: int = 1, **overrides: Any) -> dict:
        command = NodeCommandFactory.create(
            node_id=self.parent_id, resource={"type": "model", "id": f"model-{n}"}, actor=client.principal, **overrides
        )
        return NodeCommandSerializer().to_representation(command)

    def key(self, row: dict) -> Any:
        return row["messageId"]


class TestNodeMetricsAPI(NodeSubResource):
    sub_path = "metrics"
    newest_first = False
    bad_filter_params = [({"from": "not-a-date"}, "from"), ({"to": "not-a-date"}, "to"), (TO_BEFORE_FROM, "to")]

    def create(self, client: PersonaClient, n: int = 1, **overrides: Any) -> dict:
        point = NodeMetricFactory.create(
            owner_org_id=client.org_id,
            node_id=self.parent_id,
            timestamp=recent(n),
            data={"cpu": {"usage": n}},
            **overrides,
        )
        return NodeMetricSerializer().to_representation(point)

    def key(self, row: dict) -> Any:
        return row["cpu"]["usage"]


class TestDeploymentLogsAPI(SubResourceContract):
    parent_collection = "/api/deployments"
    parent_id = "deploy-llama-prod-01"
    sub_path = "logs"
    newest_first = False
    bad_filter_params = [({"level": "bogus"}, "level"), ({"since": "not-a-date"}, "since")]

    def make_references(self, client: PersonaClient) -> None:
        NodeFactory.create(actor=client.principal)
        AIModelFactory.create(node_id="node-gpu-01", actor=client.principal)
        DeploymentFactory.create(deployment_id=self.parent_id, actor=client.principal)

    def create(self, client: PersonaClient, n: int = 1, **overrides: Any) -> dict:
        line = DeploymentLogFactory.create(
            owner_org_id=client.org_id,
            deployment_id=self.parent_id,
            timestamp=recent(n),
            message=f"line {n}",
            **overrides,
        )
        return DeploymentLogSerializer().to_representation(line)

    def key(self, row: dict) -> Any:
        return row["message"]
