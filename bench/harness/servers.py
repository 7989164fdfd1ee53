"""An ASGI server process on loopback and a free port: `manage.py serve` (`make run`'s command,
uvicorn as aiwm_project/server.py configures it), daphne, or plain uvicorn."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness.env import REPO
from bench.harness.processes import log_tail, stop_group
from bench.harness.procfs import children, cmdline

HOST = "127.0.0.1"
SERVICE_APP = "aiwm_project.asgi:application"


def free_port() -> int:
    """A port free on loopback now (the socket is let go: two calls can name the same port)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def kind_for_app(kind: str, app: str) -> str:
    """The server kind that runs `app`: "serve" serves only the service's own application, so
    anything else (an instrumented service, an echo baseline) runs on plain uvicorn, the same
    server with httptools and uvloop that `serve` configures (without its edge limits)."""
    return "uvicorn" if kind == "serve" and app != SERVICE_APP else kind


class Server:
    """One ASGI server process serving `app` (module:attribute), killed on exit. Kinds: "serve"
    (`make run`'s command; it serves the service's application, `app` is not used), "daphne",
    "uvicorn" (httptools and uvloop, which the project installs, as `serve` uses). `workers` > 1
    (kind "serve" only) is `manage.py serve --workers N`: a master process and N web processes
    accepting on its one socket (the kernel spreads the connections)."""

    def __init__(self, kind: str, app: str, env: dict[str, str], logdir: Path, label: str, workers: int = 1):
        if workers > 1 and kind != "serve":
            raise ValueError(f"{kind}: several web processes only with manage.py serve")
        self.kind, self.app, self.env, self.label, self.workers = kind, app, env, label, workers
        self.port = free_port()
        self.log_path = logdir / f"{label}-{kind}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.kind == "serve":
            serve = [sys.executable, str(REPO / "manage.py"), "serve", "--host", HOST, "--port", str(self.port)]
            return serve + (["--workers", str(self.workers)] if self.workers > 1 else [])
        binary = REPO / ".venv" / "bin" / self.kind
        exe = str(binary if binary.exists() else shutil.which(self.kind) or self.kind)
        if self.kind == "daphne":
            return [exe, "-b", HOST, "-p", str(self.port), self.app]
        # ARCHITECTURE.md: with uvicorn, turn off WebSocket per-message deflate.
        return [
            *(exe, "--host", HOST, "--port", str(self.port), "--lifespan", "off"),
            *("--ws-per-message-deflate", "false", self.app),
        ]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def web_processes(self) -> list[int]:
        """The processes that serve: this one, or with `workers` > 1 its workers (uvicorn spawns them
        through multiprocessing, whose resource tracker is a child too but serves nothing)."""
        if self.workers == 1:
            return [self.pid]
        return [pid for pid in children(self.pid) if "spawn_main" in cmdline(pid)]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as logfile:
            self.proc = subprocess.Popen(
                self.command(), cwd=REPO, env=self.env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )

    def accepts(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1):
            return True

    def wait_ready(self, timeout: float = 90.0, probe: Callable[[], bool] | None = None) -> None:
        """Until the server accepts a connection, or `probe` returns True (an OSError or HTTPException
        from it means not yet; anything else it raises is the answer)."""
        assert self.proc is not None
        probe = probe or self.accepts
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} server exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.workers_started() and probe():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def workers_started(self) -> bool:
        """Every web process has loaded the application and logged so (the master's socket accepts
        before they have: a connection would wait in its backlog for whichever worker comes up first)."""
        if self.workers == 1:
            return True
        pids = self.web_processes()
        text = self.log_path.read_text(errors="replace")
        return len(pids) == self.workers and all(f"Started server process [{pid}]" in text for pid in pids)

    def stop(self) -> None:
        stop_group(self.proc, grace=15)

    def log_tail(self) -> str:
        return log_tail(self.log_path)
