"""What every benchmark prints the same way: its log lines and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version

from bench.harness.env import REPO

SOCKET_STACK = ("daphne", "uvicorn", "websockets", "python-socketio", "python-engineio", "aiohttp", "Django")


def log(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line(pg_version: str, *more: str) -> str:
    """`machine: ...`: CPUs, load average, Python and PostgreSQL versions, then `more`, `; `-separated."""
    line = (
        f"machine: {os.cpu_count()} CPUs, load average {load_average()} at start; "
        f"Python {platform.python_version()}, PostgreSQL {pg_version}"
    )
    return "; ".join([line, *more])


def versions(*names: str) -> str:
    """`name version, ...` of installed distributions."""
    return ", ".join(f"{n} {version(n)}" for n in names)


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "git: unavailable"
    return f"git HEAD {head}, {len(dirty)} changed/untracked paths in the working tree"
