"""tests/node_daemon/daemon.mjs, the contract's "WebSocket Client Example (JavaScript)" made
runnable with the real npm `socket.io-client`, as a child process whose JSON-lines stdout a test
follows.

`make test` installs the npm package (`make node-deps`). Without Node.js or the package the
tests skip with the reason, except under CI=true, where that is a failure.

A plugin (tests/conftest.py): the `node_binary` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import pytest

from tests.support.environment import IN_CI, ROOT

DAEMON_DIR = ROOT / "tests" / "node_daemon"
DAEMON = DAEMON_DIR / "daemon.mjs"
WAIT = 15.0  # seconds: the bound on every wait for the daemon or the server


@pytest.fixture(scope="module")
def node_binary() -> str:
    """`node`, with socket.io-client installed at the pinned version; else skip (fail under CI)."""
    node = shutil.which("node")
    pinned = json.loads((DAEMON_DIR / "package.json").read_text())["dependencies"]["socket.io-client"]
    installed = DAEMON_DIR / "node_modules" / "socket.io-client" / "package.json"
    problem = None
    if node is None:
        problem = "Node.js (`node`) is not installed"
    elif not installed.exists():
        problem = "socket.io-client is not installed: run `make node-deps` (npm ci --prefix tests/node_daemon)"
    elif (version := json.loads(installed.read_text())["version"]) != pinned:
        problem = f"socket.io-client {version} is installed, package.json pins {pinned}: run `make node-deps`"
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true requires the npm client: {problem}")
        pytest.skip(problem)
    assert node is not None
    return node


class DaemonProcess:
    """The daemon as a child process; its stdout JSON lines are collected by a reader thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.eof = False
        self._changed = threading.Condition()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.raw.append(raw.rstrip("\n"))
                with suppress(ValueError):  # a non-JSON line stays in `raw`, for the failure report
                    self.lines.append(json.loads(raw))
                self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._stderr.append(raw)

    def report(self) -> str:
        with self._changed:
            out = "\n".join(self.raw[-40:])
        err = "".join(self._stderr)[-3000:]
        return f"daemon exit={self.process.poll()}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"

    def find(self, kind: str, event: str, where: Callable[[dict[str, Any]], bool] | None = None) -> list[dict]:
        with self._changed:
            return [
                line
                for line in self.lines
                if line.get("kind") == kind and line.get("event") == event and (where is None or where(line))
            ]

    def wait_for(
        self, kind: str, event: str, where: Callable[[dict[str, Any]], bool] | None = None, timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first line of that kind and event (matching `where`), waiting up to `timeout` for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.find(kind, event, where)
                if found:
                    return found[0]
                if self.eof:
                    raise AssertionError(f"the daemon exited before {kind} {event!r}\n{self.report()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {kind} {event!r} from the daemon within {timeout}s\n{self.report()}")
                self._changed.wait(remaining)

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon did not exit within {timeout}s\n{self.report()}") from None
        with self._changed:  # and let the reader take the last lines
            self._changed.wait_for(lambda: self.eof, timeout=5)
        return code


@contextmanager
def run_daemon(node: str, url: str, token: str, transports: str = "websocket,polling") -> Iterator[DaemonProcess]:
    args = [node, str(DAEMON), "--url", url, "--token", token, "--transports", transports]
    args += ["--heartbeat-ms", "200", "--max-seconds", "60"]
    process = subprocess.Popen(
        args,
        cwd=DAEMON_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_OPTIONS": ""},
    )
    try:
        yield DaemonProcess(process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def poll(check: Callable[[], Any], what: str, report: Callable[[], str], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {result!r})\n{report()}")
        time.sleep(0.1)


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
