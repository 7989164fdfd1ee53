from rest_framework.routers import SimpleRouter

from agents.views import AgentViewSet, InstructionViewSet, ToolViewSet

router = SimpleRouter(trailing_slash=False)
router.register("instructions", InstructionViewSet, basename="instruction")
router.register("agents", AgentViewSet, basename="agent")
router.register("tools", ToolViewSet, basename="tool")
urlpatterns = router.urls
