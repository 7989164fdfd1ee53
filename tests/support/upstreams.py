"""Deployments answered by fake OpenAI-compatible servers (tests/support/fake_openai.py), for the
tests of the gateway and of conversations: `upstreams` (a fixture: the servers a test started,
stopped after it) and `serve` (one more running deployment)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aiwm_project.auth import Principal
from deployments.models import Deployment
from inference.models import InferenceRecord
from inference.usage import RECORDER
from models_registry.models import AIModel
from nodes.models import Node
from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory
from tests.support.fake_openai import Behaviour, FakeOpenAI
from tests.support.live_server import eventually, free_port
from tests.support.personas import OWNER_A


@pytest.fixture
def upstreams() -> Iterator[list[FakeOpenAI]]:
    started: list[FakeOpenAI] = []
    yield started
    for server in started:
        server.stop()
    RECORDER.flush()  # what this test's requests recorded goes to this test's database, not the next one's


def node_and_model(node_id: str, model_id: str, actor: Principal = OWNER_A) -> None:
    """The node and the model on it, each made unless the organization has it already."""
    if not Node.objects.for_org(actor.org_id).filter(node_id=node_id).exists():
        NodeFactory.create(node_id=node_id, actor=actor)
    if not AIModel.objects.for_org(actor.org_id).filter(model_id=model_id).exists():
        AIModelFactory.create(model_id=model_id, node_id=node_id, actor=actor)


def serve(
    upstreams: list[FakeOpenAI],
    deployment_id: str,
    *,
    model_id: str = "m1",
    node_id: str = "node-1",
    backend: str = "",
    actor: Principal = OWNER_A,
    **behaviour: Any,
) -> FakeOpenAI:
    """A running deployment of `model_id` (the node and model made on first use) answered by a fake server."""
    server = FakeOpenAI(free_port(), Behaviour(**behaviour))
    upstreams.append(server)
    node_and_model(node_id, model_id, actor)
    Node.objects.for_org(actor.org_id).filter(node_id=node_id).update(status="online")
    deployment = DeploymentFactory.create(deployment_id=deployment_id, model_id=model_id, node_id=node_id, actor=actor)
    Deployment.objects.filter(pk=deployment.pk).update(
        status="running", is_running=True, endpoint=server.base_url, backend=backend, health_status="healthy"
    )
    return server


def flushed(count: int | None = None) -> None:
    """The usage records written; with `count`, once that many exist (a stream is recorded after its
    last byte, when its tokens are counted)."""
    RECORDER.flush()
    if count is not None:
        assert eventually(lambda: RECORDER.flush() >= 0 and InferenceRecord.objects.count() >= count, 5)
