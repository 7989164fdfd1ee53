"""The Models REST contract (/api/models), checked by the generic entity mixin plus model specifics."""

from __future__ import annotations

from typing import Any

from tests.support.api import EntityAPIContract, assert_error
from tests.support.factories import NodeFactory
from tests.support.personas import PersonaClient, Personas

CONTRACT_REQUEST = {
    "modelId": "llama-2-7b-v1",
    "name": "Llama 2 7B",
    "description": "Meta's Llama 2 7B parameter model",
    "version": "1.0.0",
    "type": "llm",
    "framework": "pytorch",
    "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
    "fileName": "model.safetensors",
    "fileSize": 13476875264,
    "nodeId": "node-gpu-01",
    "tags": ["llm", "chat", "meta"],
}


class TestModelsAPI(EntityAPIContract):
    url = "/api/models"
    label = "Model"
    business_id = "modelId"
    required_fields = ["modelId", "name", "type", "framework"]
    update_body = {"status": "downloading", "downloadProgress": 45, "isDownloaded": False}
    filter_cases = [
        ("type", "embedding", {"type": "embedding"}, {"type": "llm"}),
        ("framework", "onnx", {"framework": "onnx"}, {"framework": "pytorch"}),
        ("nodeId", "node-gpu-02", {"nodeId": "node-gpu-02"}, {"nodeId": "node-gpu-01"}),
        ("isDownloaded", "true", {"isDownloaded": True}, {"isDownloaded": False}),
        ("status", "ready", {"status": "ready"}, {"status": "queued"}),
        ("isActive", "false", {"isActive": False}, {"isActive": True}),
        ("tags", "chat", {"tags": ["llm", "chat"]}, {"tags": ["llm"]}),
    ]
    invalid_values = [
        ("type", "gan"),
        ("framework", "jax"),
        ("status", "done"),
        ("fileSize", -1),
        ("fileSize", "big"),
        ("fileSize", 10**30),
        ("downloadProgress", 101),
        ("downloadProgress", -1),
        ("isDownloaded", "maybe"),
        ("isActive", "yes please"),
        ("totalTokens", -5),
        ("tags", "llm"),
        ("tags", [""]),
        ("name", ""),
        ("modelId", "has spaces"),
    ]
    reference_fields = ["nodeId"]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "modelId": f"llama-2-7b-v{n}",
            "name": f"Llama 2 7B #{n}",
            "description": "Meta's Llama 2 7B parameter model",
            "version": "1.0.0",
            "type": "llm",
            "framework": "pytorch",
            "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
            "fileName": "model.safetensors",
            "fileSize": 13476875264,
            "nodeId": "node-gpu-01",
            "tags": ["llm", "chat", "meta"],
        }

    def make_references(self, client: PersonaClient) -> None:
        NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
        NodeFactory.create(node_id="node-gpu-02", actor=client.principal)

    # --- model specifics ---
    def test_contract_request_gets_the_contract_defaults(self, personas: Personas) -> None:
        response = personas.owner_a.post(self.url, CONTRACT_REQUEST, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert {key: body[key] for key in CONTRACT_REQUEST} == CONTRACT_REQUEST
        assert body["isDownloaded"] is False
        assert body["downloadProgress"] == 0
        assert body["status"] == "queued"
        assert body["totalInference"] == body["totalTokens"] == body["totalProcessingTime"] == 0
        assert body["isActive"] is True
        assert body["downloadPath"] == ""

    def test_minimal_model_has_no_node_and_no_tags(self, personas: Personas) -> None:
        response = personas.owner_a.post(
            self.url, {"modelId": "m-1", "name": "M", "type": "embedding", "framework": "onnx"}, format="json"
        )
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["nodeId"] is None and body["tags"] == [] and body["fileSize"] == 0
        assert body["description"] == body["version"] == body["repository"] == ""

    def test_blank_or_null_node_means_unassigned(self, personas: Personas) -> None:
        assert self.create(personas.owner_a, 1, nodeId="")["nodeId"] is None
        assert self.create(personas.owner_a, 2, nodeId=None)["nodeId"] is None
        assert personas.owner_a.get(self.url, {"filter[nodeId]": "node-gpu-01"}).json()["pagination"]["total"] == 0

    def test_node_of_another_organization_or_deleted_is_400(self, personas: Personas) -> None:
        NodeFactory.create(node_id="node-only-in-b", actor=personas.owner_b.principal)
        body = assert_error(
            personas.owner_a.post(self.url, self.valid_body(1) | {"nodeId": "node-only-in-b"}, format="json"), 400
        )
        assert body["errors"] == ["nodeId: Node 'node-only-in-b' does not exist"]
        assert personas.owner_a.delete("/api/nodes/node-gpu-02").status_code == 200
        assert_error(
            personas.owner_a.post(self.url, self.valid_body(1) | {"nodeId": "node-gpu-02"}, format="json"), 400
        )
        assert self.count(personas.owner_a) == 0

    def test_put_to_unknown_node_is_400_and_changes_nothing(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        response = personas.owner_a.put(
            f"{self.url}/{created['_id']}", {"nodeId": "no-such-node", "name": "Renamed"}, format="json"
        )
        body = assert_error(response, 400)
        assert any(line.startswith("nodeId") for line in body["errors"])
        assert personas.owner_a.get(f"{self.url}/{created['_id']}").json() == created

    def test_put_moves_and_unassigns_the_node(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        moved = personas.owner_a.put(f"{self.url}/{created['_id']}", {"nodeId": "node-gpu-02"}, format="json")
        assert moved.status_code == 200 and moved.json()["nodeId"] == "node-gpu-02"
        cleared = personas.owner_a.put(f"{self.url}/{created['_id']}", {"nodeId": None}, format="json")
        assert cleared.status_code == 200 and cleared.json()["nodeId"] is None

    def test_download_progress_is_a_percentage(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        for value in (0, 45.5, 100):
            response = personas.owner_a.put(url, {"downloadProgress": value}, format="json")
            assert response.status_code == 200 and response.json()["downloadProgress"] == value
        assert_error(personas.owner_a.put(url, {"downloadProgress": 100.01}, format="json"), 400)

    def test_filters_combine_as_in_the_contract(self, personas: Personas) -> None:
        hit = self.create(personas.owner_a, 1, nodeId="node-gpu-01", isDownloaded=True)
        self.create(personas.owner_a, 2, nodeId="node-gpu-01", isDownloaded=False)
        self.create(personas.owner_a, 3, nodeId="node-gpu-02", isDownloaded=True)
        response = personas.owner_a.get(self.url, {"filter[nodeId]": "node-gpu-01", "filter[isDownloaded]": "true"})
        assert [row["_id"] for row in response.json()["data"]] == [hit["_id"]]
        assert_error(personas.owner_a.get(self.url, {"filter[type]": "gan"}), 400)
