"""Operator view of workflow runs: what ran where, how far it got, and why it failed.

Edits go through the execution services, as the API's do: labels any time, timeout and retry
limits while pending; run state and steps are the engine's and stay read-only here. Deletes are
soft, through the base's action, and refused while an execution is running.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from aiwm_project.admin import OwnedModelAdmin, admin_actor
from aiwm_project.exceptions import ServiceError
from executions.choices import ExecutionStatus, StepStatus
from executions.models import Execution
from executions.services import execution_delete, execution_update

# Editable only while pending (the engine reads them when it starts the run).
PENDING_ONLY_FIELDS = ("timeout_seconds", "max_retries")


@admin.register(Execution)
class ExecutionAdmin(OwnedModelAdmin):
    list_display = (
        "execution_id",
        "name",
        "category",
        "type",
        "status",
        "progress",
        "step_summary",
        "node_id",
        "resource_id",
        "retry_count",
        "started_at",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "category", "type", "resource_type", "is_deleted")
    search_fields = ("execution_id", "name", "resource_id", "node_id", "owner_org_id")
    exclude = ("steps",)
    readonly_fields = (
        "category",
        "type",
        "status",
        "progress",
        "parent_execution_id",
        "child_execution_ids",
        "steps_table",
        "resource_type",
        "resource_id",
        "node_id",
        "involved_node_ids",
        "started_at",
        "completed_at",
        "timeout_at",
        "result",
        "error",
        "sent_message_ids",
        "received_message_ids",
        "retry_count",
        "retry_attempts",
    )
    # Narrower than the base's signature (it takes any OwnedModel); only executions reach this admin.
    delete_service = staticmethod(execution_delete)  # type: ignore[assignment]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and obj.status != ExecutionStatus.PENDING:
            return (*fields, *PENDING_ONLY_FIELDS)
        return fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        original = Execution.objects.get(pk=obj.pk)
        changed = {field: getattr(obj, field) for field in form.changed_data}
        try:
            execution_update(instance=original, data=changed, actor=admin_actor(request, original))
        except ServiceError as exc:
            # Lost a race with the engine (started meanwhile): report it rather than a 500 page.
            self.message_user(request, f"{original}: {exc.message} {' '.join(exc.errors)}".strip(), messages.ERROR)

    @admin.display(description="Steps")
    def step_summary(self, obj: Execution) -> str:
        """`3 steps: 1 completed, 1 running, 1 pending` (in the step state machine's order)."""
        steps = obj.steps or []
        if not steps:
            return "no steps"
        counts = Counter(step.get("status") for step in steps)
        parts = [f"{counts[status]} {status}" for status in StepStatus.values if counts[status]]
        return f"{len(steps)} step{'s' if len(steps) != 1 else ''}: {', '.join(parts)}"

    @admin.display(description="Steps")
    def steps_table(self, obj: Execution) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    step.get("index"),
                    step.get("name"),
                    step.get("status"),
                    step.get("progress"),
                    (step.get("command") or {}).get("type") or "-",
                    step.get("nodeId") or "-",
                    ", ".join(str(d) for d in step.get("dependsOn") or []) or "-",
                    (step.get("error") or {}).get("message") or "",
                )
                for step in obj.steps or []
            ),
        )
        return format_html(
            "<table><tr><th>#</th><th>name</th><th>status</th><th>progress</th><th>command</th>"
            "<th>node</th><th>depends on</th><th>error</th></tr>{}</table>",
            rows,
        )
