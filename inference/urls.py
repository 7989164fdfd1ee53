from django.urls import path
from rest_framework.routers import SimpleRouter

from inference.views import ApiKeyViewSet, ConversationChatView, UsageView

router = SimpleRouter(trailing_slash=False)
router.register("api-keys", ApiKeyViewSet, basename="api-key")
urlpatterns = [
    *router.urls,
    path("usage", UsageView.as_view(), name="usage"),
    path("conversations/<str:pk>/chat", ConversationChatView.as_view(), name="conversation-chat"),
]
