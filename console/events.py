"""`GET /api/events`: the caller's organization's live events as Server-Sent Events, and
`POST /api/events/ticket` for browsers whose EventSource cannot send a header.

Who may listen, in this order: `Authorization: Bearer <user token>` (fetch-based SSE clients;
the token's organization), `?ticket=` (single-use, AIWM_EVENTS_TICKET_SECONDS; the organization of
whoever took it), or the admin's session cookie (an active staff user: every organization — the
admin is the installation's, not an organization's). Resuming: the browser's `Last-Event-ID`
header (EventSource sends it on reconnect) or `?lastEventId=`.

Each event is `id: …`, `event: <type>`, `data: <JSON>` with `type`, `orgId`, the entity's `_id` and
business id, and the changed fields; a comment every AIWM_EVENTS_KEEPALIVE_SECONDS keeps proxies
from closing an idle stream. The stream's content is an async iterator that runs on the event
loop (aiwm_project.http_handler): an open stream holds no thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiwm_project.api.errors import error_response
from aiwm_project.api.schema import ErrorBody
from aiwm_project.api.streams import event_stream
from aiwm_project.auth import TokenError, authenticate_user_token, bearer_token
from aiwm_project.datetimes import format_datetime
from aiwm_project.live_events import LiveEvent, hub
from aiwm_project.permissions import rights_of
from console.services import event_ticket_issue, event_ticket_redeem

EVENTS_PATH = "/api/events"


class EventTicketView(APIView):
    """A ticket for one `GET /api/events?ticket=…` (the API's bearer auth; any role that may read)."""

    required_right = "read"

    @extend_schema(
        summary="A single-use ticket for the live events stream",
        description=(
            "For browsers: `new EventSource('/api/events?ticket=' + ticket)` — EventSource cannot send an "
            "Authorization header, and a long-lived token must not be put in a URL. The ticket is valid for "
            "one stream, for AIWM_EVENTS_TICKET_SECONDS (default 60)."
        ),
        request=None,
        responses={
            201: inline_serializer(
                "EventTicket", {"ticket": serializers.CharField(), "expiresAt": serializers.DateTimeField()}
            ),
            401: OpenApiResponse(ErrorBody, description="No or an invalid token"),
        },
        tags=["Events"],
    )
    def post(self, request: Request) -> Response:
        principal: Any = request.user  # a Principal: IAMJWTAuthentication
        ticket, expires_at = event_ticket_issue(principal=principal)
        return Response({"ticket": ticket, "expiresAt": format_datetime(expires_at)}, status=201)


def events_stream(request: HttpRequest) -> HttpResponseBase:
    """Sync like every view (middleware, CORS, the session): its answer's content is an async
    iterator, which the server runs on the event loop for as long as the client listens."""
    if request.method != "GET":
        return error_response(request, 405, f'Method "{request.method}" not allowed.')
    org_id, problem = _listener(request)
    if problem:
        response = error_response(request, 401, problem)
        response["WWW-Authenticate"] = 'Bearer realm="aiwm"'
        return response
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId") or None
    return event_stream(_frames(org_id, last_event_id))


def _listener(request: HttpRequest) -> tuple[str | None, str]:
    """(organization or None for every one, "") for an allowed listener; (None, why) otherwise."""
    header = request.headers.get("Authorization", "")
    if header:
        token = bearer_token(header)
        if token is None:
            return None, "Authorization header must be 'Bearer <token>'"
        try:
            principal = authenticate_user_token(token)
        except TokenError as exc:
            return None, str(exc)
        if "read" not in rights_of(principal.roles):
            return None, "This token's roles may not read"
        return principal.org_id, ""
    ticket = request.GET.get("ticket")
    if ticket is not None:
        org_id = event_ticket_redeem(ticket=ticket)
        return (org_id, "") if org_id else (None, "The ticket is unknown, used or expired")
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return None, ""
    return None, "Send a bearer token, a ticket (POST /api/events/ticket) or an admin session"


def _frame(event: LiveEvent) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def _frames(org_id: str | None, last_event_id: str | None) -> AsyncIterator[bytes]:
    subscription, missed = await hub.subscribe(org_id, last_event_id)  # on the event loop
    try:
        # Tell EventSource how soon to come back after a drop; then what was missed, then live.
        yield b"retry: 2000\n\n"
        newest = (0, 0)
        for replayed in missed:
            if replayed.type != "reset":  # a reset carries the client's stale id, not a place in the stream
                newest = max(newest, replayed.order())
            yield _frame(replayed)
        while True:
            try:
                async with asyncio.timeout(settings.AIWM_EVENTS_KEEPALIVE_SECONDS):
                    event = await subscription.queue.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event is None:  # fell too far behind: the browser reconnects and resumes
                return
            if event.order() <= newest:  # replayed already (a Redis replay overlaps the live reader)
                continue
            yield _frame(event)
    finally:
        hub.unsubscribe(subscription)
