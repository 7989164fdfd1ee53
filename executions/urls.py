"""Executions routes under /api."""

from rest_framework.routers import SimpleRouter

from executions.views import ExecutionViewSet

router = SimpleRouter(trailing_slash=False)
router.register("executions", ExecutionViewSet, basename="execution")
urlpatterns = router.urls
