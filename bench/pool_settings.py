"""Experiment (`node_list.py --db-pool`): the service's settings with psycopg's connection pool.

Under ASGI every request runs in a fresh thread-sensitive context, so Django's per-thread
persistent connections (CONN_MAX_AGE > 0) are never reused: each request opens a new PostgreSQL
connection. Django 5.1+ can instead borrow from a process-wide psycopg pool (needs `psycopg_pool`,
which the project does not install; the flag is for measuring what adopting it would gain).
"""

from aiwm_project.settings import *  # noqa: F403
from aiwm_project.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses a pool together with persistent connections
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 4, "timeout": 30}
