"""The Celery app (production: Redis broker, one beat). Tasks live in aiwm_project.tasks and the apps."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiwm_project.settings")

app = Celery("aiwm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    "sweep": {"task": "aiwm_project.tasks.sweep", "schedule": float(os.environ.get("AIWM_SWEEP_INTERVAL_SECONDS", 10))},
}
