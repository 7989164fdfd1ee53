"""Operator view of the model registry: what is registered, where it lives, and whether it is downloaded."""

from django.contrib import admin

from aiwm_project.admin import OwnedModelAdmin
from models_registry.models import AIModel
from models_registry.serializers import AIModelSerializer


@admin.register(AIModel)
class AIModelAdmin(OwnedModelAdmin):
    api_serializer = AIModelSerializer
    list_display = (
        "model_id",
        "name",
        "type",
        "framework",
        "version",
        "node_id",
        "status",
        "is_downloaded",
        "download_progress",
        "file_size",
        "is_active",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("type", "framework", "status", "is_downloaded", "is_active", "is_deleted")
    search_fields = ("model_id", "name", "repository", "node_id", "owner_org_id")
