"""Operator view of agents, their instructions and the tools they may call."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from rest_framework import serializers

from agents import services
from agents.models import Agent, Instruction, Tool
from agents.serializers import ToolSerializer
from aiwm_project.admin import OwnedModelAdmin, admin_actor
from aiwm_project.api.errors import flatten_validation_errors

# Tool JSON columns (model field -> API name) whose documented shape the API enforces.
TOOL_SHAPED_FIELDS = {
    "parameters": "parameters",
    "response_format": "responseFormat",
    "usage": "usage",
    "examples": "examples",
    "tags": "tags",
}


@admin.register(Instruction)
class InstructionAdmin(OwnedModelAdmin):
    # Refused (409 in the API, an error message here) while live agents use the instruction.
    # OwnedModelAdmin types the hook for OwnedModel; instruction_delete takes the narrower Instruction.
    delete_service = staticmethod(services.instruction_delete)  # type: ignore[assignment]
    list_display = ("instruction_id", "name", "is_active", "owner_org_id", "updated_at", "is_deleted")
    list_filter = ("is_active", "is_deleted")
    search_fields = ("instruction_id", "name", "description", "owner_org_id")


@admin.register(Agent)
class AgentAdmin(OwnedModelAdmin):
    list_display = (
        "agent_id",
        "name",
        "role",
        "status",
        "node_id",
        "instruction_id",
        "total_tasks",
        "last_heartbeat",
        "is_active",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "is_active", "is_deleted")
    search_fields = ("agent_id", "name", "role", "node_id", "instruction_id", "owner_org_id")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # agent_update, not the shared entity_update: a new instructionId must hold the instruction's row lock.
        original = Agent.objects.get(pk=obj.pk)
        changed = {field: getattr(obj, field) for field in form.changed_data}
        services.agent_update(instance=original, data=changed, actor=admin_actor(request, original))


@admin.register(Tool)
class ToolAdmin(OwnedModelAdmin):
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

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        base = super().get_form(request, obj, change=change, **kwargs)

        class ShapeCheckedForm(base):  # type: ignore[misc, valid-type]
            """The admin's JSON fields take any JSON; hold them to the same shapes as the API."""

            def clean(self) -> dict[str, Any]:
                cleaned = super().clean()
                api_fields = ToolSerializer().fields
                for model_field, api_name in TOOL_SHAPED_FIELDS.items():
                    if model_field not in self.changed_data or model_field not in cleaned:
                        continue
                    try:
                        cleaned[model_field] = api_fields[api_name].run_validation(cleaned[model_field])
                    except serializers.ValidationError as exc:
                        self.add_error(model_field, forms.ValidationError(flatten_validation_errors(exc.detail)))
                return cleaned

        return ShapeCheckedForm
