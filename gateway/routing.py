from django.urls import path

from gateway.consumers import NodeConsumer

websocket_urlpatterns = [path("ws/node", NodeConsumer.as_asgi())]
