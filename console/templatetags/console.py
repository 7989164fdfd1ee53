"""Template tags of the operator console: the fleet dashboard, status badges, the lists' rows."""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode

from aiwm_project.admin import status_badge as admin_status_badge
from console import changelist
from console.dashboard import fleet_overview

register = template.Library()


@register.simple_tag
def status_badge(value: Any) -> str:
    return admin_status_badge(value)


@register.inclusion_tag("admin/fleet_dashboard.html", takes_context=True)
def fleet_dashboard(context: dict[str, Any]) -> dict[str, Any]:
    return {"overview": fleet_overview(), "request": context.get("request")}


@register.tag(name="planned_result_list")
def planned_result_list(parser: Any, token: Any) -> InclusionAdminNode:
    """Django's `result_list` tag (same template) with the rows of console.changelist."""
    return InclusionAdminNode(
        parser, token, func=changelist.result_list, template_name="change_list_results.html", takes_context=False
    )
