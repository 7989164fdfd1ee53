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
            "sha256",
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
            "repository": {
                "help_text": "Where the node's agent gets the file from: an http(s) folder URL (the file is "
                "`<repository>/<fileName>`), a Hugging Face repository (`huggingface.co/org/name` or "
                "`hf://org/name`, optionally `@revision`; the agent honours HF_ENDPOINT and HF_TOKEN), or a "
                "path on the node (absolute, or `file://`), used where it is."
            },
            "sha256": {
                "help_text": "The file's expected SHA-256, 64 lowercase hex digits (optional, an addition to "
                "the contract): the agent refuses a download that does not match. Without it, the digest "
                "Hugging Face publishes is checked when there is one."
            },
            "file_size": {"min_value": 0},
            "download_progress": {"min_value": 0, "max_value": 100},
            "total_inference": {"min_value": 0},
            "total_tokens": {"min_value": 0},
            "total_processing_time": {"min_value": 0},
        }
