"""Operator view of deployments: what runs where, in which environment, and how it is doing."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from aiwm_project.admin import AUDIT_FIELDS, Operation, OwnedModelAdmin, status_badge
from aiwm_project.datetimes import format_datetime
from deployments.models import Deployment, DeploymentLog
from deployments.serializers import DeploymentSerializer
from executions.models import Execution
from executions.workflows import deployment_delete, deployment_start, deployment_stop
from nodes.admin import ReadOnlyAdmin


@admin.register(Deployment)
class DeploymentAdmin(OwnedModelAdmin):
    api_serializer = DeploymentSerializer
    # The API's rule: no delete while it runs or a workflow is starting or stopping it.
    list_defer = ("events",)  # its history, shown on the record's page
    delete_service = staticmethod(deployment_delete)
    list_display = (
        "deployment_id",
        "name",
        "environment",
        "status",
        "is_running",
        "model_id",
        "node_id",
        "replicas",
        "hardware_profile",
        "last_health_check",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "environment", "is_running", "deployment_type", "hardware_profile", "is_deleted")
    search_fields = ("deployment_id", "name", "model_id", "node_id", "container_name", "owner_org_id")
    # The event log is appended by services under a row lock; an admin form save would race it.
    exclude = ("events",)
    readonly_fields = (*AUDIT_FIELDS, "events_table", "moving_execution", "recent_logs")
    actions = [*OwnedModelAdmin.actions, "start_selected", "stop_selected"]
    operations = {
        "start": Operation("Start", lambda obj, actor: deployment_start(deployment=obj, actor=actor), "starting"),
        "stop": Operation("Stop", lambda obj, actor: deployment_stop(deployment=obj, actor=actor), "stopping"),
    }

    @admin.action(description="Start selected deployments")
    def start_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request, queryset, "Starting", lambda obj, actor: deployment_start(deployment=obj, actor=actor)
        )

    @admin.action(description="Stop selected deployments")
    def stop_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request, queryset, "Stopping", lambda obj, actor: deployment_stop(deployment=obj, actor=actor)
        )

    @admin.display(description="events")
    def events_table(self, obj: Deployment) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (e.get("timestamp"), status_badge(e.get("severity")), e.get("event"), e.get("message"))
                for e in reversed(obj.events or [])
                if isinstance(e, dict)
            ),
        )
        return format_html(
            "<table class='aiwm-table'><tr><th>time</th><th>severity</th><th>event</th><th>message</th></tr>{}</table>",
            rows or mark_safe("<tr><td colspan='4'>no events</td></tr>"),
        )

    @admin.display(description="execution moving it")
    def moving_execution(self, obj: Deployment) -> str:
        execution = (
            Execution.objects.filter(
                owner_org_id=obj.owner_org_id,
                resource_type="deployment",
                resource_id=obj.deployment_id,
                is_deleted=False,
            )
            .order_by("-created_at")
            .first()
        )
        if execution is None:
            return "none"
        return format_html(
            "<a href='/admin/executions/execution/{}/change/'>{}</a> ({}) {}",
            execution.pk,
            execution.execution_id,
            execution.type,
            status_badge(execution.status),
        )

    @admin.display(description="recent logs")
    def recent_logs(self, obj: Deployment) -> str:
        logs = DeploymentLog.objects.filter(owner_org_id=obj.owner_org_id, deployment_id=obj.deployment_id)
        lines = format_html_join(
            "\n",
            "{} {} {}",
            ((format_datetime(line.timestamp), line.level, line.message) for line in logs.order_by("-timestamp")[:50]),
        )
        return format_html("<div class='aiwm-json'>{}</div>", lines or "no logs")


@admin.register(DeploymentLog)
class DeploymentLogAdmin(ReadOnlyAdmin):
    list_display = ("deployment_id", "level", "timestamp", "node_id", "message")
    list_filter = ("level",)
    search_fields = ("deployment_id", "node_id", "message")
    date_hierarchy = "timestamp"
    show_full_result_count = False
