"""drf-spectacular extensions: how the IAM bearer token appears in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class IAMJWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "aiwm_project.auth.IAMJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "IAM access token (`POST /auth/login` in the embedded default).",
        }
