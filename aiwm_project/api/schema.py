"""drf-spectacular extensions: how the IAM bearer token appears in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_lib_doc_excludes
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers

from aiwm_project.ids import BUSINESS_ID_RE

ViewT = TypeVar("ViewT", bound=Callable[..., Any])
# A request example: its body alone (it gets the action's standard name) or a (name, body) pair.
RequestExample = dict[str, Any] | tuple[str, dict[str, Any]]


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


ErrorBody = inline_serializer(
    "Error",
    {
        "statusCode": serializers.IntegerField(),
        "message": serializers.CharField(),
        "timestamp": serializers.CharField(help_text="ISO 8601, UTC"),
        "path": serializers.CharField(),
        "correlationId": serializers.CharField(),
        "errors": serializers.ListField(child=serializers.CharField(), required=False, help_text="one line a problem"),
    },
)
ERROR_DESCRIPTIONS = {
    "400": "Bad input: the body or a query parameter (`errors` names each problem)",
    "401": "No token, or a token that is not valid",
    "403": "The token's roles do not allow this",
    "404": "No such record in your organization",
    "409": "Conflicts with the record's state (the message says what to do)",
    "413": "The body is larger than the limit",
}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class AIWMAutoSchema(AutoSchema):
    def get_filter_backends(self) -> list[Any]:
        # A collection's list filters and sorts belong to its list: an action on one record (a
        # node's commands, a deployment's logs) documents its own parameters.
        if getattr(self.view, "action", None) != "list":
            return []
        return list(super().get_filter_backends())

    def _resolve_path_parameters(self, variables: Any) -> Any:
        # `/:id` is an `_id` or a business id (aiwm_project.ids): anything else is a 400.
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if parameter["name"] == "id":
                parameter["schema"] = {"type": "string", "pattern": BUSINESS_ID_RE.pattern}
                parameter["description"] = "The record's `_id` (24 hex characters) or its business id."
        return parameters

    def _get_response_bodies(self, direction: Any = "response") -> Any:
        """Every operation's error answers too, with the contract's error body."""
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        error = {"application/json": {"schema": self.resolve_serializer(ErrorBody, "response").ref}}
        for code in self._error_codes():
            if code not in responses:
                responses[code] = {"description": ERROR_DESCRIPTIONS[code], "content": error}
        return responses

    def _error_codes(self) -> list[str]:
        authenticated = bool(self.view.get_authenticators())
        has_body = self.method in ("POST", "PUT", "PATCH")
        codes = ["400"] if authenticated or has_body else []
        if authenticated:
            codes += ["401", "403"]
        if "{" in self.path:
            codes.append("404")
        if authenticated and self.method in WRITES:
            codes.append("409")
        if has_body:
            codes.append("413")
        return codes

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
    # A real cycle: the viewset module's decorators load the schema class (DEFAULT_SCHEMA_CLASS) from here.
    from aiwm_project.api.serializers import EntitySerializer
    from aiwm_project.api.viewsets import EntityViewSet

    return [*get_lib_doc_excludes(), EntityViewSet, EntitySerializer]


def _named(example: RequestExample, default_name: str) -> tuple[str, dict[str, Any]]:
    return example if isinstance(example, tuple) else (default_name, example)


def entity_schema_view(
    *,
    singular: str,
    tag: str | None = None,
    business_id: str | None = None,
    example: dict[str, Any] | None = None,
    create_example: RequestExample | None = None,
    created_example: dict[str, Any] | None = None,
    update_example: tuple[str, dict[str, Any]] | None = None,
    updated_example: dict[str, Any] | None = None,
    create_verb: str = "Create",
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Callable[[ViewT], ViewT]:
    """The `extend_schema_view` of an `EntityViewSet`: the six CRUD actions' summaries, tag and examples.

    - `singular`: the entity in the summaries ("node"); `tag` defaults to its plural ("Nodes") and
      `business_id` to "<singular>Id" ("nodeId").
    - `example`: the entity as the API returns it (retrieve's example, named like the entity, and by
      default the 201 of create).
    - `create_example`: create's request body, named "<create_verb> <singular>" unless given as a
      (name, body) pair; `created_example`: create's 201 body when it is not `example`, named "Created"
      ("Registered" for `create_verb="Register"`).
    - `update_example`: a (name, body) pair for PUT's request; `updated_example`: PUT's response, "Updated".
    - `overrides`: per action, more `extend_schema` arguments. `examples` and `parameters` are added after
      the standard ones; any other argument (summary, description, responses, ...) replaces the standard.
    """
    tag = tag or f"{singular.capitalize()}s"
    business_id = business_id or f"{singular}Id"
    create_examples, retrieve_examples, update_examples = [], [], []
    if create_example is not None:
        name, value = _named(create_example, f"{create_verb} {singular}")
        create_examples.append(OpenApiExample(name, value=value, request_only=True))
    if created_example is None:
        created_example = example
    if created_example is not None:
        created_name = create_verb.removesuffix("e") + "ed"  # Created, Registered
        create_examples.append(
            OpenApiExample(created_name, value=created_example, response_only=True, status_codes=["201"])
        )
    if example is not None:
        retrieve_examples.append(OpenApiExample(singular.capitalize(), value=example, response_only=True))
    if update_example is not None:
        name, value = update_example
        update_examples.append(OpenApiExample(name, value=value, request_only=True))
    if updated_example is not None:
        update_examples.append(OpenApiExample("Updated", value=updated_example, response_only=True))

    actions: dict[str, dict[str, Any]] = {
        "list": {"summary": f"Get all {singular}s"},
        "create": {"summary": f"{create_verb} {singular}", "examples": create_examples},
        "retrieve": {"summary": f"Get {singular} by _id or {business_id}", "examples": retrieve_examples},
        "update": {"summary": f"Update {singular} (only the fields sent)", "examples": update_examples},
        "partial_update": {"summary": f"Update {singular} (same as PUT)"},
        "destroy": {"summary": f"Delete {singular} (soft)"},
    }
    for action, extra in (overrides or {}).items():
        kwargs = actions[action]
        for key, value in extra.items():
            kwargs[key] = [*kwargs.get(key, []), *value] if key in ("examples", "parameters") else value
    return extend_schema_view(
        **{
            action: extend_schema(tags=[tag], **{key: value for key, value in kwargs.items() if value != []})
            for action, kwargs in actions.items()
        }
    )
