"""The repository, and the environment a benchmark's service processes run with."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
# An operator's shell may point the IAM at a JWKS or a public key: the benchmarks sign their own
# HS256 tokens, so the server must check those and nothing else.
IAM_SETTINGS = ("IAM_JWKS_URL", "IAM_PUBLIC_KEY", "IAM_ISSUER", "IAM_AUDIENCE", "IAM_JWT_ALGORITHMS")


def service_env(*, dsn: str, logdir: Path, drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment of a benchmark's service processes: this process's, with the run's database,
    fresh secrets, the run's var/ directory, and the settings every benchmark measures with;
    `extra` on top. Variables named in `drop` (or starting with one of them) are removed."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "IAM_JWT_SECRET": secrets.token_urlsafe(32),
        "AIWM_NODE_TOKEN_SECRET": secrets.token_urlsafe(32),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "AIWM_VAR_DIR": str(logdir / "var"),
        "DEBUG": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        # Under ASGI each request runs in a new thread-sensitive context, so a persistent connection
        # is never reused: every request connects anyway, and the old connections linger until their
        # thread is collected, which on a shared PostgreSQL ends in "too many clients" (the settings'
        # default too).
        "DB_CONN_MAX_AGE": "0",
        # The in-process sweep (the embedded default) would rewrite the benchmark's rows while they are
        # measured; with REDIS_URL it is off anyway (Celery beat sweeps then).
        "AIWM_IN_PROCESS_SWEEP": "false",
        **extra,
    }
    for name in list(env):
        if name in IAM_SETTINGS or (drop and name.startswith(drop)):
            env.pop(name)
    return env


def use_env(env: dict[str, str], **overrides: str) -> None:
    """Make `env` (with `overrides`) this process's environment, before Django is set up in it.

    The benchmark's own process (seeding, checks) connects without the connection pool: a pool's
    idle connections to a template database would stop it being cloned (CREATE DATABASE ...
    TEMPLATE needs it unused). The servers it starts keep the service's settings."""
    os.environ.clear()
    os.environ.update({**env, "DB_POOL_MAX_SIZE": "0", **overrides})
