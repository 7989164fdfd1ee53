"""The admin of agents, instructions and tools keeps the API's rules: used instructions stay, shapes hold."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import Instruction, Tool
from tests.conftest import Personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def _post(personas: Personas, url: str, body: dict) -> dict:
    response = personas.owner_a.post(url, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _instruction_with_agent(personas: Personas) -> dict:
    _post(personas, "/api/nodes", {"nodeId": "node-gpu-01", "name": "GPU 1", "cpuCores": 8})
    instruction = _post(personas, "/api/instructions", {"instructionId": "inst-1", "name": "I", "systemPrompt": "p"})
    _post(
        personas, "/api/agents", {"agentId": "agent-1", "name": "A", "nodeId": "node-gpu-01", "instructionId": "inst-1"}
    )
    return instruction


def _change_form_data(operator: Client, url: str) -> dict:
    form = operator.get(url).context["adminform"].form
    return {name: form[name].value() for name in form.fields if form[name].value() is not None}


def test_soft_delete_of_a_used_instruction_is_refused_with_the_agents_named(
    operator: Client, personas: Personas
) -> None:
    instruction = _instruction_with_agent(personas)
    response = operator.post(
        "/admin/agents/instruction/",
        {"action": "soft_delete_selected", "_selected_action": [instruction["_id"]]},
        follow=True,
    )
    assert "agent-1" in response.content.decode()
    assert not Instruction.objects.get(pk=instruction["_id"]).is_deleted
    assert personas.owner_a.delete("/api/agents/agent-1").status_code == 200
    operator.post(
        "/admin/agents/instruction/", {"action": "soft_delete_selected", "_selected_action": [instruction["_id"]]}
    )
    row = Instruction.objects.get(pk=instruction["_id"])
    assert row.is_deleted and row.updated_by == "admin:ops"


def test_agent_edit_checks_the_new_instruction(operator: Client, personas: Personas) -> None:
    _instruction_with_agent(personas)
    agent = personas.owner_a.get("/api/agents/agent-1").json()
    url = f"/admin/agents/agent/{agent['_id']}/change/"
    data = _change_form_data(operator, url)
    rejected = operator.post(url, {**data, "instruction_id": "no-such-instruction"})
    assert rejected.status_code == 200 and rejected.context["adminform"].form.errors
    _post(personas, "/api/instructions", {"instructionId": "inst-2", "name": "I2", "systemPrompt": "p"})
    accepted = operator.post(url, {**data, "instruction_id": "inst-2"})
    assert accepted.status_code == 302
    updated = personas.owner_a.get("/api/agents/agent-1").json()
    assert updated["instructionId"] == "inst-2" and updated["updatedBy"] == "admin:ops"


def test_tool_edit_holds_json_fields_to_their_shapes(operator: Client, personas: Personas) -> None:
    tool = _post(personas, "/api/tools", {"toolId": "tool-1", "name": "T", "type": "api"})
    url = f"/admin/agents/tool/{tool['_id']}/change/"
    data = _change_form_data(operator, url)
    bad = operator.post(url, {**data, "parameters": json.dumps({"properties": {}})})
    assert bad.status_code == 200
    assert "type is required." in str(bad.context["adminform"].form.errors["parameters"])
    assert Tool.objects.get(pk=tool["_id"]).parameters == tool["parameters"]
    good = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    assert operator.post(url, {**data, "parameters": json.dumps(good)}).status_code == 302
    assert personas.owner_a.get(f"/api/tools/{tool['_id']}").json()["parameters"] == good
