"""Where a node-list request spends its CPU, without the ASGI server: cProfile over Django's test client.

    .venv/bin/python bench/node_list.py --rows 10000 --duration 1 --rounds 1 --keep-db
    .venv/bin/python bench/profile_node_list.py --database-url postgres://postgres@127.0.0.1:5432/aiwm_bench_10000
    # then: psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE aiwm_bench_10000' -c 'DROP DATABASE aiwm_bench'

Runs the benchmarked request through the full Django stack (middleware, DRF view) in-process, for
the service and for the bare view, reports CPU and wall time per request, then the top functions by
cumulative time. This is a diagnostic, not a benchmark: the profiler inflates every call.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="cProfile of the node list, service vs bare view")
    parser.add_argument("--database-url", required=True, help="a database seeded by bench/node_list.py --keep-db")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    var_dir = tempfile.mkdtemp(prefix="aiwm-profile-")
    try:
        profile(args, var_dir)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def profile(args: argparse.Namespace, var_dir: str) -> None:
    os.environ.update(
        DATABASE_URL=args.database_url,
        DB_CONN_MAX_AGE="60",  # in-process the thread is reused, so the connection is too
        IAM_JWT_SECRET=secrets.token_urlsafe(32),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        DJANGO_SETTINGS_MODULE="aiwm_project.settings",
        AIWM_VAR_DIR=var_dir,
    )
    import django

    django.setup()
    from django.test import Client
    from django.test.utils import override_settings

    from aiwm_project.auth import issue_user_token
    from bench.nodelist import BENCH_PATH
    from bench.nodelist.dataset import org_id, typical_org_index

    token = issue_user_token(
        user_id="0" * 24, username="bench", org_id=org_id(typical_org_index()), roles=["organization.viewer"]
    )
    client = Client()
    n = max(1, min(args.requests, 10_000))

    def run(label: str) -> None:
        for _ in range(30):
            response = client.get(BENCH_PATH, HTTP_AUTHORIZATION=f"Bearer {token}")
            assert response.status_code == 200, response.content[:300]
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            client.get(BENCH_PATH, HTTP_AUTHORIZATION=f"Bearer {token}")
        cpu_ms = 1000 * (time.process_time() - cpu) / n
        wall_ms = 1000 * (time.perf_counter() - wall) / n
        print(f"\n== {label}: {cpu_ms:.2f} ms CPU, {wall_ms:.2f} ms wall per request (no profiler)")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            client.get(BENCH_PATH, HTTP_AUTHORIZATION=f"Bearer {token}")
        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(args.top)

    run("service")
    with override_settings(ROOT_URLCONF="bench.bare_urls"):
        run("bare view")


if __name__ == "__main__":
    main(sys.argv[1:])
