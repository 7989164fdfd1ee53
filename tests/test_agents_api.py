"""The Agents REST contract (/api/agents), plus `?populate=instruction` and reference rules."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Instruction
from tests.support.api import EntityAPIContract, assert_error
from tests.support.factories import InstructionFactory, NodeFactory
from tests.support.personas import PersonaClient, Personas


class TestAgentsAPI(EntityAPIContract):
    url = "/api/agents"
    label = "Agent"
    business_id = "agentId"
    required_fields = ["agentId", "name", "nodeId"]
    update_body = {"status": "busy", "completedTasks": 150, "averageResponseTime": 1200}
    filter_cases = [
        ("status", "busy", {"status": "busy"}, {"status": "active"}),
        ("nodeId", "node-gpu-02", {"nodeId": "node-gpu-02"}, {"nodeId": "node-gpu-01"}),
        ("role", "analyst", {"role": "analyst"}, {"role": "assistant"}),
        ("instructionId", "inst-2", {"instructionId": "inst-2"}, {"instructionId": "inst-1"}),
        ("isActive", "false", {"isActive": False}, {"isActive": True}),
        ("tags", "billing", {"tags": ["support", "billing"]}, {"tags": ["support"]}),
        ("capabilities", "code", {"capabilities": ["chat", "code"]}, {"capabilities": ["chat"]}),
    ]
    invalid_values = [
        ("status", "sleeping"),
        ("capabilities", "chat"),
        ("permissions", [""]),
        ("totalTasks", -1),
        ("completedTasks", "many"),
        ("averageLatency", -0.5),
        ("lastHeartbeat", "yesterday"),
        ("role", ""),
        ("name", ""),
        ("nodeId", None),
        ("agentId", "has spaces"),
    ]
    reference_fields = ["nodeId", "instructionId"]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "agentId": f"agent-assistant-{n:02d}",
            "name": f"Customer Support Agent {n}",
            "description": "AI agent for customer support",
            "role": "assistant",
            "status": "active",
            "capabilities": ["chat", "email", "ticketing"],
            "nodeId": "node-gpu-01",
            "instructionId": "inst-1",
            "permissions": ["read:tickets", "write:responses"],
            "tags": ["support", "customer-service"],
        }

    def make_references(self, client: PersonaClient) -> None:
        for node_id in ("node-gpu-01", "node-gpu-02"):
            NodeFactory.create(node_id=node_id, actor=client.principal)
        for n in (1, 2):
            InstructionFactory.create(
                instruction_id=f"inst-{n}", name=f"Instruction {n}", system_prompt=f"Prompt {n}", actor=client.principal
            )

    # --- defaults and references ---
    def test_contract_defaults(self, personas: Personas) -> None:
        response = personas.owner_a.post(
            self.url, {"agentId": "a-1", "name": "A", "nodeId": "node-gpu-01"}, format="json"
        )
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["role"] == "assistant" and body["status"] == "active" and body["isActive"] is True
        for counter in ("totalTasks", "completedTasks", "failedTasks", "averageResponseTime", "averageLatency"):
            assert body[counter] == 0, counter
        assert body["lastTask"] is None and body["lastHeartbeat"] is None and body["instructionId"] is None
        assert body["capabilities"] == body["permissions"] == body["tags"] == []
        assert "instruction" not in body

    def test_blank_instruction_means_none(self, personas: Personas) -> None:
        assert self.create(personas.owner_a, 1, instructionId="")["instructionId"] is None
        assert self.create(personas.owner_a, 2, instructionId=None)["instructionId"] is None

    def test_heartbeat_and_last_task_are_iso_datetimes(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        response = personas.owner_a.put(
            f"{self.url}/{created['_id']}",
            {"lastHeartbeat": "2025-11-16T11:35:00+02:00", "lastTask": "2025-11-16T09:00:00.123Z"},
            format="json",
        )
        assert response.status_code == 200, response.json()
        assert response.json()["lastHeartbeat"] == "2025-11-16T09:35:00.000Z"
        assert response.json()["lastTask"] == "2025-11-16T09:00:00.123Z"

    def test_put_to_an_unknown_reference_is_400_and_changes_nothing(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        for field in ("nodeId", "instructionId"):
            body = assert_error(
                personas.owner_a.put(url, {field: "no-such-record", "status": "busy"}, format="json"), 400
            )
            assert any(line.startswith(field) for line in body["errors"]), body
        # A record of another organization is as unknown as a missing one.
        InstructionFactory.create(instruction_id="inst-only-b", name="B", actor=personas.owner_b.principal)
        assert_error(personas.owner_a.put(url, {"instructionId": "inst-only-b"}, format="json"), 400)
        assert personas.owner_a.get(url).json() == created

    def test_put_changes_the_instruction_and_clears_it(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        url = f"{self.url}/{created['_id']}"
        assert personas.owner_a.put(url, {"instructionId": "inst-2"}, format="json").json()["instructionId"] == "inst-2"
        assert personas.owner_a.put(url, {"instructionId": None}, format="json").json()["instructionId"] is None

    def test_instruction_sent_in_a_body_is_ignored(self, personas: Personas) -> None:
        created = self.create(personas.owner_a, instruction={"instructionId": "inst-2", "name": "forged"})
        assert "instruction" not in created and created["instructionId"] == "inst-1"

    # --- populate ---
    def test_populate_instruction_adds_the_full_instruction(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        instruction = personas.owner_a.get("/api/instructions/inst-1").json()
        for identifier in (created["_id"], created["agentId"]):
            body = personas.owner_a.get(f"{self.url}/{identifier}", {"populate": "instruction"}).json()
            assert body["instruction"] == instruction
            assert {k: v for k, v in body.items() if k != "instruction"} == created
        assert "instruction" not in personas.owner_a.get(f"{self.url}/{created['_id']}").json()

    def test_populate_is_null_without_instruction_or_when_it_is_gone(self, personas: Personas) -> None:
        without = self.create(personas.owner_a, 1, instructionId=None)
        with_one = self.create(personas.owner_a, 2)
        params = {"populate": "instruction"}
        assert personas.owner_a.get(f"{self.url}/{without['_id']}", params).json()["instruction"] is None
        # The API refuses to delete a used instruction; a row removed behind its back reads as null.
        Instruction.objects.filter(instruction_id="inst-1").update(is_deleted=True)
        assert personas.owner_a.get(f"{self.url}/{with_one['_id']}", params).json()["instruction"] is None

    def test_populate_on_the_list_loads_instructions_in_one_query(self, personas: Personas) -> None:
        def list_with_populate() -> tuple[int, list[dict]]:
            with CaptureQueriesContext(connection) as ctx:
                response = personas.owner_a.get(self.url, {"populate": "instruction", "limit": "100"})
            assert response.status_code == 200, response.json()
            return len(ctx.captured_queries), response.json()["data"]

        self.create(personas.owner_a, 1)
        few, _ = list_with_populate()
        for n in range(2, 9):
            self.create(personas.owner_a, n, instructionId="inst-2" if n % 2 else "inst-1")
        self.create(personas.owner_a, 9, instructionId=None)
        many, rows = list_with_populate()
        assert many == few
        by_agent = {row["agentId"]: row["instruction"] for row in rows}
        assert by_agent["agent-assistant-09"] is None
        assert by_agent["agent-assistant-03"]["instructionId"] == "inst-2"
        assert by_agent["agent-assistant-04"]["instructionId"] == "inst-1"
        assert by_agent["agent-assistant-04"]["systemPrompt"] == "Prompt 1"
        plain = personas.owner_a.get(self.url).json()["data"]
        assert all("instruction" not in row for row in plain)

    def test_unknown_populate_is_400(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        for value in ("node", "instruction,owner", "INSTRUCTION"):
            body = assert_error(personas.owner_a.get(self.url, {"populate": value}), 400, self.url)
            assert body["errors"][0].startswith("populate: unknown relation"), body
            assert_error(personas.owner_a.get(f"{self.url}/{created['_id']}", {"populate": value}), 400)
        # An empty value asks for nothing.
        assert "instruction" not in personas.owner_a.get(f"{self.url}/{created['_id']}", {"populate": ""}).json()

    def test_populate_never_reaches_another_organization(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        assert_error(personas.owner_b.get(f"{self.url}/{created['_id']}", {"populate": "instruction"}), 404)
        mine = personas.owner_a.get(f"{self.url}/{created['_id']}", {"populate": "instruction"}).json()
        assert mine["instruction"]["owner"]["orgId"] == created["owner"]["orgId"]
