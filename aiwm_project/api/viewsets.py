"""The base viewset every entity uses: organization scoping that subclasses cannot bypass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from aiwm_project import services
from aiwm_project.api.serializers import PopulatedField
from aiwm_project.auth import Principal
from aiwm_project.datetimes import format_datetime
from aiwm_project.models import OwnedModel
from aiwm_project.selectors import RelatedLoader, find_by_identifier, is_valid_identifier

DeleteResponse = inline_serializer(
    "DeleteResponse",
    {"message": serializers.CharField(), "deletedAt": serializers.CharField()},
)


class EntityViewSet(viewsets.ModelViewSet):
    """CRUD for one owned entity.

    Subclasses set `model`, `serializer_class`, `filter_fields`, `sort_fields`, and may narrow
    reads with `scoped_queryset()`. They cannot override `get_queryset`: every read starts
    from the caller's organization's live rows, so no endpoint can forget the tenant filter.
    Writes go through `create_service` / `update_service` / `delete_service`.
    """

    model: ClassVar[type[OwnedModel]]
    lookup_field = "id"
    lookup_url_kwarg = "id"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    filter_fields: ClassVar[dict[str, str]] = {}
    plain_filter_params: ClassVar[tuple[str, ...]] = ()
    sort_fields: ClassVar[dict[str, str]] = {}
    default_sort = "-createdAt"
    # An action may name the right it needs (`@action(..., required_right="update")`); by default
    # the HTTP method decides (see RolePermission).
    required_right: str | None = None

    create_service: Callable[..., Any] = staticmethod(services.entity_create)
    update_service: Callable[..., Any] = staticmethod(services.entity_update)
    delete_service: Callable[..., Any] = staticmethod(services.entity_delete)

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__ or "queryset" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: override scoped_queryset(), not get_queryset()/queryset")

    @property
    def actor(self) -> Principal:
        """The caller (every endpoint here requires an authenticated IAM principal)."""
        return cast(Principal, self.request.user)

    def action_body(self, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
        """An action's request body validated by its serializer (400 with the contract's body)."""
        body = serializer_class(data=self.request.data if self.request.data is not None else {})
        body.is_valid(raise_exception=True)
        return dict(body.validated_data)

    def workflow_response(self, message: str, key: str, instance: Any, execution_id: str) -> Response:
        """The answer of an action that started a workflow: `{message, <key>: record, executionId}`."""
        return Response({"message": message, key: self.get_serializer(instance).data, "executionId": execution_id})

    # --- reads ---
    def get_queryset(self) -> QuerySet:
        user: Any = self.request.user if self.request else None
        org_id = getattr(user, "org_id", None)
        return self.scoped_queryset(self.model.objects.for_org(org_id))

    def scoped_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset

    def get_object(self) -> Any:
        identifier = self.kwargs[self.lookup_url_kwarg]
        if not is_valid_identifier(identifier):
            raise ValidationError({"id": [f"{identifier[:64]!r} is not a valid id"]})
        instance = find_by_identifier(self.get_queryset(), identifier)
        if instance is None:
            raise NotFound(f"{self.model.entity_label} with ID {identifier} not found")
        self.check_object_permissions(self.request, instance)
        return instance

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        user: Any = self.request.user if self.request is not None else None
        context["loader"] = RelatedLoader(getattr(user, "org_id", ""))
        context["populate"] = self.requested_populate()
        return context

    def requested_populate(self) -> frozenset[str]:
        """Relations named by `?populate=a,b`; naming one the entity does not offer is a 400."""
        request = getattr(self, "request", None)
        if request is None or "populate" not in request.query_params:
            return frozenset()
        offered = {
            name
            for name, field in getattr(self.get_serializer_class(), "_declared_fields", {}).items()
            if isinstance(field, PopulatedField) and field.on_request
        }
        names = {part.strip() for raw in request.query_params.getlist("populate") for part in raw.split(",")}
        names.discard("")
        unknown = sorted(names - offered)
        if unknown:
            allowed = ", ".join(sorted(offered)) or "none"
            raise ValidationError({"populate": [f"unknown relation {unknown[0][:64]!r}; allowed: {allowed}"]})
        return frozenset(names)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset) or []
        serializer = self.get_serializer(page, many=True)
        # Load every populated reference of the page in one query per referenced model.
        loader: RelatedLoader = serializer.context["loader"]
        for field in serializer.child.read_plan():  # type: ignore[attr-defined]
            if isinstance(field, PopulatedField) and field.is_wanted(serializer.context):
                loader.prime(field.model_label, {getattr(row, field.reference_field) for row in page})
        return self.get_paginated_response(serializer.data)

    # --- writes ---
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        instance = self.create_service(model=self.model, data=serializer.validated_data, actor=request.user)
        return Response(self.get_serializer(instance).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # PUT is a partial update, as the contract's examples send only the fields that change.
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        instance = self.update_service(instance=instance, data=serializer.validated_data, actor=request.user)
        return Response(self.get_serializer(instance).data)

    @extend_schema(responses={200: OpenApiResponse(DeleteResponse)})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        instance = self.delete_service(instance=self.get_object(), actor=request.user)
        return Response(
            {
                "message": f"{self.model.entity_label} deleted successfully",
                "deletedAt": format_datetime(instance.deleted_at),
            }
        )
