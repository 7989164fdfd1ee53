"""The command-line flags every benchmark has: its PostgreSQL server and database, its Redis."""

from __future__ import annotations

import argparse
import re


def add_database_flags(parser: argparse.ArgumentParser, db: str, keep: str) -> None:
    """`--pg`, `--db` (default `db`), `--keep-db` (its help: `keep`)."""
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--db", default=db, help="database to create (and drop) for the run")
    parser.add_argument("--keep-db", action="store_true", help=keep)


def add_redis_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL (no database number)")
    parser.add_argument("--redis-db", type=int, default=None, help="Redis database number (default: an empty one)")


def check_database_name(parser: argparse.ArgumentParser, name: str) -> None:
    """`--db` must be a plain name the benchmark may drop (room left for a `_tpl` or `_<rows>` suffix)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", name) or name in ("postgres", "template0", "template1"):
        parser.error("--db: a plain lower-case database name of the benchmark's own")
