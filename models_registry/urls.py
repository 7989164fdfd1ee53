from rest_framework.routers import SimpleRouter

from models_registry.views import AIModelViewSet

router = SimpleRouter(trailing_slash=False)
router.register("models", AIModelViewSet, basename="model")
urlpatterns = router.urls
