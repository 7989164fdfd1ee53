"""The Deployments REST contract: the generic entity checks, populated model/node, and the server-kept event log."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.models import Deployment
from deployments.services import deployment_set_state
from tests.support.api import EntityAPIContract, assert_error
from tests.support.factories import AIModelFactory, NodeFactory
from tests.support.personas import PersonaClient, Personas

URL = "/api/deployments"


class TestDeploymentsAPI(EntityAPIContract):
    url = URL
    label = "Deployment"
    business_id = "deploymentId"
    required_fields = ["deploymentId", "name", "modelId", "nodeId"]
    update_body = {"status": "running", "replicas": 3, "totalInferences": 5000}
    # Populated copies of the model and node records, not fields of the deployment.
    ignored_on_write = {"updatedAt", "model", "node"}
    filter_cases = [
        ("status", "running", {"status": "running"}, {"status": "stopped"}),
        ("environment", "staging", {"environment": "staging"}, {"environment": "production"}),
        ("modelId", "mistral-7b", {"modelId": "mistral-7b"}, {"modelId": "llama-2-7b-v1"}),
        ("nodeId", "node-gpu-02", {"nodeId": "node-gpu-02"}, {"nodeId": "node-gpu-01"}),
        # isRunning follows status (docs/decisions.md "Deployments").
        ("isRunning", "true", {"status": "running", "isRunning": True}, {"isRunning": False}),
        ("deploymentType", "batch", {"deploymentType": "batch"}, {"deploymentType": "api"}),
        ("hardwareProfile", "multi-gpu", {"hardwareProfile": "multi-gpu"}, {"hardwareProfile": "cpu"}),
    ]
    invalid_values = [
        ("environment", "qa"),
        ("status", "exploded"),
        ("deploymentType", "cron"),
        ("hardwareProfile", "tpu"),
        ("replicas", 0),
        ("replicas", 65),
        ("replicas", "two"),
        ("containerPort", 0),
        ("containerPort", 65536),
        ("isRunning", "maybe"),
        ("averageLatency", -1),
        ("uptime", -5),
        ("totalInferences", 10**30),
        ("lastHealthCheck", "yesterday"),
        ("name", ""),
        ("deploymentId", "has spaces"),
        ("modelId", ""),
    ]
    reference_fields = ["modelId", "nodeId"]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "deploymentId": f"deploy-llama-{n:03d}",
            "name": f"Llama 2 Deployment {n:03d}",
            "description": "Production deployment for customer chat",
            "environment": "production",
            "status": "pending",
            "modelId": "llama-2-7b-v1",
            "nodeId": "node-gpu-01",
            "deploymentType": "api",
            "replicas": 2,
            "hardwareProfile": "gpu",
        }

    def make_references(self, client: PersonaClient) -> None:
        for node_id, model_id in (("node-gpu-01", "llama-2-7b-v1"), ("node-gpu-02", "mistral-7b")):
            NodeFactory.create(node_id=node_id, actor=client.principal)
            AIModelFactory.create(model_id=model_id, node_id=node_id, actor=client.principal)

    # --- deployment specifics ---
    def test_defaults_are_the_contracts(self, personas: Personas) -> None:
        body = {"deploymentId": "deploy-min", "name": "Minimal", "modelId": "llama-2-7b-v1", "nodeId": "node-gpu-01"}
        response = personas.owner_a.post(URL, body, format="json")
        assert response.status_code == 201, response.json()
        created = response.json()
        assert {k: created[k] for k in body} == body
        assert created["status"] == "pending"
        assert created["environment"] == "development"
        assert created["deploymentType"] == "api"
        assert created["hardwareProfile"] == "gpu"
        assert created["replicas"] == 1
        assert created["isRunning"] is False
        assert created["totalInferences"] == created["averageLatency"] == created["uptime"] == 0
        assert created["events"] == []
        assert created["containerName"] == created["endpoint"] == created["description"] == ""
        assert created["containerPort"] is None and created["lastHealthCheck"] is None

    def test_runtime_fields_are_writable(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        update = {
            "containerName": "llama-prod-01",
            "containerPort": 8080,
            "endpoint": "http://10.10.0.100:8080/v1/chat",
            "lastHealthCheck": "2025-11-16T12:05:00.000Z",
            "averageLatency": 182.5,
            "uptime": 3600,
        }
        response = personas.owner_a.put(f"{URL}/{created['deploymentId']}", update, format="json")
        assert response.status_code == 200, response.json()
        assert {k: response.json()[k] for k in update} == update

    def test_model_and_node_are_populated_on_get_and_list(self, personas: Personas) -> None:
        client = personas.owner_a
        created = self.create(client, 1)
        self.create(client, 2, modelId="mistral-7b", nodeId="node-gpu-02")
        model = client.get("/api/models/llama-2-7b-v1").json()
        node = client.get("/api/nodes/node-gpu-01").json()
        assert created["model"] == model and created["node"] == node
        got = client.get(f"{URL}/{created['_id']}").json()
        assert got["model"] == model and got["node"] == node
        rows = {row["deploymentId"]: row for row in client.get(URL).json()["data"]}
        assert rows["deploy-llama-001"]["model"] == model and rows["deploy-llama-001"]["node"] == node
        assert rows["deploy-llama-002"]["model"]["modelId"] == "mistral-7b"
        assert rows["deploy-llama-002"]["node"]["nodeId"] == "node-gpu-02"

    def test_node_and_model_of_a_live_deployment_cannot_be_deleted(self, personas: Personas) -> None:
        client = personas.owner_a
        self.create(client)
        for url, label in (("/api/nodes/node-gpu-01", "Node"), ("/api/models/llama-2-7b-v1", "Model")):
            body = assert_error(client.delete(url), 409)
            assert body["message"].startswith(f"{label} ")
            assert "1 deployment(s): deploy-llama-001" in body["message"]
            assert "deploymentId: deploy-llama-001" in body["errors"]
        assert client.delete(f"{URL}/deploy-llama-001").status_code == 200
        assert client.delete("/api/models/llama-2-7b-v1").status_code == 200

    def test_populated_reference_is_null_once_gone(self, personas: Personas) -> None:
        # The services refuse such deletes; a row soft-deleted outside them must still read cleanly.
        from nodes.models import Node

        client = personas.owner_a
        created = self.create(client)
        Node.objects.filter(node_id="node-gpu-01").update(is_deleted=True)
        got = client.get(f"{URL}/{created['_id']}").json()
        assert got["node"] is None and got["nodeId"] == "node-gpu-01"
        assert got["model"]["modelId"] == "llama-2-7b-v1"
        assert client.get(URL).json()["data"][0]["node"] is None

    def test_populated_records_never_come_from_another_organization(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        got = personas.owner_a.get(f"{URL}/{created['_id']}").json()
        assert got["node"]["owner"]["orgId"] == got["model"]["owner"]["orgId"] == got["owner"]["orgId"]

    def test_list_with_many_distinct_references_has_constant_queries(self, personas: Personas) -> None:
        client = personas.owner_a

        def list_queries() -> int:
            with CaptureQueriesContext(connection) as ctx:
                assert client.get(URL, {"limit": 100}).status_code == 200
            return len(ctx.captured_queries)

        self.create(client, 1)
        few = list_queries()
        for n in range(3, 9):
            NodeFactory.create(node_id=f"node-gpu-{n:02d}", actor=client.principal)
            AIModelFactory.create(model_id=f"model-{n}", node_id=f"node-gpu-{n:02d}", actor=client.principal)
            self.create(client, n, modelId=f"model-{n}", nodeId=f"node-gpu-{n:02d}")
        assert list_queries() == few

    def test_events_cannot_be_written_by_a_client(self, personas: Personas) -> None:
        client = personas.owner_a
        forged = [{"timestamp": "2025-11-16T12:00:00.000Z", "event": "started", "message": "x", "severity": "info"}]
        body = assert_error(client.post(URL, {**self.valid_body(1), "events": forged}, format="json"), 400)
        assert any(line.startswith("events") for line in body["errors"]), body
        assert self.count(client) == 0
        created = self.create(client)
        body = assert_error(client.put(f"{URL}/{created['_id']}", {"events": forged}, format="json"), 400)
        assert any(line.startswith("events") for line in body["errors"]), body
        assert client.get(f"{URL}/{created['_id']}").json() == created

    def test_recorded_events_are_shown_newest_last_and_bounded(
        self, personas: Personas, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("deployments.services.MAX_EVENTS", 3)
        created = self.create(personas.owner_a)
        deployment = Deployment.objects.get(pk=created["_id"])
        for n in range(5):
            deployment_set_state(
                org_id=deployment.owner_org_id,
                deployment_id=deployment.deployment_id,
                changes={},
                event=f"step-{n}",
                message=f"step {n}",
                severity="warning",
            )
        events = personas.owner_a.get(f"{URL}/{created['_id']}").json()["events"]
        assert [e["event"] for e in events] == ["step-2", "step-3", "step-4"]
        assert events[0]["severity"] == "warning" and events[0]["timestamp"].endswith("Z")
        with pytest.raises(ValueError):
            deployment_set_state(
                org_id=deployment.owner_org_id,
                deployment_id=deployment.deployment_id,
                changes={},
                event="x",
                message="x",
                severity="fatal",
            )

    def test_reference_to_another_organizations_record_is_400(self, personas: Personas) -> None:
        NodeFactory.create(node_id="node-only-in-b", actor=personas.owner_b.principal)
        AIModelFactory.create(model_id="model-only-in-b", node_id="node-only-in-b", actor=personas.owner_b.principal)
        for field, value in (("nodeId", "node-only-in-b"), ("modelId", "model-only-in-b")):
            response = personas.owner_a.post(URL, {**self.valid_body(1), field: value}, format="json")
            body = assert_error(response, 400)
            assert any(line.startswith(field) for line in body["errors"]), body
        created = self.create(personas.owner_a)
        response = personas.owner_a.put(f"{URL}/{created['_id']}", {"nodeId": "node-only-in-b"}, format="json")
        assert_error(response, 400)
        assert personas.owner_a.get(f"{URL}/{created['_id']}").json() == created
