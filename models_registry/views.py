"""AI model registry REST endpoints (thin: scoping, filters and writes live in the shared base)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from aiwm_project.api.schema import entity_schema_view
from aiwm_project.api.viewsets import EntityViewSet
from executions.workflows import model_download
from models_registry.models import AIModel
from models_registry.serializers import AIModelSerializer

ModelDownloadResponse = inline_serializer(
    "ModelDownloadResponse",
    {"message": serializers.CharField(), "model": AIModelSerializer(), "executionId": serializers.CharField()},
)

MODEL_EXAMPLE_REQUEST = {
    "modelId": "llama-2-7b-v1",
    "name": "Llama 2 7B",
    "description": "Meta's Llama 2 7B parameter model",
    "version": "1.0.0",
    "type": "llm",
    "framework": "pytorch",
    "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
    "fileName": "model.safetensors",
    "fileSize": 13476875264,
    "nodeId": "node-gpu-01",
    "tags": ["llm", "chat", "meta"],
}
MODEL_EXAMPLE = {
    "_id": "68f2b2c3d4e5f6a7b8c9d0e1",
    **MODEL_EXAMPLE_REQUEST,
    "isDownloaded": False,
    "downloadPath": "",
    "downloadProgress": 0,
    "status": "queued",
    "totalInference": 0,
    "totalTokens": 0,
    "totalProcessingTime": 0,
    "isActive": True,
    "owner": {"orgId": "68dd05b175d9e3c17bf97f60", "userId": "68dcf365f6a92c0d4911b619", "groupId": ""},
    "createdBy": "68dcf365f6a92c0d4911b619",
    "updatedBy": "68dcf365f6a92c0d4911b619",
    "createdAt": "2025-11-16T11:00:00.000Z",
    "updatedAt": "2025-11-16T11:00:00.000Z",
}
MODEL_UPDATE_EXAMPLE = {"status": "downloading", "downloadProgress": 45, "isDownloaded": False}


@entity_schema_view(
    singular="model",
    create_verb="Register",
    example=MODEL_EXAMPLE,
    create_example=MODEL_EXAMPLE_REQUEST,
    update_example=("Download progress", MODEL_UPDATE_EXAMPLE),
    updated_example={**MODEL_EXAMPLE, **MODEL_UPDATE_EXAMPLE, "updatedAt": "2025-11-16T11:05:00.000Z"},
)
class AIModelViewSet(EntityViewSet):
    model = AIModel
    serializer_class = AIModelSerializer
    filter_fields = {
        "type": "type",
        "framework": "framework",
        "nodeId": "node_id",
        "isDownloaded": "is_downloaded",
        "status": "status",
        "isActive": "is_active",
        "tags": "tags",
        "modelId": "model_id",
    }
    sort_fields = {
        "createdAt": "created_at",
        "updatedAt": "updated_at",
        "name": "name",
        "modelId": "model_id",
        "type": "type",
        "framework": "framework",
        "status": "status",
        "fileSize": "file_size",
        "downloadProgress": "download_progress",
        "totalInference": "total_inference",
        "totalTokens": "total_tokens",
    }

    @extend_schema(
        summary="Download the model to its node: a download-model execution (model.download)",
        description="Answers at once with the execution that does the work; `status`, `downloadProgress`, "
        "`isDownloaded` and `downloadPath` follow the node's reports. 400 when the model has no node; 409 while "
        "another download of it is active.",
        tags=["Models"],
        request=None,
        responses={200: ModelDownloadResponse},
    )
    @action(detail=True, methods=["post"], url_path="download", required_right="update")
    def download(self, request: Request, id: str | None = None) -> Response:
        model, execution = model_download(model=self.get_object(), actor=self.actor)
        return self.workflow_response("Model download started", "model", model, execution.execution_id)
