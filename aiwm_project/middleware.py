"""Request middleware: the x-correlation-id on every response and log line, request latency, API body guards."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from aiwm_project.api.errors import error_response
from aiwm_project.correlation import CORRELATION_HEADER, accepted_correlation_id, correlation_id_var
from aiwm_project.metrics import REQUEST_LATENCY


class CorrelationIdMiddleware:
    """Echo a sane client x-correlation-id or generate a UUID4; expose it to logs and error bodies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        cid = accepted_correlation_id(request.headers.get(CORRELATION_HEADER, ""))
        token = correlation_id_var.set(cid)
        request.correlation_id = cid  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        finally:
            correlation_id_var.reset(token)
        response[CORRELATION_HEADER] = cid
        return response


@functools.lru_cache(maxsize=512)
def route_label(route: str) -> str:
    """A route pattern as people read it: `api/nodes/<id>` for the router's `api/nodes/(?P<id>[^/]+)$`."""
    return _NAMED_GROUP.sub(r"<\1>", route).removeprefix("^").removesuffix("$")


_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


class RequestMetricsMiddleware:
    """Every request's latency by route pattern (`aiwm_http_request_duration_seconds`): the
    pattern, never the path, so ids do not multiply the series; unmatched paths share one label."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        route = route_label(match.route) if match is not None else "(unmatched)"
        status = f"{response.status_code // 100}xx"
        REQUEST_LATENCY.labels(route, request.method or "", status).observe(time.perf_counter() - started)
        return response


class ApiRequestGuardMiddleware:
    """Refuse oversized API bodies with a 413 before any view or parser reads them.

    Under `manage.py serve` the edge (aiwm_project.server.BodyLimit) has refused them already,
    before they were buffered; this holds the same limit for every other entry point (the test
    client, a WSGI server), on the declared Content-Length and on the body actually received.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api") and request.method not in ("GET", "HEAD", "OPTIONS"):
            limit = settings.AIWM_MAX_BODY_BYTES
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return error_response(request, 400, "Invalid Content-Length header")
            if declared > limit or _body_too_large(request, limit):
                return error_response(request, 413, f"Request body is larger than {limit} bytes")
        return self.get_response(request)


def _body_too_large(request: HttpRequest, limit: int) -> bool:
    # Reading request.body caches the bytes, so the parser downstream sees the same data.
    try:
        return len(request.body) > limit
    except RequestDataTooBig:
        return True
