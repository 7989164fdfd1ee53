"""The node gateway driven by the real `socket.io-client` from npm, the client real daemons use.

tests/node_daemon/daemon.mjs is the contract's "WebSocket Client Example (JavaScript)" made
runnable; here it runs as a real Node.js process against the live server (`gateway`), and the
test follows its JSON-lines stdout while it reads and writes through the REST API over HTTP:
connect with auth.token -> connection.ack -> node.register -> register.ack -> heartbeats ->
node online in REST -> a command sent through REST arrives with the contract's envelope ->
command.ack + command.result -> the command is `succeeded` in REST.

`make test` installs the npm package (`make node-deps`). Without Node.js or the package the
tests skip with the reason, except under CI=true, where that is a failure.
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
from pathlib import Path
from typing import Any

import pytest
import requests

from aiwm_project.auth import issue_user_token
from nodes.services import node_issue_token
from tests.conftest import IN_CI, ORG_A
from tests.gateway import OWNER_A, LiveGateway, make_node

pytestmark = pytest.mark.django_db(transaction=True)

DAEMON_DIR = Path(__file__).resolve().parent / "node_daemon"
DAEMON = DAEMON_DIR / "daemon.mjs"
ENVELOPE_KEYS = {"type", "messageId", "timestamp", "resource", "data", "metadata"}
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


class Rest:
    """The REST API of the live server, over HTTP, as organization A's owner."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        roles = ["organization.owner"]
        token = issue_user_token(user_id=OWNER_A.user_id, username="owner-a", org_id=ORG_A, roles=roles)
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> Any:
        response = self.session.get(f"{self.base}{path}", timeout=10)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.session.post(f"{self.base}{path}", json=body, timeout=10)
        assert response.status_code == 201, (path, response.status_code, response.text)
        return response.json()


def poll(check: Callable[[], Any], what: str, report: Callable[[], str], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last: {result!r})\n{report()}")
        time.sleep(0.1)


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("scheme", "transports", "expected_transport"),
    [
        pytest.param("ws", "websocket,polling", "websocket", id="websocket-first-as-the-contract"),
        pytest.param("http", "polling", "polling", id="polling-only"),
    ],
)
def test_contract_daemon_registers_heartbeats_and_runs_a_rest_command(
    node_binary: str, gateway: LiveGateway, scheme: str, transports: str, expected_transport: str
) -> None:
    node, token = make_node()
    rest = Rest(gateway.url)
    with run_daemon(node_binary, f"{scheme}://127.0.0.1:{gateway.port}", token, transports) as daemon:
        connected = daemon.wait_for("lifecycle", "connect")
        assert connected["transport"] == expected_transport, daemon.report()

        ack = daemon.wait_for("received", "connection.ack")["data"]
        assert ack["type"] == "connection.ack" and ack["status"] == "success", ack
        assert ack["nodeId"] == node.node_id and ack["controllerId"] and ack["serverVersion"]
        assert ack["messageId"] and _iso(ack["timestamp"])

        register = daemon.wait_for("sent", "node.register")["data"]
        registered = daemon.wait_for("received", "register.ack")["data"]
        assert registered["type"] == "register.ack", registered
        assert registered["data"]["status"] == "success" and registered["data"]["nodeId"] == node.node_id
        assert registered["data"]["controllerInfo"]["heartbeatInterval"] > 0
        assert registered["data"]["pendingCommands"] == []

        daemon.wait_for("sent", "telemetry.heartbeat")

        # Online in REST, with what node.register reported and what only a heartbeat carries.
        def online() -> dict[str, Any] | None:
            body = rest.get(f"/api/nodes/{node.pk}")
            ok = (
                body["status"] == "online"
                and body["websocketConnected"] is True
                and body["lastHeartbeat"]
                and body["activeDeployments"] == 2
                and body["cpuUsage"] == 45.5
            )
            return body if ok else None

        shown = poll(online, "node online with a heartbeat in GET /api/nodes/:id", daemon.report)
        assert _iso(shown["lastHeartbeat"]) > _iso(shown["registeredAt"])
        assert shown["hostname"] == register["data"]["hostname"] == "gpu-server-01"
        assert shown["ipAddress"] == "10.10.0.101" and shown["daemonVersion"] == "1.0.0"
        assert shown["gpuDevices"][0]["deviceId"] == "GPU-0"
        assert shown["gpuDevices"][0]["model"] == "NVIDIA RTX 4090"
        assert shown["gpuDevices"][0]["utilization"] == 80 and shown["gpuDevices"][0]["temperature"] == 72

        # A command through REST reaches the daemon with exactly the contract's envelope.
        sent = {
            "type": "model.download",
            "resource": {"type": "model", "id": "llama-2-7b-v1"},
            "data": {
                "repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf",
                "fileName": "model.safetensors",
                "downloadPath": "/models/llama-2-7b",
            },
            "metadata": {"executionId": "exec-deploy-llama-001", "stepIndex": 0, "timeout": 1800, "priority": "high"},
        }
        created = rest.post(f"/api/nodes/{node.pk}/commands", sent)
        message_id = created["messageId"]

        command = daemon.wait_for("received", "model.download")["data"]
        assert set(command) == ENVELOPE_KEYS, command
        assert command["type"] == "model.download" and command["messageId"] == message_id
        assert command["resource"] == sent["resource"] and command["data"] == sent["data"]
        assert command["metadata"] == sent["metadata"]
        assert _iso(command["timestamp"]).tzinfo is not None

        mine = lambda line: line["data"]["data"]["originalMessageId"] == message_id  # noqa: E731
        acked = daemon.wait_for("sent", "command.ack", mine)["data"]
        assert acked["metadata"] == sent["metadata"]
        result = daemon.wait_for("sent", "command.result", mine)["data"]["data"]
        assert result["status"] == "success"

        def finished() -> dict[str, Any] | None:
            listed = rest.get(f"/api/nodes/{node.pk}/commands")["data"]
            row = next((row for row in listed if row["messageId"] == message_id), None)
            return row if row and row["status"] == "succeeded" else None

        row = poll(finished, "the command succeeded in GET /api/nodes/:id/commands", daemon.report)
        downloaded = {"downloadedFiles": 12, "totalSize": 13476875264, "downloadPath": "/models/llama-2-7b"}
        assert row["result"] == result["result"] == downloaded
        assert row["progress"] == 100 and row["error"] is None
        assert row["sentAt"] and row["acknowledgedAt"] and row["completedAt"]
        assert row["type"] == "model.download" and row["resource"] == sent["resource"]

        # Everything the daemon sent was accepted: the server never answered with an `error`.
        assert daemon.find("received", "error") == [], daemon.report()

        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0, daemon.report()

    poll(
        lambda: rest.get(f"/api/nodes/{node.pk}")["websocketConnected"] is False,
        "websocketConnected false after the daemon hung up",
        daemon.report,
    )


@pytest.mark.parametrize("which", ["revoked", "garbage"])
def test_a_refused_token_is_a_connect_error_and_a_non_zero_exit(
    node_binary: str, gateway: LiveGateway, which: str
) -> None:
    node, token = make_node()
    if which == "revoked":
        node_issue_token(node=node, actor_id=OWNER_A.user_id)  # rotation revokes the first token
        reason = "node token revoked"
    else:
        token = "not-a-token"
    with run_daemon(node_binary, f"ws://127.0.0.1:{gateway.port}", token) as daemon:
        error = daemon.wait_for("lifecycle", "connect_error")
        assert daemon.wait_exit() == 1, daemon.report()
    assert daemon.find("lifecycle", "connect") == [] and daemon.find("received", "connection.ack") == []
    # The refusal reaches a JavaScript client readably: err.message is the reason, err.data its code.
    assert error["data"] and error["data"]["code"] == "UNAUTHORIZED", error
    assert error["message"] == error["data"]["message"], error
    if which == "revoked":
        assert error["message"] == reason
    node.refresh_from_db()
    assert node.websocket_connected is False and node.status == "offline"
