from rest_framework.routers import SimpleRouter

from conversations.views import ConversationViewSet, MessageViewSet

router = SimpleRouter(trailing_slash=False)
router.register("conversations", ConversationViewSet, basename="conversation")
router.register("messages", MessageViewSet, basename="message")
urlpatterns = router.urls
