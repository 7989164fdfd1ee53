"""Admin base for owned entities. The admin is for the installation's superusers: it is not
scoped to an organization (the API is); audit fields are shown read-only."""

from __future__ import annotations

from django.contrib import admin

from aiwm_project.models import LocalIdentity

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


class OwnedModelAdmin(admin.ModelAdmin):
    readonly_fields = AUDIT_FIELDS
    date_hierarchy = "created_at"
    list_per_page = 50
    ordering = ("-created_at",)
    show_full_result_count = False


@admin.register(LocalIdentity)
class LocalIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "iam_user_id", "org_id", "group_id", "roles")
    search_fields = ("user__username", "org_id", "iam_user_id")
    readonly_fields = ("iam_user_id",)
