"""Celery tasks of the project: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from aiwm_project.background import run_sweep


@shared_task(name="aiwm_project.tasks.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    return run_sweep()
