"""Project-level endpoints: health, the embedded default's IAM-compatible login, JSON 404/500."""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import authenticate
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.defaults import page_not_found, server_error
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed, NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aiwm_project.api.errors import error_response
from aiwm_project.api.schema import ErrorBody
from aiwm_project.auth import issue_user_token
from aiwm_project.datetimes import iso_now
from aiwm_project.permissions import PublicEndpoint

logger = logging.getLogger("aiwm.health")


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not reachable" to an operator
        return f"{type(exc).__name__}: {exc}"
    return None


def check_redis() -> str | None:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # connection refused, timeout, auth: all mean "not reachable"
        return f"{type(exc).__name__}: {exc}"
    return None


HealthResponse = inline_serializer(
    "HealthResponse",
    {
        "status": serializers.ChoiceField(choices=["ok", "error"]),
        "timestamp": serializers.CharField(),
        "version": serializers.CharField(),
        "checks": serializers.DictField(child=serializers.CharField()),
    },
)


class HealthView(APIView):
    authentication_classes: list = []
    permission_classes = [PublicEndpoint]

    @extend_schema(
        summary="Service health",
        description="No authentication. 200 when the database (and Redis, when configured) answer; "
        "503 naming the failing part otherwise.",
        responses={200: HealthResponse, 503: HealthResponse},
    )
    def get(self, request: Request) -> Response:
        checks: dict[str, str] = {}
        failing: list[str] = []
        for name, check in (("database", check_database), ("redis", check_redis)):
            if name == "redis" and not settings.REDIS_URL:
                checks[name] = "not configured"
                continue
            problem = check()
            if problem:
                logger.error("health: %s unreachable: %s", name, problem)
                checks[name] = "error"
                failing.append(name)
            else:
                checks[name] = "ok"
        body: dict[str, Any] = {
            "status": "error" if failing else "ok",
            "timestamp": iso_now(),
            "version": settings.AIWM_SERVER_VERSION,
            "checks": checks,
        }
        if failing:
            body["message"] = f"Unavailable: {', '.join(failing)}"
        return Response(body, status=503 if failing else 200)


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


LoginResponse = inline_serializer(
    "LoginResponse",
    {
        "accessToken": serializers.CharField(),
        "user": inline_serializer(
            "LoginUser",
            {
                "id": serializers.CharField(),
                "username": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
                "orgId": serializers.CharField(),
            },
        ),
    },
)


class LoginView(APIView):
    """IAM-compatible login for the embedded default; off when an external IAM is configured."""

    authentication_classes: list = []
    permission_classes = [PublicEndpoint]

    @extend_schema(
        summary="Log in (embedded IAM)",
        request=LoginSerializer,
        responses={
            200: LoginResponse,
            401: OpenApiResponse(ErrorBody, description="Wrong username or password"),
            404: OpenApiResponse(ErrorBody, description="Local login is off (an external IAM issues the tokens)"),
        },
        examples=[OpenApiExample("Login", value={"username": "tonyh", "password": "123zXc_-"}, request_only=True)],
    )
    def post(self, request: Request) -> Response:
        if not settings.AIWM_LOCAL_LOGIN:
            raise NotFound("Local login is disabled: get tokens from the IAM service")
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        identity = getattr(user, "iam", None) if user is not None else None
        if user is None or identity is None or not user.is_active:
            raise AuthenticationFailed("Invalid username or password")
        token = issue_user_token(
            user_id=identity.iam_user_id,
            username=user.get_username(),
            org_id=identity.org_id,
            group_id=identity.group_id,
            roles=list(identity.roles),
        )
        return Response(
            {
                "accessToken": token,
                "user": {
                    "id": identity.iam_user_id,
                    "username": user.get_username(),
                    "roles": list(identity.roles),
                    "orgId": identity.org_id,
                },
            }
        )


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(("/api", "/auth"))


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return error_response(request, 404, f"Cannot {request.method} {request.path}")
    return page_not_found(request, exception)  # type: ignore[arg-type]


def internal_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return error_response(request, 500, "Internal server error")
    return server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 400, "Bad request")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 403, "Forbidden")


ASYNCAPI_DOCUMENT = settings.BASE_DIR / "docs" / "asyncapi.yaml"


def asyncapi_document(request: HttpRequest) -> HttpResponse:
    """The node protocol's AsyncAPI 3 document (docs/asyncapi.yaml), linked from /api-docs."""
    return HttpResponse(ASYNCAPI_DOCUMENT.read_bytes(), content_type="application/yaml; charset=utf-8")
