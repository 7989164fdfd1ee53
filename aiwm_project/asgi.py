"""ASGI entry point: Django HTTP, Socket.IO (/socket.io/, namespace /ws/node) and the plain
WebSocket at /ws/node, on one port."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiwm_project.settings")

django_asgi_app = get_asgi_application()

import socketio  # noqa: E402  (Django must be set up before the apps' modules are imported)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from aiwm_project.background import start_background_work_once  # noqa: E402
from nodes.routing import websocket_urlpatterns  # noqa: E402
from nodes.socketio_app import sio  # noqa: E402

channels_app = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
socketio_app = socketio.ASGIApp(sio, other_asgi_app=channels_app, socketio_path="socket.io")


async def application(scope, receive, send):  # type: ignore[no-untyped-def]
    start_background_work_once()
    await socketio_app(scope, receive, send)
