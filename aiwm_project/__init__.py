# Load the Celery app with Django, so `shared_task`s (and `.delay()` from a web process, a shell or a
# worker) use the project's configuration (Redis broker when REDIS_URL is set) instead of Celery's default app.
from aiwm_project.celery import app as celery_app

__all__ = ["celery_app"]
