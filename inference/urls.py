from django.urls import path
from rest_framework.routers import SimpleRouter

from inference.views import ApiKeyViewSet, UsageView

router = SimpleRouter(trailing_slash=False)
router.register("api-keys", ApiKeyViewSet, basename="api-key")
urlpatterns = [*router.urls, path("usage", UsageView.as_view(), name="usage")]
