"""The deployment start path does each thing once: one locked read of the deployment, and its
state change and event written by the same statement."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory
from tests.support.personas import Personas

pytestmark = pytest.mark.django_db

NODE = "node-gpu-01"


def _post(client: Any, url: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = client.post(url, body, format="json")
    assert response.status_code == status, response.content
    return response.json()


def _deployment_statements(queries: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """(reads, locked reads, updates) of the deployments table among the captured statements."""
    table = re.compile(r'\bFROM "deployments_deployment"|\bUPDATE "deployments_deployment"')
    mine = [q["sql"] for q in queries if table.search(q["sql"])]
    reads = [sql for sql in mine if sql.lstrip().upper().startswith("SELECT")]
    locked = [sql for sql in reads if "FOR UPDATE" in sql.upper()]
    updates = [sql for sql in mine if sql.lstrip().upper().startswith("UPDATE")]
    return reads, locked, updates


def test_start_reads_the_deployment_twice_locks_it_once_and_writes_it_once(personas: Personas) -> None:
    owner = personas.owner_a
    NodeFactory.create(node_id=NODE, name="GPU 1", actor=owner.principal)
    AIModelFactory.create(model_id="m-1", name="M", version="1", node_id=NODE, actor=owner.principal)
    DeploymentFactory.create(
        deployment_id="d-1", name="D", model_id="m-1", node_id=NODE, hardware_profile="cpu", actor=owner.principal
    )

    with CaptureQueriesContext(connection) as captured:
        body = _post(owner, "/api/deployments/d-1/start", {}, 200)

    assert body["deployment"]["status"] == "pending"
    assert [e["event"] for e in body["deployment"]["events"]] == ["start.requested"]
    reads, locked, updates = _deployment_statements(captured.captured_queries)
    # The view's scoped lookup, then the workflow's locked read; the response is built from that row.
    assert len(reads) == 2, reads
    # SQLite has no row locks (Django drops FOR UPDATE there); PostgreSQL shows the one lock.
    assert len(locked) == (1 if connection.vendor == "postgresql" else 0), locked
    # Status and the start.requested event in one UPDATE.
    assert len(updates) == 1, updates


@pytest.mark.parametrize(
    ("framework", "backend", "args", "sent"),
    [
        ("gguf", "", [], {"backend": "llama.cpp"}),  # the framework decides
        ("pytorch", "", [], {}),  # nobody decides: the node's agent looks at the files
        ("gguf", "vllm", ["--max-model-len", "4096"], {"backend": "vllm", "args": ["--max-model-len", "4096"]}),
    ],
)
def test_start_tells_the_node_which_model_server_to_run(
    personas: Personas, framework: str, backend: str, args: list[str], sent: dict[str, Any]
) -> None:
    """The deployment's own backend (and its arguments) over the one its model's framework implies."""
    from nodes.models import NodeCommand

    owner = personas.owner_a
    NodeFactory.create(node_id=NODE, actor=owner.principal)
    AIModelFactory.create(
        model_id="m1", name="M", framework=framework, node_id=NODE, is_downloaded=True, actor=owner.principal
    )
    deployment = DeploymentFactory.create(deployment_id="d1", model_id="m1", node_id=NODE, actor=owner.principal)
    response = owner.patch(
        f"/api/deployments/{deployment.pk}", {"backend": backend, "backendArgs": args}, format="json"
    )
    assert response.status_code == 200, response.content
    _post(owner, f"/api/deployments/{deployment.pk}/start", {}, 200)
    data = NodeCommand.objects.get(type="deployment.start").data
    assert {k: data[k] for k in ("backend", "args") if k in data} == sent
    assert data["modelName"] == "m1" and data["framework"] == framework
