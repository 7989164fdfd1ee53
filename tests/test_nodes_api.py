"""The Nodes REST contract, checked by the generic entity mixin plus node specifics."""

from __future__ import annotations

from typing import Any

from tests.support.api import EntityAPIContract, assert_error
from tests.support.personas import Personas


class TestNodesAPI(EntityAPIContract):
    url = "/api/nodes"
    label = "Node"
    business_id = "nodeId"
    required_fields = ["nodeId", "name", "cpuCores"]
    update_body = {"name": "GPU Server 1 - Updated", "status": "maintenance", "ramFree": 30000}
    # Telemetry: moves with every heartbeat, so a copy sent back is stale, not a write.
    ignored_on_write = {
        "updatedAt",
        "websocketConnected",
        "lastHeartbeat",
        "hostname",
        "ipAddress",
        "publicIpAddress",
        "os",
        "cpuModel",
        "diskTotal",
        "daemonVersion",
        "uptimeSeconds",
        "containerRuntime",
        "registeredAt",
        "cpuUsage",
        "activeDeployments",
    }
    filter_cases = [
        ("status", "online", {"status": "online"}, {"status": "offline"}),
        ("isLocal", "true", {"isLocal": True}, {"isLocal": False}),
        ("role", "storage", {"role": ["worker", "storage"]}, {"role": ["worker"]}),
    ]
    invalid_values = [
        ("status", "exploded"),
        ("role", ["worker", "chef"]),
        ("cpuCores", "sixteen"),
        ("cpuCores", 10**30),
        ("isLocal", "maybe"),
        ("name", ""),
        ("gpuDevices", [{"model": "no device id"}]),
        ("nodeId", "has spaces"),
    ]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "nodeId": f"node-gpu-{n:02d}",
            "name": f"GPU Server {n}",
            "role": ["worker"],
            "status": "offline",
            "isLocal": True,
            "cpuCores": 16,
            "ramTotal": 65536,
            "ramFree": 32768,
        }

    def test_put_is_as_strict_as_post_inside_nested_objects(self, personas: Personas) -> None:
        # A partial update must not store a GPU device without its deviceId (later reads would break).
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        body = assert_error(personas.owner_a.put(url, {"gpuDevices": [{"model": "x"}]}, format="json"), 400)
        assert body["errors"] == ["gpuDevices[0].deviceId is required."]
        assert personas.owner_a.get(url).json() == created

    def test_a_node_in_use_cannot_be_deleted(self, personas: Personas) -> None:
        # Models and agents on the node would point at nothing; the 409 names them.
        client = personas.owner_a
        self.create(client)
        model = {"modelId": "llama", "name": "Llama", "type": "llm", "framework": "pytorch", "nodeId": "node-gpu-01"}
        assert client.post("/api/models", model, format="json").status_code == 201
        agent = {"agentId": "agent-1", "name": "Agent", "nodeId": "node-gpu-01"}
        assert client.post("/api/agents", agent, format="json").status_code == 201
        body = assert_error(client.delete("/api/nodes/node-gpu-01"), 409)
        assert "1 model(s): llama" in body["message"] and "1 agent(s): agent-1" in body["message"]
        assert sorted(body["errors"]) == ["agentId: agent-1", "modelId: llama"]
        assert client.get("/api/nodes/node-gpu-01").status_code == 200
        assert client.delete("/api/agents/agent-1").status_code == 200
        assert client.delete("/api/models/llama").status_code == 200
        assert client.delete("/api/nodes/node-gpu-01").status_code == 200
