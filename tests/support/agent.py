"""The node agent (aiwm_node) as a real process of its own, as an operator starts it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class AgentProcess:
    """`python -m aiwm_node run` against a live server, with its own data dir and log file."""

    def __init__(self, *, server: str, token: str, data_dir: Path, **settings: Any):
        self.server, self.token, self.data_dir = server, token, data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # Quick reconnects for tests (the defaults: 1 s doubling to 60 s).
        config = {"reconnect_base_seconds": 0.2, "reconnect_cap_seconds": 1.0, **settings}
        (data_dir / "config.toml").write_text(
            "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
        )
        self.log_path = data_dir / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AIWM_NODE_TOKEN": self.token}
        env.pop("DJANGO_SETTINGS_MODULE", None)  # the agent knows nothing of Django
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "aiwm_node", "run", "--server", self.server, "--data-dir", str(self.data_dir)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait (the agent's orderly stop); the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"the agent did not stop on SIGTERM within {timeout} s:\n{self.log()}") from None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to tidy up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "aiwm_node", "status", "--data-dir", str(self.data_dir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=30,
            check=True,
        )
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer


def model_server_pids(deployment_id: str) -> list[int]:
    """The processes serving a deployment on this machine (the agent tags each model server's
    environment with AIWM_DEPLOYMENT_ID)."""
    import psutil

    found = []
    for process in psutil.process_iter(["environ"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["environ"] or {}).get("AIWM_DEPLOYMENT_ID") == deployment_id:
                found.append(process.pid)
    return found


def kill_model_servers(deployment_id: str) -> None:
    """What a failed test left running (each server leads its own process group)."""
    for pid in model_server_pids(deployment_id):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@contextmanager
def running_agent(**kwargs: Any) -> Iterator[AgentProcess]:
    agent = AgentProcess(**kwargs).start()
    try:
        yield agent
    finally:
        if agent.alive():
            agent.kill()
