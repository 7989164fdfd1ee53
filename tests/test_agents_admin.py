"""The admin of agents, instructions and tools keeps the API's rules: used instructions stay, shapes hold."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from agents.models import Instruction, Tool
from tests.support.factories import AgentFactory, InstructionFactory, NodeFactory, ToolFactory
from tests.support.personas import Personas

pytestmark = pytest.mark.django_db


def _instruction_with_agent(personas: Personas) -> Instruction:
    actor = personas.owner_a.principal
    NodeFactory.create(node_id="node-gpu-01", name="GPU 1", actor=actor)
    instruction: Instruction = InstructionFactory.create(instruction_id="inst-1", name="I", actor=actor)
    AgentFactory.create(agent_id="agent-1", name="A", instruction_id="inst-1", actor=actor)
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
        {"action": "soft_delete_selected", "_selected_action": [instruction.pk]},
        follow=True,
    )
    assert "agent-1" in response.content.decode()
    assert not Instruction.objects.get(pk=instruction.pk).is_deleted
    assert personas.owner_a.delete("/api/agents/agent-1").status_code == 200
    operator.post(
        "/admin/agents/instruction/", {"action": "soft_delete_selected", "_selected_action": [instruction.pk]}
    )
    row = Instruction.objects.get(pk=instruction.pk)
    assert row.is_deleted and row.updated_by == "admin:ops"


def test_agent_edit_checks_the_new_instruction(operator: Client, personas: Personas) -> None:
    _instruction_with_agent(personas)
    agent = personas.owner_a.get("/api/agents/agent-1").json()
    url = f"/admin/agents/agent/{agent['_id']}/change/"
    data = _change_form_data(operator, url)
    rejected = operator.post(url, {**data, "instruction_id": "no-such-instruction"})
    assert rejected.status_code == 200 and rejected.context["adminform"].form.errors
    InstructionFactory.create(instruction_id="inst-2", name="I2", actor=personas.owner_a.principal)
    accepted = operator.post(url, {**data, "instruction_id": "inst-2"})
    assert accepted.status_code == 302
    updated = personas.owner_a.get("/api/agents/agent-1").json()
    assert updated["instructionId"] == "inst-2" and updated["updatedBy"] == "admin:ops"


def test_tool_edit_holds_json_fields_to_their_shapes(operator: Client, personas: Personas) -> None:
    tool = ToolFactory.create(tool_id="tool-1", name="T", type="api", actor=personas.owner_a.principal)
    url = f"/admin/agents/tool/{tool.pk}/change/"
    data = _change_form_data(operator, url)
    bad = operator.post(url, {**data, "parameters": json.dumps({"properties": {}})})
    assert bad.status_code == 200
    assert "type is required." in str(bad.context["adminform"].form.errors["parameters"])
    assert Tool.objects.get(pk=tool.pk).parameters == tool.parameters
    good = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    assert operator.post(url, {**data, "parameters": json.dumps(good)}).status_code == 302
    assert personas.owner_a.get(f"/api/tools/{tool.pk}").json()["parameters"] == good
