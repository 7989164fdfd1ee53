"""Operator view of deployments: what runs where, in which environment, and how it is doing."""

from django.contrib import admin

from aiwm_project.admin import AUDIT_FIELDS, OwnedModelAdmin
from deployments.models import Deployment, DeploymentLog
from deployments.serializers import DeploymentSerializer
from executions.workflows import deployment_delete
from nodes.admin import ReadOnlyAdmin


@admin.register(Deployment)
class DeploymentAdmin(OwnedModelAdmin):
    api_serializer = DeploymentSerializer
    # The API's rule: no delete while it runs or a workflow is starting or stopping it.
    delete_service = staticmethod(deployment_delete)
    list_display = (
        "deployment_id",
        "name",
        "environment",
        "status",
        "is_running",
        "model_id",
        "node_id",
        "replicas",
        "hardware_profile",
        "last_health_check",
        "owner_org_id",
        "is_deleted",
    )
    list_filter = ("status", "environment", "is_running", "deployment_type", "hardware_profile", "is_deleted")
    search_fields = ("deployment_id", "name", "model_id", "node_id", "container_name", "owner_org_id")
    # The event log is appended by services under a row lock; an admin form save would race it.
    readonly_fields = (*AUDIT_FIELDS, "events")


@admin.register(DeploymentLog)
class DeploymentLogAdmin(ReadOnlyAdmin):
    list_display = ("deployment_id", "level", "timestamp", "node_id", "message")
    list_filter = ("level",)
    search_fields = ("deployment_id", "node_id", "message")
    date_hierarchy = "timestamp"
    show_full_result_count = False
