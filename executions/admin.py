"""Operator view of workflow runs: what ran where, how far it got, and why it failed.

Edits go through the execution services, as the API's do: labels any time, timeout and retry
limits while pending; run state and steps are the engine's and stay read-only here. Deletes are
soft, through the base's action, and refused while an execution is running.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from aiwm_project.admin import Operation, OwnedModelAdmin, status_badge
from aiwm_project.datetimes import parse_iso
from executions.choices import ExecutionStatus, StepStatus
from executions.engine import execution_cancel, execution_retry, execution_start
from executions.models import Execution
from executions.serializers import ExecutionSerializer
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
    api_serializer = ExecutionSerializer
    update_service = staticmethod(execution_update)
    delete_service = staticmethod(execution_delete)

    actions = [*OwnedModelAdmin.actions, "start_selected", "cancel_selected", "retry_failed_steps", "retry_all_steps"]
    operations = {
        "start": Operation("Start", lambda obj, actor: execution_start(pk=obj.pk, actor=actor), "started"),
        "cancel": Operation(
            "Cancel",
            lambda obj, actor: execution_cancel(pk=obj.pk, reason="Cancelled by an operator", actor=actor),
            "cancelled",
        ),
        "retry": Operation(
            "Retry failed steps",
            lambda obj, actor: execution_retry(pk=obj.pk, reset_steps=False, actor=actor),
            "retried",
        ),
    }

    # The engine's operations, as the API offers them (same services, same refusals).
    @admin.action(description="Start selected (pending) executions")
    def start_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request, queryset, "Started", lambda obj, actor: execution_start(pk=obj.pk, actor=actor)
        )

    @admin.action(description="Cancel selected executions")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request,
            queryset,
            "Cancelled",
            lambda obj, actor: execution_cancel(pk=obj.pk, reason="Cancelled by an operator", actor=actor),
        )

    @admin.action(description="Retry selected: failed and skipped steps and what follows them")
    def retry_failed_steps(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request, queryset, "Retried", lambda obj, actor: execution_retry(pk=obj.pk, reset_steps=False, actor=actor)
        )

    @admin.action(description="Retry selected: every step")
    def retry_all_steps(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request, queryset, "Retried", lambda obj, actor: execution_retry(pk=obj.pk, reset_steps=True, actor=actor)
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and obj.status != ExecutionStatus.PENDING:
            return (*fields, *PENDING_ONLY_FIELDS)
        return fields

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
        """The steps as a timeline: when each ran and for how long, the failing one highlighted with
        its error, each linked to the command it sent."""
        rows = format_html_join(
            "",
            "<tr class='{}'><td>{}</td><td>{}</td><td>{}</td><td>{}%</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    "aiwm-failed" if step.get("status") == StepStatus.FAILED else "",
                    step.get("index"),
                    step.get("name"),
                    status_badge(step.get("status")),
                    step.get("progress"),
                    _command_link(step),
                    step.get("nodeId") or "-",
                    ", ".join(str(d) for d in step.get("dependsOn") or []) or "-",
                    (step.get("startedAt") or "-").replace("T", " "),
                    _duration(step),
                    (step.get("error") or {}).get("message") or "",
                )
                for step in obj.steps or []
            ),
        )
        return format_html(
            "<table class='aiwm-table aiwm-timeline'><tr><th>#</th><th>name</th><th>status</th><th>progress</th>"
            "<th>command</th><th>node</th><th>depends on</th><th>started</th><th>took</th><th>error</th></tr>"
            "{}</table>",
            rows,
        )


def _command_link(step: dict[str, Any]) -> str:
    kind = (step.get("command") or {}).get("type")
    if not kind:
        return "-"
    sent = step.get("sentMessageId")
    if not sent:
        return str(kind)
    return format_html("<a href='/admin/nodes/nodecommand/?q={}'>{}</a>", sent, kind)


def _duration(step: dict[str, Any]) -> str:
    started, ended = parse_iso(step.get("startedAt")), parse_iso(step.get("completedAt"))
    if started is None:
        return "-"
    seconds = ((ended or timezone.now()) - started).total_seconds()
    return f"{seconds:.1f} s" + ("" if ended else " (running)")
