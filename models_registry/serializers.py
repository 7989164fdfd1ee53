"""AI model JSON, exactly as the contract's schema names it."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from aiwm_project.api.serializers import EntitySerializer
from models_registry.models import AIModel

TAG_MAX_LENGTH = 64
MAX_TAGS = 50


class AIModelSerializer(EntitySerializer):
    tags = serializers.ListField(
        child=serializers.CharField(max_length=TAG_MAX_LENGTH), required=False, max_length=MAX_TAGS
    )

    class Meta:
        model = AIModel
        fields = [
            "model_id",
            "name",
            "description",
            "version",
            "type",
            "framework",
            "repository",
            "file_name",
            "file_size",
            "is_downloaded",
            "download_path",
            "download_progress",
            "status",
            "node_id",
            "total_inference",
            "total_tokens",
            "total_processing_time",
            "tags",
            "is_active",
        ]
        extra_kwargs = {
            "file_size": {"min_value": 0},
            "download_progress": {"min_value": 0, "max_value": 100},
            "total_inference": {"min_value": 0},
            "total_tokens": {"min_value": 0},
            "total_processing_time": {"min_value": 0},
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # "" and null both mean "not placed on a node"; store one of them.
        if attrs.get("node_id") == "":
            attrs["node_id"] = None
        return attrs
