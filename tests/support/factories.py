"""factory_boy factories for the records the tests build.

Entities are created through the services the API calls (`entity_create`, `execution_create`,
`send_command`): the business-id and reference checks run, and the owner and audit fields are those
of `actor`, the caller (a `Principal`; with `actor=client.principal` a persona client's record is
owned and audited as if that client had POSTed it). The defaults are the contract's examples (`node-gpu-01`,
`llama-2-7b-v1`, ...): a second record of a kind needs its own id.

Records without an identity of their own (metric points, log lines) are plain rows.
"""

from __future__ import annotations

from typing import Any, TypeVar

import factory
from django.db.models import Model
from django.utils import timezone

from agents.models import Agent, Instruction, Tool
from aiwm_project.auth import Principal
from aiwm_project.services import entity_create
from conversations.models import Conversation
from deployments.models import Deployment, DeploymentLog
from executions.models import Execution
from executions.services import execution_create
from models_registry.models import AIModel
from nodes.commands import send_command
from nodes.models import Node, NodeCommand, NodeMetric
from nodes.services import node_issue_token
from tests.support.personas import ORG_A, OWNER_A

M = TypeVar("M", bound=Model)


class OwnedFactory(factory.Factory[M]):
    """An owned entity, inserted by `entity_create` as `actor`; named after its business id unless
    given a `name` (for the models that have one)."""

    class Meta:
        abstract = True

    actor = OWNER_A

    @classmethod
    def _adjust_kwargs(cls, **kwargs: Any) -> dict[str, Any]:
        model = cls._meta.model
        if "name" not in kwargs and any(field.name == "name" for field in model._meta.fields):
            kwargs["name"] = kwargs[model.business_id_field]
        return kwargs

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> Any:
        actor: Principal = kwargs.pop("actor")
        return entity_create(model=model_class, data=kwargs, actor=actor)


class NodeFactory(OwnedFactory[Node]):
    class Meta:
        model = Node

    node_id = "node-gpu-01"
    cpu_cores = 16
    ram_total = 65536

    @classmethod
    def with_token(cls, **kwargs: Any) -> tuple[Node, str]:
        """A node and a valid node token for it (issued by its creator)."""
        node = cls.create(**kwargs)
        token, _ = node_issue_token(node=node, actor_id=node.created_by)
        return node, token


class AIModelFactory(OwnedFactory[AIModel]):
    class Meta:
        model = AIModel

    model_id = "llama-2-7b-v1"
    type = "llm"
    framework = "pytorch"


class DeploymentFactory(OwnedFactory[Deployment]):
    class Meta:
        model = Deployment

    deployment_id = "deploy-llama-prod-01"
    model_id = "llama-2-7b-v1"
    node_id = "node-gpu-01"


def deployment_with_model(
    deployment_id: str, node_id: str, model_id: str = "llama", actor: Principal = OWNER_A
) -> Deployment:
    """A deployment of `model_id` on the node, registering the model first unless the organization has it."""
    if not AIModel.objects.for_org(actor.org_id).filter(model_id=model_id).exists():
        AIModelFactory.create(model_id=model_id, actor=actor)
    return DeploymentFactory.create(deployment_id=deployment_id, model_id=model_id, node_id=node_id, actor=actor)


class InstructionFactory(OwnedFactory[Instruction]):
    class Meta:
        model = Instruction

    instruction_id = "inst-1"
    system_prompt = "p"


class AgentFactory(OwnedFactory[Agent]):
    class Meta:
        model = Agent

    agent_id = "agent-assistant-01"
    node_id = "node-gpu-01"


class ToolFactory(OwnedFactory[Tool]):
    class Meta:
        model = Tool

    tool_id = "tool-1"
    type = "api"


class ConversationFactory(OwnedFactory[Conversation]):
    class Meta:
        model = Conversation

    conversation_id = "conv-0001"
    title = factory.LazyAttribute(lambda o: f"Conversation {o.conversation_id}")
    agent_id = "agent-assistant-01"


class ExecutionFactory(OwnedFactory[Execution]):
    """A pending execution through `execution_create` (step validation, involved nodes, parent
    bookkeeping); without an `execution_id` the service generates one."""

    class Meta:
        model = Execution

    name = "Run"
    category = "model"
    type = "download-model"
    node_id = "node-gpu-01"
    steps = factory.LazyFunction(list)

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> Any:
        actor: Principal = kwargs.pop("actor")
        return execution_create(data=kwargs, actor=actor)


class NodeCommandFactory(factory.Factory[NodeCommand]):
    """A command in the node's outbox, stored by `send_command` (queued; delivered on commit if connected)."""

    class Meta:
        model = NodeCommand

    actor = OWNER_A
    node_id = "node-gpu-01"
    type = "model.download"
    resource = factory.LazyFunction(dict)
    data = factory.LazyFunction(dict)
    metadata = factory.LazyFunction(dict)

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> Any:
        actor: Principal = kwargs.pop("actor")
        return send_command(org_id=actor.org_id, actor_id=actor.user_id, **kwargs)


class NodeMetricFactory(factory.django.DjangoModelFactory[NodeMetric]):
    """One `telemetry.metrics` point of a node of org A (`owner_org_id` for another)."""

    class Meta:
        model = NodeMetric

    owner_org_id = ORG_A
    node_id = "node-gpu-01"
    timestamp = factory.LazyFunction(timezone.now)
    data = factory.LazyFunction(dict)


class DeploymentLogFactory(factory.django.DjangoModelFactory[DeploymentLog]):
    """One `deployment.logs` line of a deployment of org A (`owner_org_id` for another)."""

    class Meta:
        model = DeploymentLog

    owner_org_id = ORG_A
    deployment_id = "deploy-llama-prod-01"
    node_id = "node-gpu-01"
    timestamp = factory.LazyFunction(timezone.now)
    level = "info"
    message = "log line"
