"""Admin pages of the operator console that are not a model's: the operator's own API token.

One identity (docs/decisions.md "One operator identity"): an account made by
`create_iam_user --admin` logs in to the admin and to `POST /auth/login` alike; from the admin it
can also take an API token for its organization here — shown once, with its expiry. An account
without IAM attributes (`createsuperuser` alone) is told how to give it some.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
from django.conf import settings
from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from aiwm_project.api.errors import error_response
from aiwm_project.auth import TokenError, issue_user_token
from aiwm_project.models import LocalIdentity
from console.dashboard import fleet_overview, gpu_series, summary
from nodes.models import Node

# The lifetimes an operator may choose (seconds), the configured default last.
TOKEN_LIFETIMES = (("1 hour", 3600), ("8 hours", 8 * 3600), ("1 day", 86400), ("7 days", 7 * 86400))


def api_token_view(request: HttpRequest) -> HttpResponse:
    user: Any = request.user  # admin_view: a logged-in staff user
    identity = LocalIdentity.objects.filter(user=user).first()
    context = {
        **admin.site.each_context(request),
        "title": "API token",
        "identity": identity,
        "lifetimes": TOKEN_LIFETIMES,
        "external_iam": not settings.IAM_JWT_SECRET,
        "username": request.user.get_username(),
    }
    if request.method == "POST" and identity is not None:
        lifetime = dict((str(seconds), seconds) for _, seconds in TOKEN_LIFETIMES).get(request.POST.get("lifetime", ""))
        if lifetime is None:
            context["error"] = "Choose one of the lifetimes offered."
        else:
            try:
                token = issue_user_token(
                    user_id=identity.iam_user_id,
                    username=request.user.get_username(),
                    org_id=identity.org_id,
                    group_id=identity.group_id,
                    roles=list(identity.roles),
                    expires_in=lifetime,
                )
            except TokenError as exc:
                context["error"] = str(exc)
            else:
                context["token"] = token
                # The token's own `exp`, not a second clock reading: what is shown is what it says.
                claims = jwt.decode(token, options={"verify_signature": False})
                context["expires_at"] = datetime.fromtimestamp(claims["exp"], UTC)
    response = TemplateResponse(request, "admin/api_token.html", context)
    response["Cache-Control"] = "no-store"  # the token is shown once: not kept by the browser either
    return response


def summary_view(request: HttpRequest) -> JsonResponse:
    """The dashboard's cards, for its live refresh."""
    return JsonResponse(summary(fleet_overview()))


CHART_RANGES = {3600, 6 * 3600, 86400, 7 * 86400}


def gpu_series_view(request: HttpRequest) -> JsonResponse:
    """A node's GPU history for the dashboard's and the node page's charts (`?node=<_id>&seconds=`)."""
    try:
        seconds = int(request.GET.get("seconds", "3600"))
    except ValueError:
        seconds = 0
    if seconds not in CHART_RANGES:
        return error_response(request, 400, f"seconds must be one of {sorted(CHART_RANGES)}")
    node = Node.objects.filter(pk=request.GET.get("node", ""), is_deleted=False).first()
    if node is None:
        raise Http404("no such node")
    return JsonResponse(gpu_series(node=node, seconds=seconds))
