"""ASGI entry point: Django HTTP (and, with the node gateway, the node WebSocket) on one port."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiwm_project.settings")

django_asgi_app = get_asgi_application()

application = django_asgi_app
