"""The one error body of the API: {statusCode, message, timestamp, path, correlationId, errors?}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db.utils import OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from psycopg_pool import PoolTimeout
from rest_framework import exceptions, status
from rest_framework.response import Response

from aiwm_project.correlation import current_correlation_id
from aiwm_project.datetimes import iso_now
from aiwm_project.exceptions import ServiceError

logger = logging.getLogger("aiwm.api")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict"
    default_code = "conflict"


class DatabaseBusy(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is busy; try again shortly"
    default_code = "database_busy"
    wait = 1  # Retry-After, seconds


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large"
    default_code = "payload_too_large"


def error_body(request: HttpRequest, status_code: int, message: str, errors: list[str] | None = None) -> dict:
    correlation_id = getattr(request, "correlation_id", None) or current_correlation_id()
    return error_document(status_code, message, request.path, correlation_id, errors)


def error_document(
    status_code: int, message: str, path: str, correlation_id: str, errors: list[str] | None = None
) -> dict[str, Any]:
    """The body itself, also for answers given before Django sees a request (aiwm_project.server)."""
    body: dict[str, Any] = {
        "statusCode": status_code,
        "message": message,
        "timestamp": iso_now(),
        "path": path,
        "correlationId": correlation_id,
    }
    if errors:
        body["errors"] = errors
    return body


def error_response(request: HttpRequest, status_code: int, message: str, errors: list[str] | None = None):
    """A plain Django JSON error, for code that runs outside DRF (middleware, handler404/500)."""
    return JsonResponse(error_body(request, status_code, message, errors), status=status_code)


def flatten_validation_errors(detail: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested error detail into one readable line per problem ("cpuCores: ...")."""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            if key == "non_field_errors":
                lines.extend(flatten_validation_errors(value, prefix))
            elif isinstance(key, int):
                lines.extend(flatten_validation_errors(value, f"{prefix}[{key}]"))
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
                lines.extend(flatten_validation_errors(value, path))
        return lines
    if isinstance(detail, list):
        lines = []
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                lines.extend(flatten_validation_errors(item, f"{prefix}[{index}]"))
            else:
                lines.extend(flatten_validation_errors(item, prefix))
        return lines
    text = str(detail)
    if not prefix:
        return [text]
    if text.startswith("This field "):
        return [f"{prefix} {text[len('This field ') :]}"]
    return [f"{prefix}: {text}"]


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF exception handler: every error under /api gets the contract's body, 500s included."""
    request = context["request"]
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(str(exc) or "Bad request")
    elif isinstance(exc, OperationalError) and isinstance(exc.__cause__, PoolTimeout):
        # Every pooled connection stayed busy for DB_POOL_TIMEOUT: overload, not an error of ours.
        logger.warning("database pool exhausted on %s %s", request.method, request.path)
        exc = DatabaseBusy()

    if isinstance(exc, ServiceError):
        body = error_body(request, exc.status_code, exc.message, exc.errors)
        return Response(body, status=exc.status_code)
    if isinstance(exc, exceptions.ValidationError):
        body = error_body(request, 400, "Validation failed", flatten_validation_errors(exc.detail))
        return Response(body, status=400)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        reason = str(exc.detail)
        errors = None if reason in ("Unauthorized", exceptions.NotAuthenticated.default_detail) else [reason]
        return Response(error_body(request, 401, "Unauthorized", errors), status=401)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
        detail = exc.detail
        if isinstance(detail, dict | list):
            errors = flatten_validation_errors(detail)
            body = error_body(request, exc.status_code, errors[0] if errors else "Error", errors)
        else:
            # A parser error may name the place of the problem (parsers.JSONValueError).
            body = error_body(request, exc.status_code, str(detail), getattr(exc, "errors", None))
        return Response(body, status=exc.status_code, headers=headers)

    logger.exception("Unhandled error on %s %s", request.method, request.path)
    return Response(error_body(request, 500, "Internal server error"), status=500)
