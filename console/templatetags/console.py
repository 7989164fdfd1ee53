"""Template tags of the operator console: the fleet dashboard and status badges."""

from __future__ import annotations

from typing import Any

from django import template

from aiwm_project.admin import status_badge as admin_status_badge
from console.dashboard import fleet_overview

register = template.Library()


@register.simple_tag
def status_badge(value: Any) -> str:
    return admin_status_badge(value)


@register.inclusion_tag("admin/fleet_dashboard.html", takes_context=True)
def fleet_dashboard(context: dict[str, Any]) -> dict[str, Any]:
    return {"overview": fleet_overview(), "request": context.get("request")}
