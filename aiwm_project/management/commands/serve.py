"""`python manage.py serve`: the web process (HTTP API, admin, node WebSocket) as `make run` and
production run it - uvicorn configured by aiwm_project.server, with its limits at the edge."""

from __future__ import annotations

from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from uvicorn.supervisors import Multiprocess

from aiwm_project import metrics
from aiwm_project.management.commands.aiwm_banner import int_in_range, port_number
from aiwm_project.server import uvicorn_config

worker_count = int_in_range(1, 64, "a worker count")


class Command(BaseCommand):
    help = "Serve the HTTP API, the admin and the node WebSocket on one port."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=port_number, default=settings.AIWM_PORT)
        parser.add_argument("--workers", type=worker_count, default=1, help="web processes on this port (1-64)")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["workers"] > 1 and not settings.REDIS_URL:
            # Without Redis a node's socket and the commands for it must be in the same process.
            raise CommandError("--workers above 1 needs REDIS_URL (the embedded default is one process)")
        metrics.forget_dead_processes(counters=True)  # a new run of the web tier
        config = uvicorn_config(opts["host"], opts["port"], workers=opts["workers"])
        server = uvicorn.Server(config)
        if config.workers == 1:
            server.run()
            return
        # As `uvicorn --workers N`: one socket, N processes accepting on it.
        Multiprocess(config, sockets=[config.bind_socket()]).run()
