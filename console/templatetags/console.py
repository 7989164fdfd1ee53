"""Template tags of the operator console: the fleet dashboard, status badges, the lists' rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from aiwm_project.admin import figure, gpu_memory_bar, status_kinds_script
from aiwm_project.admin import status_badge as admin_status_badge
from console import changelist
from console.dashboard import fleet_overview

register = template.Library()


@register.simple_tag
def status_badge(value: Any) -> str:
    return admin_status_badge(value)


@register.simple_tag
def status_kinds() -> str:
    return status_kinds_script()


@register.inclusion_tag("admin/fleet_dashboard.html", takes_context=True)
def fleet_dashboard(context: dict[str, Any]) -> dict[str, Any]:
    return {"overview": fleet_overview(), "request": context.get("request")}


@register.simple_tag
def node_table_rows(node_rows: list[dict[str, Any]]) -> str:
    """The dashboard's table of nodes and their GPUs, one row per GPU (console.dashboard's rows; the
    live refresh, console/static/console/dashboard.js, finds the cells by their data- attributes).
    Built here, not with template tags: at 25 nodes of 8 GPUs the template language's cost per
    value was most of the dashboard's time (BENCHMARKS.md "The operator portal")."""
    if not node_rows:
        return mark_safe(
            '<tr><td colspan="7">No nodes yet: create one with <code>POST /api/nodes</code>'
            " and start its agent.</td></tr>"
        )
    when = changelist.datetime_formatter()
    return format_html_join("", "{}", ((_node_rows(node, when),) for node in node_rows))


def _node_rows(node: dict[str, Any], when: Callable[[datetime], str]) -> str:
    heartbeat = node["last_heartbeat"]
    seen = when(heartbeat) if heartbeat else "never"
    url = reverse("admin:nodes_node_change", args=[node["id"]])
    gpus = node["gpus"]
    span = format_html(' rowspan="{}"', len(gpus)) if gpus else ""
    head = format_html(
        '<td{}><a href="{}">{}</a><br><small>{}</small></td><td{} data-field="status">{}</td>'
        '<td{} data-field="lastHeartbeat">{}</td>',
        span, url, node["node_id"], node["name"], span, admin_status_badge(node["status"]), span, seen,
    )  # fmt: skip
    if not gpus:
        return format_html(
            '<tr data-node="{}">{}<td colspan="4"><small>no GPUs reported</small></td></tr>', node["id"], head
        )
    return format_html_join(
        "",
        '<tr data-node="{}" data-device="{}">{}<td>{} <small>{}</small></td><td data-field="memory">{}</td>'
        '<td data-field="utilization">{}</td><td data-field="temperature">{}</td></tr>',
        (
            (node["id"], gpu["device_id"], head if index == 0 else "", gpu["device_id"], gpu["model"],
             gpu_memory_bar(gpu), figure(gpu["utilization"], " %"), figure(gpu["temperature"], " °C"))
            for index, gpu in enumerate(gpus)
        ),
    )  # fmt: skip


@register.tag(name="planned_result_list")
def planned_result_list(parser: Any, token: Any) -> InclusionAdminNode:
    """Django's `result_list` tag (same template) with the rows of console.changelist."""
    return InclusionAdminNode(
        parser, token, func=changelist.result_list, template_name="change_list_results.html", takes_context=False
    )
