"""Operator view of the fleet: which nodes are up, connected, with what hardware, and what they run.

A node's telemetry, session and token fields are the daemon's and the gateway's: read-only here.
Operators drain (maintenance) and undrain nodes and issue a new node token (shown once), through
the same services as the API.
"""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from aiwm_project.admin import (
    Operation,
    OwnedModelAdmin,
    StatusBadges,
    admin_actor,
    figure,
    gpu_memory_bar,
    status_badge,
    status_kinds_script,
)
from aiwm_project.datetimes import format_datetime
from aiwm_project.exceptions import ServiceError
from deployments.models import Deployment
from nodes.choices import NodeStatus
from nodes.models import Node, NodeCommand, NodeMetric
from nodes.selectors import gpu_rows
from nodes.serializers import DAEMON_REPORTED, NodeSerializer
from nodes.services import node_issue_token, node_update

RECENT_COMMANDS = 20
# Reported by the daemon or kept by the gateway: never typed by hand.
TELEMETRY_FIELDS = (
    "websocket_connected",
    "connected_at",
    "remote_address",
    "last_heartbeat",
    "ram_free",
    *DAEMON_REPORTED,
    "connection_id",
    "token_id",
    # Derived from the GPUs the daemon reports (Node.derived_fields).
    "gpu_count",
    "gpus_busy",
    "gpu_memory_free",
)


@admin.register(Node)
class NodeAdmin(OwnedModelAdmin):
    api_serializer = NodeSerializer
    update_service = staticmethod(node_update)
    list_display = (
        "node_id",
        "name",
        "status",
        "websocket_connected",
        "last_heartbeat",
        "cpu_cores",
        "ram_total",
        "gpu_count",
        "is_local",
        "owner_org_id",
    )
    list_filter = ("status", "websocket_connected", "is_local", "is_deleted")
    # Nodes are found by id, status and connection, not by the day they were created; the
    # hierarchy's distinct-dates query would read every node of the fleet on each page.
    date_hierarchy = None  # type: ignore[assignment]  # stubs type the base class attribute as str
    search_fields = ("node_id", "name", "vpn_ip", "owner_org_id")
    exclude = ("gpu_devices",)
    list_defer = ("gpu_devices",)  # the list shows the stored count (gpu_count)
    actions = [*OwnedModelAdmin.actions, "drain_selected", "undrain_selected", "issue_token"]
    operations = {
        "drain": Operation(
            "Drain (maintenance)",
            lambda obj, actor: node_update(instance=obj, data={"status": NodeStatus.MAINTENANCE}, actor=actor),
            "drained: in maintenance",
        ),
        "undrain": Operation(
            "Undrain",
            lambda obj, actor: node_update(instance=obj, data={"status": NodeStatus.ONLINE}, actor=actor),
            "back online",
        ),
    }

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        extra = ("gpu_table", "deployments_table", "commands_table", "gpu_chart")
        return (*super().get_readonly_fields(request, obj), *TELEMETRY_FIELDS, *extra)

    @admin.display(description="GPUs")
    def gpu_table(self, obj: Node) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (g["device_id"], g["model"], gpu_memory_bar(g), figure(g["utilization"]), figure(g["temperature"]))
                for g in gpu_rows(obj.gpu_devices)
            ),
        )  # fmt: skip
        return format_html(
            "<table class='aiwm-table'><tr><th>device</th><th>model</th><th>memory used / total (MB)</th>"
            "<th>utilization %</th><th>temperature °C</th></tr>{}</table>",
            rows or mark_safe("<tr><td colspan='5'>no GPUs reported</td></tr>"),
        )

    @admin.display(description="GPU history")
    def gpu_chart(self, obj: Node) -> str:
        # The dashboard's chart code draws it (console/static/console/dashboard.js).
        return format_html(
            "<div id='fleet-dashboard' data-summary-url='' data-series-url='/admin/console/gpu-series.json'>"
            "<span id='live-state' class='aiwm-live'></span>"
            "<select id='chart-node'><option value='{}'>{}</option></select> <select id='chart-range'>"
            "<option value='3600'>last hour</option><option value='21600'>6 hours</option>"
            "<option value='86400'>24 hours</option><option value='604800'>7 days</option></select>"
            "<div id='gpu-charts'></div></div>{}<script src='/static/console/dashboard.js'></script>",
            obj.pk,
            obj.node_id,
            status_kinds_script(),
        )

    @admin.display(description="deployments")
    def deployments_table(self, obj: Node) -> str:
        rows = Deployment.objects.filter(owner_org_id=obj.owner_org_id, node_id=obj.node_id, is_deleted=False)
        return (
            format_html_join(
                "",
                "<div><a href='/admin/deployments/deployment/{}/change/'>{}</a> {} {}</div>",
                (
                    (d.pk, d.deployment_id, status_badge(d.status), d.endpoint)
                    for d in rows.order_by("deployment_id")[:50]
                ),
            )
            or "none"
        )

    @admin.display(description="recent commands")
    def commands_table(self, obj: Node) -> str:
        rows = NodeCommand.objects.filter(owner_org_id=obj.owner_org_id, node_id=obj.node_id).order_by("-created_at")
        return (
            format_html_join(
                "",
                "<div><a href='/admin/nodes/nodecommand/{}/change/'>{}</a> {} {}</div>",
                ((c.pk, c.type, status_badge(c.status), format_datetime(c.created_at)) for c in rows[:RECENT_COMMANDS]),
            )
            or "none"
        )

    def _set_status(self, request: HttpRequest, queryset: QuerySet, status: str, done: str) -> None:
        self.run_service_action(
            request,
            queryset.filter(is_deleted=False),
            done,
            lambda obj, actor: node_update(instance=obj, data={"status": status}, actor=actor),
        )

    @admin.action(description="Drain selected nodes (maintenance: no new deployments)")
    def drain_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_status(request, queryset, NodeStatus.MAINTENANCE, "Drained")

    @admin.action(description="Undrain selected nodes (back online)")
    def undrain_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        # Online, as a heartbeat would make it; a silent node goes offline again on the next sweep.
        self._set_status(request, queryset.filter(status=NodeStatus.MAINTENANCE), NodeStatus.ONLINE, "Undrained")

    @admin.action(description="Issue a new node token (the old one stops working)")
    def issue_token(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
        issued = []
        for node in queryset.filter(is_deleted=False)[:20]:
            try:
                token, expires_at = node_issue_token(node=node, actor_id=admin_actor(request, node).user_id)
            except ServiceError as exc:
                self.message_user(request, f"{node}: {exc.message}", messages.ERROR)
                continue
            issued.append({"node": node, "token": token, "expires_at": expires_at})
        if not issued:
            return None
        context = {**self.admin_site.each_context(request), "title": "New node tokens", "issued": issued}
        response = TemplateResponse(request, "admin/node_tokens.html", context)
        response["Cache-Control"] = "no-store"  # shown once
        return response


class ReadOnlyAdmin(StatusBadges, admin.ModelAdmin):
    """Records the gateway writes (outbox, telemetry): operators look, the services write."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(NodeCommand)
class NodeCommandAdmin(ReadOnlyAdmin):
    list_display = ("message_id", "type", "node_id", "status", "attempts", "created_at", "sent_at", "completed_at")
    list_filter = ("status", "type")
    search_fields = ("message_id", "node_id", "owner_org_id")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(NodeMetric)
class NodeMetricAdmin(ReadOnlyAdmin):
    list_display = ("node_id", "timestamp", "received_at", "gpu_summary", "owner_org_id")
    search_fields = ("node_id", "owner_org_id")
    date_hierarchy = "timestamp"
    show_full_result_count = False

    @admin.display(description="GPUs (utilization %, memory used / total MB)")
    def gpu_summary(self, obj: NodeMetric) -> str:
        gpus = obj.data.get("gpu") if isinstance(obj.data, dict) else None
        if not isinstance(gpus, list):
            return "-"
        return "; ".join(
            f"{g.get('deviceId')}: {g.get('utilization')} %, {g.get('memoryUsed')} / {g.get('memoryTotal')}"
            for g in gpus
            if isinstance(g, dict)
        )
