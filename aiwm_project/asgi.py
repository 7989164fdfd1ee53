"""ASGI entry point: Django HTTP, Socket.IO (/socket.io/, namespace /ws/node) and the plain
WebSocket at /ws/node, on one port."""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiwm_project.settings")
django.setup(set_prefix=False)  # what get_asgi_application() does before building its handler

import socketio  # noqa: E402  (Django must be set up before the apps' modules are imported)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from aiwm_project.background import start_background_work_once  # noqa: E402
from aiwm_project.http_handler import PooledHTTPHandler  # noqa: E402
from aiwm_project.server import BodyLimit  # noqa: E402
from gateway.routing import websocket_urlpatterns  # noqa: E402
from gateway.socketio_app import sio  # noqa: E402
from inference.gateway import GATEWAY  # noqa: E402

django_http_app = PooledHTTPHandler(threads=settings.HTTP_WORKER_THREADS)
channels_app = ProtocolTypeRouter({"http": django_http_app, "websocket": URLRouter(websocket_urlpatterns)})
# Oversized bodies are refused before anything below buffers them (aiwm_project.server).


async def http_and_gateway(scope, receive, send):  # type: ignore[no-untyped-def]
    """/v1 is the inference gateway's (an ASGI app of its own: inference.gateway), the rest Django's."""
    if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
        await GATEWAY(scope, receive, send)
    else:
        await channels_app(scope, receive, send)


served_app = BodyLimit(socketio.ASGIApp(sio, other_asgi_app=http_and_gateway, socketio_path="socket.io"))


async def application(scope, receive, send):  # type: ignore[no-untyped-def]
    start_background_work_once()
    await served_app(scope, receive, send)


def tune_gc_for_a_socket_server() -> None:
    """A web process holds thousands of node sockets, each with its objects (engine.io sockets,
    sessions, queues). With CPython's defaults a full collection walks all of them and stops the
    event loop for 0.6-0.8 s at 2,000 nodes, once or twice in 10 s: the heartbeat p99 of the node
    swarm benchmark (BENCHMARKS.md "Node swarm"). Everything imported so far is frozen (never
    collected: it lives as long as the process), and a young collection waits for 50,000 new
    container objects instead of 700, so collections are rarer and walk less."""
    if settings.AIWM_GC_TUNING:
        gc.freeze()
        gc.set_threshold(settings.AIWM_GC_YOUNG_THRESHOLD, 10, 10)


tune_gc_for_a_socket_server()
