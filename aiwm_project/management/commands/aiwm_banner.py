"""Printed by `make run` before the server starts: where it is and how to get a token."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


def int_in_range(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: ASCII digits naming an integer from `low` to `high` (argparse reports
    anything else as a usage error, "'70000' is not a port (1-65535)")."""

    def parse(value: str) -> int:
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what} ({low}-{high})")
        return int(value)

    return parse


# A TCP port, 1-65535.
port_number = int_in_range(1, 65535, "a port")


class Command(BaseCommand):
    help = "Print the service URLs and how to get a token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=port_number, default=settings.AIWM_PORT)

    def handle(self, *args: Any, **opts: Any) -> None:
        base = f"http://localhost:{opts['port']}"
        db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        mode = "Redis " + settings.REDIS_URL if settings.REDIS_URL else "embedded (no Redis)"
        lines = [
            "",
            f"AIWM {settings.AIWM_SERVER_VERSION} — database: {db}, bus: {mode}",
            f"  API:        {base}/api",
            f"  Swagger UI: {base}/api-docs   (schema: {base}/api-docs/schema)",
            f"  Health:     {base}/api/health",
            f"  Node WS:    ws://localhost:{opts['port']}/ws/node   (Socket.IO namespace, or plain WebSocket)",
            f"  Admin:      {base}/admin   (python manage.py createsuperuser)",
            "",
        ]
        if not settings.AIWM_LOCAL_LOGIN:
            lines.append("  Get a token from your IAM service (local login is off).")
            self.stdout.write("\n".join(lines))
            return
        lines += [
            "  Get a token:",
            "    .venv/bin/python manage.py create_iam_user --username admin --password 'change-me' \\",
            "        --org-id org-1 --roles organization.owner",
            f"    curl -s -X POST {base}/auth/login -H 'Content-Type: application/json' \\",
            '        -d \'{"username":"admin","password":"change-me"}\'',
            "  or, without a user:",
            "    .venv/bin/python manage.py issue_token --username admin --user-id u1 --org-id org-1 \\",
            "        --roles organization.owner",
            "",
        ]
        self.stdout.write("\n".join(lines))
