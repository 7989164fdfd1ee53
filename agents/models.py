"""Agents, the Instructions that shape their behavior, and the Tools they may call."""

from __future__ import annotations

from typing import Any

from django.db import models

from agents.choices import AgentStatus, ToolParametersType, ToolResponseType, ToolStatus, ToolType
from aiwm_project.models import OwnedModel, tenant_constraints, tenant_indexes


class Instruction(OwnedModel):
    business_id_field = "instruction_id"
    entity_label = "Instruction"

    instruction_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    system_prompt = models.TextField()
    guidelines = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = tenant_constraints("instruction", "instruction_id")
        indexes = tenant_indexes("instruction")


class Agent(OwnedModel):
    business_id_field = "agent_id"
    entity_label = "Agent"
    # tool_ids is a list reference: each id must name a tool of the organization when written.
    references = {
        "node_id": "nodes.Node",
        "instruction_id": "agents.Instruction",
        "model_id": "models_registry.AIModel",
        "tool_ids": "agents.Tool",
    }
    # A tool may be deleted while agents list it (a conversation skips tools that are gone); the
    # model a conversation falls back to may not.
    protected_references = frozenset({"node_id", "instruction_id", "model_id"})

    agent_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    # Free text: the contract names "assistant" and "analyst" only as examples.
    role = models.CharField(max_length=64, default="assistant")
    status = models.CharField(max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    capabilities = models.JSONField(default=list, blank=True)
    # Optional, so "no instruction" is NULL (not "").
    instruction_id = models.CharField(max_length=128, null=True, blank=True, default=None)
    node_id = models.CharField(max_length=128)
    # The model its conversations call when they name none (POST /api/conversations/:id/chat).
    model_id = models.CharField(max_length=128, null=True, blank=True, default=None)
    # The tools offered to the model in its conversations, by toolId.
    tool_ids = models.JSONField(default=list, blank=True)
    total_tasks = models.BigIntegerField(default=0)
    completed_tasks = models.BigIntegerField(default=0)
    failed_tasks = models.BigIntegerField(default=0)
    average_response_time = models.FloatField(default=0)  # milliseconds
    average_latency = models.FloatField(default=0)  # milliseconds
    last_task = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    permissions = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = tenant_constraints("agent", "agent_id")
        # instruction_id: deleting an instruction looks up the live agents that still use it.
        indexes = tenant_indexes("agent", "status", "node_id", "instruction_id", "model_id")


def default_tool_parameters() -> dict[str, Any]:
    """A tool that takes no arguments."""
    return {"type": ToolParametersType.OBJECT.value, "properties": {}, "required": []}


def default_tool_response_format() -> dict[str, Any]:
    return {"type": ToolResponseType.OBJECT.value, "schema": {}}


class Tool(OwnedModel):
    business_id_field = "tool_id"
    entity_label = "Tool"

    tool_id = models.CharField(max_length=128)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    type = models.CharField(max_length=16, choices=ToolType.choices)
    # Free text: the contract's values ("search", "openai", ...) are examples, not a closed list.
    category = models.CharField(max_length=64, blank=True, default="")
    provider = models.CharField(max_length=64, blank=True, default="")
    # Not only URLs: a "function" tool names a callable, a "service" tool may name a queue.
    endpoint = models.CharField(max_length=2048, blank=True, default="")
    version = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=16, choices=ToolStatus.choices, default=ToolStatus.ACTIVE)
    parameters = models.JSONField(default=default_tool_parameters)
    response_format = models.JSONField(default=default_tool_response_format)
    usage = models.JSONField(default=list, blank=True)
    total_usage = models.BigIntegerField(default=0)
    total_failures = models.BigIntegerField(default=0)
    average_latency = models.FloatField(default=0)  # milliseconds
    tags = models.JSONField(default=list, blank=True)
    documentation = models.TextField(blank=True, default="")
    examples = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        constraints = tenant_constraints("tool", "tool_id")
        indexes = tenant_indexes("tool", "type", "status")
