"""drf-spectacular extensions: how the IAM bearer token appears in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema


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


class PopulatedFieldExtension(OpenApiSerializerFieldExtension):
    """A populated reference: the referenced entity (or null) in responses, absent from requests."""

    target_class = "aiwm_project.api.serializers.PopulatedField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> Any:
        if direction == "request":
            return None
        ref = auto_schema.resolve_serializer(self.target.serializer_class, direction).ref
        return {"oneOf": [ref], "nullable": True}


class AIWMAutoSchema(AutoSchema):
    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        # PUT is a partial update in this API (the contract's examples send only what changes),
        # so document it with the same all-optional "Patched" body as PATCH.
        if self.method != "PUT":
            return super()._get_request_for_media_type(serializer, direction)
        self.method = "PATCH"
        try:
            return super()._get_request_for_media_type(serializer, direction)
        finally:
            self.method = "PUT"


def lib_doc_excludes() -> list[type]:
    """Our shared base classes document code, not endpoints: keep their docstrings out of the schema."""
    from drf_spectacular.plumbing import get_lib_doc_excludes

    from aiwm_project.api.serializers import EntitySerializer
    from aiwm_project.api.viewsets import EntityViewSet

    return [*get_lib_doc_excludes(), EntityViewSet, EntitySerializer]
