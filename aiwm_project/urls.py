"""URL map: the REST API under /api, Swagger at /api-docs, local login, the admin, /metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from aiwm_project.api.views import HealthView, LoginView, asyncapi_document
from console.admin_views import api_token_view, gpu_series_view, summary_view
from console.metrics import metrics_view

api_patterns: list = [
    path("health", HealthView.as_view(), name="health"),
    path("", include("nodes.urls")),
    path("", include("models_registry.urls")),
    path("", include("agents.urls")),
    path("", include("deployments.urls")),
    path("", include("executions.urls")),
    path("", include("conversations.urls")),
    path("", include("inference.urls")),
    path("", include("console.urls")),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("auth/login", LoginView.as_view(), name="login"),
    path("api-docs/schema", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api-docs/asyncapi.yaml", asyncapi_document, name="asyncapi-document"),
    path("api-docs", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="swagger-ui"),
    path("admin/api-token/", admin.site.admin_view(api_token_view), name="admin-api-token"),
    path("admin/console/summary.json", admin.site.admin_view(summary_view), name="admin-console-summary"),
    path("admin/console/gpu-series.json", admin.site.admin_view(gpu_series_view), name="admin-console-gpu-series"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "aiwm_project.api.views.bad_request"
handler403 = "aiwm_project.api.views.forbidden"
handler404 = "aiwm_project.api.views.not_found"
handler500 = "aiwm_project.api.views.internal_error"
