from rest_framework.routers import SimpleRouter

from nodes.views import NodeViewSet

router = SimpleRouter(trailing_slash=False)
router.register("nodes", NodeViewSet, basename="node")
urlpatterns = router.urls
