"""AI model JSON, exactly as the contract's schema names it."""

from __future__ import annotations

from aiwm_project.api.serializers import EntitySerializer, string_list
from models_registry.models import AIModel


class AIModelSerializer(EntitySerializer):
    tags = string_list()

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
