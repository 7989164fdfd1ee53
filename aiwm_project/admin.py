"""Admin base for owned entities.

The admin is for the installation's superusers: it is not scoped to an organization (the API
is). Records are created through the API (which stamps owner and tenancy); in the admin an
operator inspects, edits and soft-deletes them, and every edit goes through the same services
as the API (reference checks, audit stamps, soft delete), never a bare `save()`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, json_script

from aiwm_project import services
from aiwm_project.api.errors import flatten_validation_errors
from aiwm_project.auth import Principal
from aiwm_project.exceptions import ServiceError, ValidationFailed
from aiwm_project.models import LocalIdentity, OwnedModel

PRETTY_JSON = "_json"
AUDIT_FIELDS = (
    "id",
    "owner_org_id",
    "owner_user_id",
    "owner_group_id",
    "created_by",
    "updated_by",
    "created_at",
    "updated_at",
    "is_deleted",
    "deleted_at",
)


# Status values by how an operator should read them (the badges' colours).
GOOD_STATUSES = {"online", "running", "completed", "succeeded", "ready", "healthy", "acknowledged", "sent"}
WARN_STATUSES = {"maintenance", "pending", "queued", "downloading", "unknown", "cancelled", "stopped", "warning"}
BAD_STATUSES = {"offline", "failed", "timeout", "error", "expired", "unhealthy"}


STATUS_KINDS = {
    **{status: "warn" for status in WARN_STATUSES},
    **{status: "bad" for status in BAD_STATUSES},
    **{status: "ok" for status in GOOD_STATUSES},
}


def status_badge(value: Any) -> str:
    """A status as a coloured badge (console/static/console/admin.css)."""
    text = str(value or "-")
    return format_html('<span class="aiwm-badge {}" data-status="{}">{}</span>', STATUS_KINDS.get(text, ""), text, text)


def figure(value: Any, unit: str = "") -> str:
    """A reported number as the live refresh writes it (JavaScript's `${value}`), a dash when missing."""
    return "\u2013" if value is None else f"{value}{unit}"


def gpu_memory_bar(gpu: dict[str, Any]) -> str:
    """A GPU's memory, used / total (MB) beside a bar (a row of nodes.selectors.gpu_rows): on the
    node's page and the dashboard, whose live refresh (console/static/console/dashboard.js) redraws
    the same markup."""
    return format_html(
        '<span class="aiwm-bar"><span style="width: {}%"></span></span> {} / {}',
        gpu["memory_share"] or 0,
        figure(gpu["memory_used"]),
        figure(gpu["memory_total"]),
    )


def status_kinds_script() -> str:
    """The badges' colours for the pages' JavaScript (console/static/console/dashboard.js draws the
    badges of live events): one list, this module's."""
    return json_script(STATUS_KINDS, "aiwm-status-kinds")


def admin_actor(request: HttpRequest, obj: OwnedModel) -> Principal:
    """Admin edits are audited as `admin:<username>` acting in the record's own organization."""
    username = request.user.get_username() if request.user.is_authenticated else "anonymous"
    return Principal(user_id=f"admin:{username}", org_id=obj.owner_org_id, roles=("organization.owner",))


class DeletedFilter(admin.SimpleListFilter):
    """Soft-deleted rows are hidden unless asked for: an operator's lists show what is live."""

    title = "deleted"
    parameter_name = "is_deleted__exact"  # the stock boolean filter's parameter: old links keep working

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("0", "No (live)"), ("1", "Yes (deleted)"), ("all", "All")]

    def choices(self, changelist: Any) -> Any:
        current = self.value() or "0"
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value() or "0"
        if value == "all":
            return queryset
        return queryset.filter(is_deleted=value == "1")


class PrettyJSONField(forms.JSONField):
    """JSON documents in an edit form as an indented, monospace block rather than one long line."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"class": "aiwm-json-edit", "rows": 12, "cols": 100}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


@dataclass(frozen=True)
class Operation:
    """A button on a record's page: `call(obj, actor)` is the same service the API calls."""

    label: str
    call: Callable[[Any, Principal], Any]
    done: str


class StatusBadges:
    """A list's `status` column as coloured badges (still sorted by the status)."""

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)  # type: ignore[misc]
        return [f"{name}_badge" if name == "status" else name for name in shown]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Any) -> str:
        return status_badge(obj.status)


class OwnedModelAdmin(StatusBadges, admin.ModelAdmin):
    date_hierarchy = "created_at"
    list_per_page = 50
    ordering = ("-created_at",)
    show_full_result_count = False
    actions = ["soft_delete_selected"]
    # The same services the entity's API uses (an app may add rules to them).
    # The entity's API serializer: admin edits get the same validation as the API.
    api_serializer: Any = None
    update_service: Callable[..., Any] = staticmethod(services.entity_update)
    delete_service: Callable[..., Any] = staticmethod(services.entity_delete)

    formfield_overrides = {models.JSONField: {"form_class": PrettyJSONField}}
    # Buttons on the record's page (templates/admin/change_form.html), by URL name.
    operations: dict[str, Operation] = {}
    # Large JSON documents a list does not show: not read, nor decoded, for each row of its pages.
    list_defer: tuple[str, ...] = ()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> Any:
        base = super().get_changelist(request, **kwargs)
        deferred = self.list_defer
        if not deferred:
            return base

        class DeferringChangeList(base):  # type: ignore[misc, valid-type]
            def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
                return super().get_queryset(request, exclude_parameters).defer(*deferred)

        return DeferringChangeList

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        operate = path(
            "<path:object_id>/operate/<str:name>/",
            self.admin_site.admin_view(self.operate_view),
            name=f"{opts.app_label}_{opts.model_name}_operate",
        )
        return [operate, *super().get_urls()]

    def operate_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """POST only (CSRF-checked like every admin form); the service's refusal is shown, not raised."""
        operation = self.operations.get(name)
        obj = self.get_object(request, object_id)
        if request.method != "POST" or operation is None or obj is None:
            raise Http404("no such operation")
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        try:
            operation.call(obj, admin_actor(request, obj))
        except ServiceError as exc:
            self.message_user(request, f"{obj}: {exc.message} {' '.join(exc.errors)}".strip(), messages.ERROR)
        else:
            self.message_user(request, f"{obj}: {operation.done}.", messages.SUCCESS)
        opts = self.model._meta
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        context["operations"] = [(name, op.label) for name, op in self.operations.items()]
        return super().render_change_form(request, context, *args, **kwargs)

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [DeletedFilter if f == "is_deleted" else f for f in super().get_list_filter(request)] or [DeletedFilter]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        model: type[OwnedModel] = self.model
        names = (*AUDIT_FIELDS, model.business_id_field, *super().get_readonly_fields(request, obj))
        # A read-only JSON document is shown indented (`<name>_json`, below); the plain name stays
        # listed so the form leaves the field out.
        return (*names, *(f"{name}{PRETTY_JSON}" for name in names if self._is_json(name)))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = set(self.get_readonly_fields(request, obj))
        shown: list[Any] = list(super().get_fields(request, obj))
        pretty = [f for f in shown if isinstance(f, str) and f.endswith(PRETTY_JSON)]
        return [f"{f}{PRETTY_JSON}" if f in readonly and self._is_json(f) else f for f in shown if f not in pretty]

    def _is_json(self, name: Any) -> bool:
        try:
            return isinstance(name, str) and isinstance(self.model._meta.get_field(name), models.JSONField)
        except FieldDoesNotExist:
            return False

    def __getattr__(self, name: str) -> Any:
        """`<field>_json`: a read-only JSON field's display, an indented block (see get_fields)."""
        if not name.endswith(PRETTY_JSON):
            raise AttributeError(name)
        field_name = name.removesuffix(PRETTY_JSON)

        def show(obj: Any) -> str:
            value = getattr(obj, field_name)
            if value in (None, [], {}):
                return "-"
            return format_html("<div class='aiwm-json'>{}</div>", json.dumps(value, indent=2, ensure_ascii=False))

        show.short_description = self.model._meta.get_field(field_name).verbose_name  # type: ignore[attr-defined]
        return show

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # records are created through the API, which assigns their organization

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deletes are soft, through the action below

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        base = super().get_form(request, obj, change=change, **kwargs)
        model: type[OwnedModel] = self.model
        api_serializer = self.api_serializer

        class ApiValidatedForm(base):  # type: ignore[misc, valid-type]
            """Admin edits are held to the API's own validation (types, enumerations, JSON shapes,
            references), so the admin cannot store what the API would refuse."""

            def clean(self) -> dict[str, Any]:
                cleaned = super().clean()
                changed = [f for f in self.changed_data if f in cleaned]
                if api_serializer is not None and changed:
                    self._validate_like_the_api(api_serializer, cleaned, changed)
                refs = {k: cleaned.get(k) for k in model.references if k in changed}
                try:
                    services.validate_references(model=model, org_id=self.instance.owner_org_id, data=refs)
                except ValidationFailed as exc:
                    raise forms.ValidationError(exc.errors) from exc
                return cleaned

            def _validate_like_the_api(self, serializer_class: Any, cleaned: dict, changed: list[str]) -> None:
                api_names = {
                    field.source: name for name, field in serializer_class().fields.items() if not field.read_only
                }
                data = {api_names[f]: cleaned[f] for f in changed if f in api_names}
                serializer = serializer_class(self.instance, data=data, partial=True)
                if serializer.is_valid():
                    cleaned.update(serializer.validated_data)
                    return
                model_names = {api: source for source, api in api_names.items()}
                for api_name, detail in serializer.errors.items():
                    field = model_names.get(api_name)
                    lines = flatten_validation_errors(detail)
                    self.add_error(field if field in self.fields else None, forms.ValidationError(lines))

        return ApiValidatedForm

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        original = type(obj).objects.get(pk=obj.pk)
        changed = {field: getattr(obj, field) for field in form.changed_data}
        try:
            self.update_service(instance=original, data=changed, actor=admin_actor(request, original))
        except ServiceError as exc:
            # E.g. a rule of the entity's service, or a race with the engine: report it, no 500 page.
            self.message_user(request, f"{original}: {exc.message} {' '.join(exc.errors)}".strip(), messages.ERROR)

    def run_service_action(
        self, request: HttpRequest, queryset: QuerySet, done: str, call: Callable[[Any, Principal], Any]
    ) -> None:
        """Apply a service to each selected record as the admin user; a refusal is reported per record."""
        count = 0
        for obj in queryset:
            try:
                call(obj, admin_actor(request, obj))
                count += 1
            except ServiceError as exc:
                self.message_user(request, f"{obj}: {exc.message} {' '.join(exc.errors)}".strip(), messages.ERROR)
        self.message_user(request, f"{done} {count} record(s).", messages.SUCCESS)

    @admin.action(description="Soft delete selected records")
    def soft_delete_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.run_service_action(
            request,
            queryset.filter(is_deleted=False),
            "Soft-deleted",
            lambda obj, actor: self.delete_service(instance=obj, actor=actor),
        )


@admin.register(LocalIdentity)
class LocalIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "iam_user_id", "org_id", "group_id", "roles")
    search_fields = ("user__username", "org_id", "iam_user_id")
    readonly_fields = ("iam_user_id",)
