"""The Instructions REST contract (/api/instructions), and the rule that a used instruction stays."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection

from agents.models import Agent, Instruction
from aiwm_project import services as shared_services
from aiwm_project.auth import Principal
from aiwm_project.exceptions import ConflictError, ValidationFailed
from tests.support.api import EntityAPIContract, assert_error
from tests.support.factories import AgentFactory, InstructionFactory, NodeFactory
from tests.support.personas import ORG_A, PersonaClient, Personas

SYSTEM_PROMPT = (
    "You are a helpful customer support agent. Always be polite, professional, and empathetic. "
    "Your goal is to resolve customer issues efficiently while maintaining a positive experience."
)


class TestInstructionsAPI(EntityAPIContract):
    url = "/api/instructions"
    label = "Instruction"
    business_id = "instructionId"
    required_fields = ["instructionId", "name", "systemPrompt"]
    update_body = {
        "name": "Customer Support Agent v2",
        "systemPrompt": "Updated system prompt...",
        "guidelines": ["New guideline 1", "New guideline 2"],
        "tags": ["customer-service", "support", "empathetic"],
    }
    filter_cases = [
        ("isActive", "false", {"isActive": False}, {"isActive": True}),
        ("tags", "polite", {"tags": ["support", "polite"]}, {"tags": ["support"]}),
    ]
    invalid_values = [
        ("systemPrompt", ""),
        ("systemPrompt", None),
        ("guidelines", "be nice"),
        ("guidelines", [{"rule": 1}]),
        ("tags", [""]),
        ("isActive", "maybe"),
        ("name", ""),
        ("instructionId", "has spaces"),
    ]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "instructionId": f"inst-cs-agent-v{n}",
            "name": f"Customer Support Agent v{n}",
            "description": "Instructions for customer support AI agent",
            "systemPrompt": SYSTEM_PROMPT,
            "guidelines": ["Always greet customers warmly", "Escalate complex issues to human agents"],
            "tags": ["customer-service", "support", "polite"],
            "isActive": True,
        }

    def make_references(self, client: PersonaClient) -> None:
        # Not referenced by an instruction; the agents of the delete-rule tests run on this node.
        NodeFactory.create(node_id="node-gpu-01", name="GPU 1", actor=client.principal)

    # --- instruction specifics ---
    def test_defaults(self, personas: Personas) -> None:
        response = personas.owner_a.post(
            self.url, {"instructionId": "i-1", "name": "I", "systemPrompt": "Be brief."}, format="json"
        )
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["guidelines"] == [] and body["tags"] == [] and body["isActive"] is True
        assert body["description"] == ""

    def test_delete_of_an_instruction_used_by_live_agents_is_409_naming_them(self, personas: Personas) -> None:
        instruction = self.create(personas.owner_a)
        AgentFactory.create(
            agent_id="agent-b", instruction_id=instruction["instructionId"], actor=personas.owner_a.principal
        )
        AgentFactory.create(
            agent_id="agent-a", instruction_id=instruction["instructionId"], actor=personas.owner_a.principal
        )
        body = assert_error(
            personas.owner_a.delete(f"{self.url}/{instruction['_id']}"), 409, self.url + "/" + instruction["_id"]
        )
        assert body["message"] == (
            "Instruction 'inst-cs-agent-v1' is used by 2 agent(s): agent-a, agent-b; "
            "reassign or delete them before you delete it"
        )
        assert body["errors"] == ["agentId: agent-a", "agentId: agent-b"]
        # Nothing changed: the instruction is still there, and so are the agents' references.
        assert personas.owner_a.get(f"{self.url}/{instruction['_id']}").json() == instruction
        assert personas.owner_a.get("/api/agents/agent-a").json()["instructionId"] == "inst-cs-agent-v1"

    def test_delete_succeeds_once_agents_are_reassigned_or_deleted(self, personas: Personas) -> None:
        instruction = self.create(personas.owner_a)
        AgentFactory.create(
            agent_id="agent-a", instruction_id=instruction["instructionId"], actor=personas.owner_a.principal
        )
        AgentFactory.create(
            agent_id="agent-b", instruction_id=instruction["instructionId"], actor=personas.owner_a.principal
        )
        assert personas.owner_a.put("/api/agents/agent-a", {"instructionId": None}, format="json").status_code == 200
        assert_error(personas.owner_a.delete(f"{self.url}/{instruction['_id']}"), 409)
        assert personas.owner_a.delete("/api/agents/agent-b").status_code == 200
        response = personas.owner_a.delete(f"{self.url}/{instruction['_id']}")
        assert response.status_code == 200
        assert response.json()["message"] == "Instruction deleted successfully"

    def test_agents_of_another_organization_do_not_block_the_delete(self, personas: Personas) -> None:
        mine = self.create(personas.owner_a)
        self.create(personas.owner_b)  # same instructionId in org B
        AgentFactory.create(agent_id="agent-b1", instruction_id=mine["instructionId"], actor=personas.owner_b.principal)
        assert personas.owner_a.delete(f"{self.url}/{mine['_id']}").status_code == 200
        assert personas.owner_b.get("/api/instructions/inst-cs-agent-v1").status_code == 200

    def test_a_long_list_of_users_is_cut_but_counted(self, personas: Personas) -> None:
        instruction = self.create(personas.owner_a)
        for n in range(12):
            AgentFactory.create(
                agent_id=f"agent-{n:02d}", instruction_id=instruction["instructionId"], actor=personas.owner_a.principal
            )
        body = assert_error(personas.owner_a.delete(f"{self.url}/{instruction['_id']}"), 409)
        assert "used by 12 agent(s): agent-00, agent-01" in body["message"]
        assert "agent-09 and 2 more;" in body["message"]
        assert len(body["errors"]) == 10

    def test_the_instruction_id_cannot_be_changed(self, personas: Personas) -> None:
        # Agents refer to it by this id: a rename would leave them pointing at nothing.
        instruction = self.create(personas.owner_a)
        url = f"{self.url}/{instruction['_id']}"
        body = assert_error(personas.owner_a.put(url, {"instructionId": "inst-renamed"}, format="json"), 400)
        assert body["errors"] == ["instructionId: cannot be changed (other records refer to it)"]
        assert personas.owner_a.get(url).json() == instruction
        # Sending it unchanged alongside other fields is fine.
        response = personas.owner_a.put(url, {"name": "v2", "instructionId": "inst-cs-agent-v1"}, format="json")
        assert response.status_code == 200


# --- the same rule under concurrency (PostgreSQL only: SQLite ignores row locks) ---

ACTOR = Principal(user_id="68dcf365f6a92c0d4911b619", org_id=ORG_A, roles=("organization.owner",))


def _setup_node_and_instruction() -> Instruction:
    NodeFactory.create(node_id="node-1", name="n", cpu_cores=1, actor=ACTOR)
    return InstructionFactory.create(instruction_id="inst-1", name="i", system_prompt="p", actor=ACTOR)


def _in_thread(target: Any, outcome: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            outcome["result"] = target()
        except Exception as exc:  # the test asserts on whatever the service raised
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _pause_after(monkeypatch: pytest.MonkeyPatch, name: str, reached: threading.Event) -> None:
    """Run the shared helper `name`, then signal and wait while the caller's transaction holds its locks."""
    original = getattr(shared_services, name)

    def paused(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        reached.set()
        time.sleep(0.5)
        return result

    monkeypatch.setattr(shared_services, name, paused)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_delete_waits_for_an_agent_being_created_with_the_instruction_then_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instruction = _setup_node_and_instruction()
    reached = threading.Event()
    _pause_after(monkeypatch, "validate_references", reached)
    outcome: dict[str, Any] = {}
    data = {"agent_id": "agent-1", "name": "a", "node_id": "node-1", "instruction_id": "inst-1"}
    thread = _in_thread(lambda: shared_services.entity_create(model=Agent, data=data, actor=ACTOR), outcome)
    assert reached.wait(5)
    with pytest.raises(ConflictError, match="agent-1"):
        shared_services.entity_delete(instance=instruction, actor=ACTOR)
    thread.join(10)
    assert "error" not in outcome, outcome
    assert Instruction.objects.for_org(ORG_A).filter(instruction_id="inst-1").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_agent_create_waits_for_a_delete_in_progress_then_sees_the_instruction_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instruction = _setup_node_and_instruction()
    reached = threading.Event()
    _pause_after(monkeypatch, "refuse_if_referenced", reached)
    outcome: dict[str, Any] = {}
    thread = _in_thread(lambda: shared_services.entity_delete(instance=instruction, actor=ACTOR), outcome)
    assert reached.wait(5)
    data = {"agent_id": "agent-1", "name": "a", "node_id": "node-1", "instruction_id": "inst-1"}
    with pytest.raises(ValidationFailed) as failure:
        shared_services.entity_create(model=Agent, data=data, actor=ACTOR)
    assert failure.value.errors == ["instructionId: Instruction 'inst-1' does not exist"]
    thread.join(10)
    assert "error" not in outcome, outcome
    assert not Agent.objects.for_org(ORG_A).exists()
