"""`python manage.py serve`: the web process (HTTP API, admin, node WebSocket) as `make run` and
production run it - uvicorn configured by aiwm_project.server, with its limits at the edge."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from uvicorn.supervisors import Multiprocess

from aiwm_project import metrics
from aiwm_project.management.commands.aiwm_banner import int_in_range, port_number
from aiwm_project.server import uvicorn_config

worker_count = int_in_range(1, 64, "a worker count")


class Command(BaseCommand):
    help = "Serve the HTTP API, the admin and the node WebSocket on one port."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=port_number, default=settings.AIWM_PORT)
        parser.add_argument("--workers", type=worker_count, default=1, help="web processes on this port (1-64)")
        parser.add_argument(
            "--local-node",
            metavar="ORG_ID",
            help="also run this machine as a node of ORG_ID: its record, its token and its agent (aiwm_node)",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["workers"] > 1 and not settings.REDIS_URL:
            # Without Redis a node's socket and the commands for it must be in the same process.
            raise CommandError("--workers above 1 needs REDIS_URL (the embedded default is one process)")
        metrics.forget_dead_processes(counters=True)  # a new run of the web tier
        config = uvicorn_config(opts["host"], opts["port"], workers=opts["workers"])
        agent = start_local_node(opts["local_node"], opts["port"]) if opts["local_node"] else None
        try:
            if config.workers == 1:
                uvicorn.Server(config).run()
            else:
                # As `uvicorn --workers N`: one socket, N processes accepting on it.
                Multiprocess(config, sockets=[config.bind_socket()]).run()
        finally:
            if agent is not None:
                stop_local_node(agent)


def start_local_node(org_id: str, port: int) -> subprocess.Popen[bytes]:
    """Enrol this machine (nodes.services.local_node_enroll) and start its agent, which connects
    once the server listens (its reconnect loop waits for it). Its state is in var/node."""
    from nodes.services import local_node_enroll

    hostname = socket.gethostname()
    node_id = "local-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", hostname).strip("-") or "machine")
    node, token = local_node_enroll(org_id=org_id, node_id=node_id[:128], name=f"This machine ({hostname})")
    data_dir = settings.VAR_DIR / "node"
    server = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "aiwm_node", "run", "--server", server, "--data-dir", str(data_dir)]
    env = {**os.environ, "AIWM_NODE_TOKEN": token, "PYTHONPATH": str(settings.BASE_DIR)}
    process = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, preexec_fn=_end_with_parent)
    print(f"Local node: {node.node_id} (organization {org_id}), agent pid {process.pid}, in {data_dir}", flush=True)
    return process


def _end_with_parent() -> None:
    """In the agent's process before it runs: SIGTERM it when the server's process ends, however
    it ends — uvicorn re-raises the SIGTERM or SIGINT it stopped on, which ends the process before
    any `finally` here runs, and a SIGKILL leaves no chance at all (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def stop_local_node(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
