"""`python manage.py sweep`: run the periodic maintenance once, now, and print what it did.

The same pass Celery beat (with Redis) or the in-process ticker (without) runs every
AIWM_SWEEP_INTERVAL_SECONDS: offline nodes, step and execution timeouts, outbox recovery,
metric retention. Safe to run beside them (every step is a conditional update or SKIP LOCKED).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from aiwm_project.background import run_sweep


class Command(BaseCommand):
    help = "Run the periodic sweep once (offline nodes, execution timeouts, outbox recovery, metric retention)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, count in run_sweep().items():
            self.stdout.write(f"{name}: {count}")
