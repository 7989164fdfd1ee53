"""Settings of the bare baseline: the service's settings (same middleware, database, secrets) with a
one-view URL map, so the only difference from the service is the view itself."""

from aiwm_project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
