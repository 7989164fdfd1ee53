"""Operator view of the gateway's API keys: who has one, for what, when it was last used; revoked by
deleting it. Keys are created through the API (`POST /api/api-keys`), which shows the secret once."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from aiwm_project.admin import OwnedModelAdmin
from inference.models import ApiKey
from inference.serializers import ApiKeySerializer
from inference.services import api_key_revoke


@admin.register(ApiKey)
class ApiKeyAdmin(OwnedModelAdmin):
    api_serializer = ApiKeySerializer
    delete_service = staticmethod(api_key_revoke)
    list_display = ("api_key_id", "name", "prefix", "expires_at", "last_used_at", "owner_org_id", "is_deleted")
    list_filter = ("is_deleted",)
    search_fields = ("api_key_id", "name", "prefix", "owner_org_id")
    readonly_fields = ("prefix", "key_hash", "last_used_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a secret is shown once, by POST /api/api-keys
