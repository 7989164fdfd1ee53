"""drf-spectacular extensions: how the IAM bearer token appears in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_lib_doc_excludes
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view

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
