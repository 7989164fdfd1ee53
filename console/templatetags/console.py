"""Template tags of the operator console: the fleet dashboard and status badges."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html

from console.dashboard import fleet_overview

register = template.Library()

# Status values by how an operator should read them.
GOOD = {"online", "running", "completed", "succeeded", "ready", "healthy", "acknowledged", "sent"}
WARN = {"maintenance", "pending", "queued", "downloading", "stopping", "starting", "unknown", "cancelled", "stopped"}
BAD = {"offline", "failed", "timeout", "error", "expired", "unhealthy"}


def badge_class(value: str) -> str:
    return "ok" if value in GOOD else "bad" if value in BAD else "warn" if value in WARN else ""


@register.simple_tag
def status_badge(value: Any) -> str:
    text = str(value or "-")
    return format_html('<span class="aiwm-badge {}" data-status="{}">{}</span>', badge_class(text), text, text)


@register.inclusion_tag("admin/fleet_dashboard.html", takes_context=True)
def fleet_dashboard(context: dict[str, Any]) -> dict[str, Any]:
    return {"overview": fleet_overview(), "request": context.get("request")}
