"""The PostgreSQL pass of `make test`: the whole suite again, on a real PostgreSQL server.

Without a reachable server it skips with a visible reason, except under CI=true where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else "postgres://postgres@127.0.0.1:5432/postgres"
    try:
        psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
    except psycopg.Error as exc:
        message = f"PostgreSQL at {url} is not reachable: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            print(f"FAILED: CI=true requires PostgreSQL. {message}", file=sys.stderr)
            return 1
        print(f"SKIPPED the PostgreSQL pass: {message}")
        return 0
    env = {**os.environ, "DATABASE_URL": url}
    print(f"PostgreSQL pass against {url}", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", *sys.argv[2:]], env=env)


if __name__ == "__main__":
    sys.exit(main())
