"""The agent's life: connect, register, report, take commands, and do it again after every drop.

python-socketio's client gives up after a disconnect the server initiated and raises on `emit`
while disconnected, so the agent owns its connection loop: a fresh client per attempt, jittered
exponential backoff between attempts (reset once a session registered), and everything that must
arrive — command acks and results, deployment status, log batches — written to the outbox first
(aiwm_node.store) and sent from there in order, each with a Socket.IO acknowledgement: the control
plane acknowledges after it applied (or refused) the message, and only then is it dropped from the
outbox. After a reconnect the rest goes again with the same `messageId`s, which the control plane
applies once. Heartbeats and metrics are sent only while connected, never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from aiwm_node import protocol
from aiwm_node.config import Config, agent_id
from aiwm_node.files import write_atomically
from aiwm_node.gpus import Gpus
from aiwm_node.machine import Machine, primary_address
from aiwm_node.store import Store
from aiwm_node.supervisor import Server, Supervisor, available_backends

log = logging.getLogger("aiwm_node")

REGISTER_TIMEOUT_SECONDS = 30.0
SEND_TIMEOUT_SECONDS = 30.0
# Intervals until register.ack gives the control plane's own (the contract's defaults).
DEFAULT_HEARTBEAT_MS = 30_000
DEFAULT_METRICS_MS = 60_000


class CommandError(Exception):
    """A command that cannot be carried out: its result is an error with this code."""

    def __init__(self, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details

    def error(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class CommandRun:
    """One command being carried out: its handler's task and the event that asks it to stop."""

    body: dict[str, Any]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def resource_id(self) -> str:
        resource = self.body.get("resource")
        return str(resource.get("id", "")) if isinstance(resource, dict) else ""


Handler = Callable[["Agent", CommandRun], Awaitable[dict[str, Any]]]


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before connection attempt `attempt` (1, 2, ...): exponential, capped, with jitter
    (between half and all of it) so that a fleet cut off together does not come back in step."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


class Agent:
    def __init__(self, config: Config, *, gpus: Gpus | None = None, handlers: dict[str, Handler] | None = None):
        from aiwm_node.commands import HANDLERS

        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = agent_id(config.data_dir)
        self.store = Store(config.store_path)
        self.gpus = gpus if gpus is not None else Gpus.open()
        self.machine = Machine(gpus=self.gpus, data_dir=config.data_dir, server_url=config.server)
        self.handlers = dict(HANDLERS if handlers is None else handlers)
        self.runs: dict[str, CommandRun] = {}
        self.heartbeat_ms = DEFAULT_HEARTBEAT_MS
        self.metrics_ms = DEFAULT_METRICS_MS
        self.node_id = config.node_id
        self._sio: socketio.AsyncClient | None = None
        self._outbox_ready = asyncio.Event()
        self.components: dict[str, Any] = {}  # the downloader, the supervisor: made on first use

    # --- The connection loop.

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: adopt the model servers still running, resume interrupted
        commands, then connect again after every drop."""
        self.store.forget_old_commands()
        supervisor = self.supervisor()
        supervisor.adopt()
        for command in self.store.running_commands():
            log.info("resuming %s %s, interrupted by the agent's restart", command.type, command.message_id)
            self._start(command.body)
        attempt = 0
        while not stop.is_set():
            try:
                registered = await self._session(stop)
            except Exception:  # whatever broke this session, the agent lives on and connects again
                log.exception("the session with %s failed", self.config.server)
                registered = False
            if stop.is_set():
                break
            attempt = 1 if registered else attempt + 1
            delay = backoff(attempt, self.config.reconnect_base_seconds, self.config.reconnect_cap_seconds)
            log.info("reconnecting in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        for run in list(self.runs.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in self.runs.values() if r.task is not None), return_exceptions=True)
        await supervisor.close()  # the model servers go on running: the next start adopts them
        self.store.close()

    async def _session(self, stop: asyncio.Event) -> bool:
        """One connection, from connecting to its end. True when it got as far as register.ack."""
        sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
        registered = asyncio.Event()
        ack_data: dict[str, Any] = {}

        async def on_register_ack(body: Any) -> None:
            data = body.get("data") if isinstance(body, dict) else None
            if isinstance(data, dict):
                ack_data.update(data)
                registered.set()

        async def on_error(body: Any) -> None:
            log.warning("the control plane refused a message: %s", json.dumps(body)[:500])

        async def on_command(body: Any) -> None:
            self.on_command(body)

        sio.on("register.ack", on_register_ack, namespace=protocol.NAMESPACE)
        sio.on("error", on_error, namespace=protocol.NAMESPACE)
        for name in protocol.COMMANDS:
            sio.on(name, on_command, namespace=protocol.NAMESPACE)
        auth = {"token": self.config.token, **({"nodeId": self.config.node_id} if self.config.node_id else {})}
        try:
            await sio.connect(
                self.config.server,
                namespaces=[protocol.NAMESPACE],
                auth=auth,
                transports=["websocket"],
                wait_timeout=30,
            )
        except socketio.exceptions.ConnectionError as exc:
            log.warning("cannot connect to %s: %s", self.config.server, exc)
            return False
        tasks: list[asyncio.Task[Any]] = []
        try:
            await sio.emit("node.register", self._register_message(), namespace=protocol.NAMESPACE)
            done = asyncio.create_task(sio.wait())
            waiting = asyncio.create_task(registered.wait())
            await asyncio.wait({done, waiting}, timeout=REGISTER_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if not registered.is_set():
                log.warning("no register.ack within %.0f s: reconnecting", REGISTER_TIMEOUT_SECONDS)
                done.cancel()
                return False
            self._sio = sio
            self._on_registered(ack_data)
            tasks = [
                asyncio.create_task(self._send_outbox(sio)),
                asyncio.create_task(self._telemetry(sio)),
                asyncio.create_task(_stop_on(stop, sio)),
            ]
            await done
            log.info("disconnected from %s", self.config.server)
            return True
        finally:
            self._sio = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if sio.connected:
                await sio.disconnect()

    def _register_message(self) -> dict[str, Any]:
        facts = self.machine.facts(backends=self.backends(), deployments=self.deployments())
        return protocol.envelope("node.register", {**facts, "agentId": self.agent_id})

    def _on_registered(self, data: dict[str, Any]) -> None:
        info = data.get("controllerInfo") if isinstance(data.get("controllerInfo"), dict) else {}
        assert isinstance(info, dict)
        self.heartbeat_ms = _interval(info.get("heartbeatInterval"), DEFAULT_HEARTBEAT_MS)
        self.metrics_ms = _interval(info.get("metricsInterval"), DEFAULT_METRICS_MS)
        self.node_id = str(data.get("nodeId") or self.node_id)
        self._write_state({"nodeId": self.node_id, "server": self.config.server, "registeredAt": time.time()})
        log.info(
            "registered as %s (heartbeat every %d ms, metrics every %d ms)",
            self.node_id,
            self.heartbeat_ms,
            self.metrics_ms,
        )
        for command in data.get("pendingCommands") or []:
            self.on_command(command)
        self._outbox_ready.set()

    def _write_state(self, state: dict[str, Any]) -> None:
        write_atomically(self.config.data_dir / "session.json", json.dumps(state))

    # --- What must arrive: the outbox.

    def deliver(self, body: dict[str, Any]) -> None:
        """Queue a message that must reach the control plane (persisted before this returns)."""
        self.store.put(body)
        self._outbox_ready.set()

    async def _send_outbox(self, sio: socketio.AsyncClient) -> None:
        while sio.connected:
            self._outbox_ready.clear()
            for item in self.store.queued():
                try:
                    await sio.call(item.type, item.body, namespace=protocol.NAMESPACE, timeout=SEND_TIMEOUT_SECONDS)
                except (TimeoutError, socketio.exceptions.SocketIOError):  # no ack: timed out or disconnected
                    self.store.attempted(item.message_id)
                    log.info("no acknowledgement for %s %s yet: kept for the next try", item.type, item.message_id)
                    await asyncio.sleep(1)
                    break
                self.store.sent(item.message_id)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox_ready.wait(), 5)

    # --- Best effort: telemetry, and progress reports.

    async def emit(self, body: dict[str, Any]) -> bool:
        """Send now if connected; dropped otherwise (for what a later message supersedes)."""
        sio = self._sio
        if sio is None or not sio.connected:
            return False
        try:
            await sio.emit(body["type"], body, namespace=protocol.NAMESPACE)
        except socketio.exceptions.SocketIOError:
            return False
        return True

    async def _telemetry(self, sio: socketio.AsyncClient) -> None:
        next_heartbeat = next_metrics = time.monotonic()
        while sio.connected:
            now = time.monotonic()
            if now >= next_heartbeat:
                data = await asyncio.to_thread(self.machine.heartbeat, active_deployments=len(self.deployments()))
                await self.emit(protocol.envelope("telemetry.heartbeat", data))
                next_heartbeat = now + self.heartbeat_ms / 1000
            if now >= next_metrics:
                data = await asyncio.to_thread(self.machine.metrics)
                await self.emit(protocol.envelope("telemetry.metrics", data))
                next_metrics = now + self.metrics_ms / 1000
            await asyncio.sleep(max(0.05, min(next_heartbeat, next_metrics) - time.monotonic()))

    # --- Commands.

    def on_command(self, body: Any) -> None:
        """A command arrived (live or in register.ack's pendingCommands). Acknowledged at once; run
        unless it was taken on before — then answered from what is known of it, never run twice."""
        if not protocol.is_command(body):
            log.warning("ignored a malformed command: %s", json.dumps(body)[:300])
            return
        known = self.store.take_command(body)
        self.deliver(protocol.command_ack(body))
        if known is None:
            self._start(body)
        elif known.state == "done" and known.result is not None:
            self.deliver(protocol.command_result(body, known.result))
        # else: still running (its result follows when it ends)

    def _start(self, body: dict[str, Any]) -> None:
        run = CommandRun(body)
        self.runs[body["messageId"]] = run
        run.task = asyncio.create_task(self._carry_out(run))

    async def _carry_out(self, run: CommandRun) -> None:
        message_id, type_ = run.body["messageId"], run.body["type"]
        handler = self.handlers.get(type_)
        try:
            if handler is None:
                raise CommandError("UNSUPPORTED_COMMAND", f"this agent does not carry out {type_}")
            result = await handler(self, run)
            outcome: dict[str, Any] = {"status": "success", "result": result}
        except CommandError as exc:
            outcome = {"status": "error", "error": exc.error()}
        except asyncio.CancelledError:
            if not run.cancel.is_set():
                raise  # the agent is stopping: the command stays running, resumed on the next start
            outcome = {"status": "error", "error": {"code": "CANCELLED", "message": "cancelled by command.cancel"}}
        except Exception as exc:  # a bug or an unforeseen failure: the command fails, the agent lives
            log.exception("%s %s failed", type_, message_id)
            outcome = {"status": "error", "error": {"code": "AGENT_ERROR", "message": f"{type(exc).__name__}: {exc}"}}
        finally:
            self.runs.pop(message_id, None)
        self.store.finish_command(message_id, outcome)
        self.deliver(protocol.command_result(run.body, outcome))

    async def progress(self, run: CommandRun, percent: float, **result: Any) -> None:
        await self.emit(protocol.command_progress(run.body, percent, **result))

    # --- What the node runs: the model servers' supervisor.

    def supervisor(self) -> Supervisor:
        if "supervisor" not in self.components:
            host = self.config.advertise_host or primary_address(self.config.server)

            def on_status(server: Server) -> None:
                self.deliver(protocol.envelope("deployment.status", server.report()))

            def on_logs(deployment_id: str, lines: list[dict[str, Any]]) -> None:
                self.deliver(protocol.envelope("deployment.logs", {"deploymentId": deployment_id, "logs": lines}))

            self.components["supervisor"] = Supervisor(
                self.config.data_dir,
                agent_id=self.agent_id,
                gpus=self.gpus,
                advertise_host=host,
                on_status=on_status,
                on_logs=on_logs,
            )
        supervisor: Supervisor = self.components["supervisor"]
        return supervisor

    def backends(self) -> list[str]:
        return available_backends()

    def deployments(self) -> list[dict[str, Any]]:
        supervisor = self.components.get("supervisor")
        return supervisor.reports() if supervisor is not None else []


def _interval(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 100 else default


async def _stop_on(stop: asyncio.Event, sio: socketio.AsyncClient) -> None:
    await stop.wait()
    await sio.disconnect()
