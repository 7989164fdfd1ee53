"""EntitySerializer's read plan (fields built once per class, shared by every request) writes exactly
what DRF's own Serializer.to_representation writes over freshly built fields, for every entity, and
a populated reference still follows each request's own context."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from agents.serializers import AgentSerializer, InstructionSerializer, ToolSerializer
from aiwm_project.api.serializers import EntitySerializer
from aiwm_project.selectors import RelatedLoader
from conversations.serializers import ConversationSerializer
from deployments.serializers import DeploymentSerializer
from executions.serializers import ExecutionSerializer
from models_registry.models import AIModel
from models_registry.serializers import AIModelSerializer
from nodes.serializers import NodeSerializer
from tests.support.factories import (
    AgentFactory,
    ConversationFactory,
    ExecutionFactory,
    InstructionFactory,
    NodeFactory,
    ToolFactory,
    deployment_with_model,
)
from tests.support.personas import ORG_A

pytestmark = pytest.mark.django_db

GPU = {"deviceId": "GPU-0", "model": "NVIDIA A100", "memoryTotal": 81920, "memoryFree": 40960, "utilization": 50}


def drf_representation(serializer: EntitySerializer, instance: Any) -> dict[str, Any]:
    """The oracle: DRF's generic path over the serializer instance's own, freshly built fields."""
    return dict(serializers.Serializer.to_representation(serializer, instance))


def records() -> list[tuple[type[EntitySerializer], Any]]:
    node = NodeFactory.create(gpu_devices=[GPU, {**GPU, "deviceId": "GPU-1"}])
    deployment = deployment_with_model("deploy-1", node.node_id)
    instruction = InstructionFactory.create()
    agent = AgentFactory.create(instruction_id=instruction.instruction_id)
    return [
        (NodeSerializer, node),
        (DeploymentSerializer, deployment),
        (AIModelSerializer, _model(deployment)),
        (InstructionSerializer, instruction),
        (AgentSerializer, agent),
        (ToolSerializer, ToolFactory.create()),
        (ConversationSerializer, ConversationFactory.create()),
        (ExecutionSerializer, ExecutionFactory.create()),
    ]


def _model(deployment: Any) -> AIModel:
    return AIModel.objects.get(owner_org_id=deployment.owner_org_id, model_id=deployment.model_id)


@pytest.mark.parametrize("populate", [frozenset(), frozenset({"instruction"})])
def test_the_read_plan_writes_what_drf_writes_for_every_entity(populate: frozenset[str]) -> None:
    for serializer_class, instance in records():
        context = {"loader": RelatedLoader(ORG_A), "populate": populate}
        planned = serializer_class(context=context).to_representation(instance)
        expected = drf_representation(serializer_class(context=dict(context)), instance)
        assert planned == expected, serializer_class.__name__
        assert list(planned) == list(expected), f"{serializer_class.__name__}: key order"


def test_the_fields_are_built_once_per_class_and_a_reference_follows_each_requests_context() -> None:
    node = NodeFactory.create()
    deployment = deployment_with_model("deploy-1", node.node_id)
    assert DeploymentSerializer.read_plan() is DeploymentSerializer.read_plan()
    assert NodeSerializer.read_plan() is not DeploymentSerializer.read_plan()
    seen = DeploymentSerializer(context={"loader": RelatedLoader(ORG_A)}).to_representation(deployment)
    assert seen["node"]["nodeId"] == node.node_id
    # Another request's loader (another organization) does not see the node: null, not A's copy.
    hidden = DeploymentSerializer(context={"loader": RelatedLoader("another-org")}).to_representation(deployment)
    assert hidden["node"] is None and hidden["model"] is None
