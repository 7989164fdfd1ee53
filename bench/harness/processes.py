"""Child processes of a benchmark. Each runs in its own process group (session), so stopping one
stops everything it started (a server's workers, a swarm's clients)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from bench.harness.env import REPO
from bench.harness.report import log


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the child's process group; SIGKILL it if it has not exited after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a child's log, for an error message ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Child:
    """A child process (Celery worker, beat, the Redis pong) in its own session, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path):
        self.name = name
        self.log_path = logdir / f"{name}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if text in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: no {text!r} in its log after {timeout:.0f}s:\n{self.tail()}")

    def tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        stop_group(self.proc, grace=15)


class LineProcess:
    """A child driven by lines: `python -m <module> <config.json>`, one-word commands on its stdin,
    JSON lines (`{"event": ...}`) answered on its stdout (its side: bench.harness.daemon)."""

    def __init__(
        self, module: str, name: str, index: int, cfg: dict[str, Any], env: dict[str, str], logdir: Path, tag: str = ""
    ):
        """`name` and `index` name the child in messages and its files; `tag` keeps one run's files
        apart from another's."""
        self.name, self.index = name, index
        config_path = logdir / f"{name}{tag}-{index}.json"
        config_path.write_text(json.dumps(cfg))
        config_path.chmod(0o600)  # node tokens
        self.stderr_path = logdir / f"{name}{tag}-{index}.err"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(config_path)],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode())
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        who = f"{self.name} {self.index}"
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{who}: no {event!r} after {timeout:.0f}s\n{self.err_tail()}") from None
        if line is None:
            raise RuntimeError(f"{who} exited ({self.proc.wait()}):\n{self.err_tail()}")
        payload: dict[str, Any] = json.loads(line)
        if payload.get("event") != event:
            raise RuntimeError(f"{who}: expected {event!r}, got {line[:200]!r}")
        return payload

    def err_tail(self) -> str:
        return log_tail(self.stderr_path)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Cleanup:
    """Everything to undo, newest first: children stopped, Redis flushed, databases dropped."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], None]]] = []

    def add(self, label: str, action: Callable[[], None]) -> None:
        self.actions.append((label, action))

    def remove(self, label: str) -> None:
        self.actions = [(name, action) for name, action in self.actions if name != label]

    def run(self, label: str | None = None) -> None:
        for name, action in reversed(list(self.actions)):
            if label is not None and name != label:
                continue
            try:
                action()
            except Exception as exc:
                log(f"clean-up {name}: {type(exc).__name__}: {exc}")
            self.remove(name)


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """This process's (and so its children's) open files limit raised to `needed`, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
