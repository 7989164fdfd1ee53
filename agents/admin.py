"""Operator view of agents, their instructions and the tools they may call."""

from __future__ import annotations

from django.contrib import admin

from agents.models import Agent, Instruction, Tool
from agents.serializers import AgentSerializer, InstructionSerializer, ToolSerializer
from aiwm_project.admin import OwnedModelAdmin


@admin.register(Instruction)
class InstructionAdmin(OwnedModelAdmin):
    api_serializer = InstructionSerializer
    list_display = ("instruction_id", "name", "is_active", "owner_org_id", "updated_at", "is_deleted")
    list_filter = ("is_active", "is_deleted")
    search_fields = ("instruction_id", "name", "description", "owner_org_id")


@admin.register(Agent)
class AgentAdmin(OwnedModelAdmin):
    api_serializer = AgentSerializer
    list_display = (
        "agent_id",
        "name",
        "role",
        "status",
        "node_id",
        "instruction_id",
        "model_id",
        "total_tasks",
        "last_heartbeat",
        "is_active",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "is_active", "is_deleted")
    search_fields = ("agent_id", "name", "role", "node_id", "instruction_id", "model_id", "owner_org_id")


@admin.register(Tool)
class ToolAdmin(OwnedModelAdmin):
    api_serializer = ToolSerializer
    list_display = (
        "tool_id",
        "name",
        "type",
        "category",
        "provider",
        "status",
        "total_usage",
        "total_failures",
        "is_active",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("type", "status", "is_active", "is_deleted")
    search_fields = ("tool_id", "name", "category", "provider", "endpoint", "owner_org_id")
