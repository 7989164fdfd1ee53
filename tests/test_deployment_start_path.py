"""The deployment start path does each thing once: one locked read of the deployment, and its
state change and event written by the same statement."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

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


def test_start_reads_the_deployment_twice_locks_it_once_and_writes_it_once(personas: Any) -> None:
    owner = personas.owner_a
    _post(owner, "/api/nodes", {"nodeId": NODE, "name": "GPU 1", "cpuCores": 16}, 201)
    model = {"modelId": "m-1", "name": "M", "version": "1", "type": "llm", "framework": "pytorch", "nodeId": NODE}
    _post(owner, "/api/models", model, 201)
    deployment = {"deploymentId": "d-1", "name": "D", "modelId": "m-1", "nodeId": NODE, "hardwareProfile": "cpu"}
    _post(owner, "/api/deployments", deployment, 201)

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
