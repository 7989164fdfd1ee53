"""Model servers as supervised processes: started for `deployment.start`, probed, restarted with
backoff when they crash, stopped for `deployment.stop` — and adopted, not duplicated, when the
agent itself restarts.

Each server runs in its own session (so its own process group: a stop reaches every process it
spawned), tagged in its environment with the deployment and agent ids, and writes its output to a
file in the data dir, not to a pipe of the agent's: a server must outlive the agent (a pipe to a
dead agent would kill it with SIGPIPE on its next line). Where each server runs is kept in
`deployments.json`, written atomically; a restarted agent finds each one by pid, checks it is
the same process (start time, tag), and carries on watching it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from aiwm_node.files import write_atomically
from aiwm_node.gpus import Gpus

log = logging.getLogger("aiwm_node.supervisor")

READY_TIMEOUT_SECONDS = 600.0  # loading a large model from a slow disk takes minutes
PROBE_EVERY_SECONDS = 10.0
PROBE_FAILURES_TO_RESTART = 3
STABLE_AFTER_SECONDS = 600.0  # a server up this long has its restart backoff reset
LOG_BATCH_LINES = 200
LOG_EVERY_SECONDS = 1.0
MEMORY_MARGIN = 1.2  # a model needs about its file's size in (GPU or host) memory, plus context


def restart_delay(restarts: int) -> float:
    """Seconds before restart number `restarts` (1, 2, ...): min(10 * 2^(n-1), 300)."""
    return float(min(10 * 2 ** max(restarts - 1, 0), 300))


class StartError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Server:
    """One deployment's model server, as kept in deployments.json."""

    deployment_id: str
    backend: str
    command: list[str]
    env: dict[str, str]
    port: int
    endpoint: str
    model_path: str
    gpus: list[str] = field(default_factory=list)
    pid: int = 0
    started_at: float = 0.0  # the process's create_time (psutil): tells it from a reused pid
    status: str = "starting"  # starting | running | failed | stopped
    restarts: int = 0
    log_offset: int = 0  # bytes of its log file already sent as deployment.logs
    message: str = ""

    def report(self) -> dict[str, Any]:
        """As node.register's `deployments` entries and deployment.status's data."""
        out: dict[str, Any] = {"deploymentId": self.deployment_id, "status": self.status, "endpoint": self.endpoint}
        if self.pid:
            out["containerId"] = f"pid:{self.pid}"
        out["healthStatus"] = "healthy" if self.status == "running" else "unhealthy"
        if self.restarts:
            out["restarts"] = self.restarts
        if self.message:
            out["message"] = self.message  # why it failed, and when it is tried again
        return out


# --- Backends: the command line of a server, the agent's own arguments last so user arguments
# cannot override where it listens or what it calls the model.


def backend_for(model_path: Path, explicit: str | None) -> str:
    if explicit:
        if explicit not in BACKENDS:
            raise StartError("NO_BACKEND", f"unknown backend {explicit!r} (known: {', '.join(BACKENDS)})")
        return explicit
    if model_path.suffix.lower() == ".gguf":
        return "llama.cpp"
    if model_path.is_dir() and ((model_path / "config.json").exists()):
        return "vllm"
    raise StartError("NO_BACKEND", f"no backend for {model_path.name!r}: give deployment.start data.backend")


def llama_cpp_command(
    *, model_path: Path, host: str, port: int, name: str, gpus: list[str], args: list[str]
) -> list[str]:
    # Defaults a user may override: its loader prints ~200 KB per start otherwise.
    defaults = ["--verbose", "false"]
    own = ["--model", str(model_path), "--host", host, "--port", str(port), "--model_alias", name]
    if gpus:
        own += ["--n_gpu_layers", "-1"]
    return [sys.executable, "-m", "llama_cpp.server", *defaults, *args, *own]


def vllm_command(*, model_path: Path, host: str, port: int, name: str, gpus: list[str], args: list[str]) -> list[str]:
    own = ["--host", host, "--port", str(port), "--served-model-name", name]
    if len(gpus) > 1:
        own += ["--tensor-parallel-size", str(len(gpus))]
    return ["vllm", "serve", str(model_path), *args, *own]


BACKENDS: dict[str, Callable[..., list[str]]] = {"llama.cpp": llama_cpp_command, "vllm": vllm_command}


def template_command(template: str, *, model_path: Path, host: str, port: int, name: str) -> list[str]:
    """`command` backend: a shell-like template with {model_path} {host} {port} {name} (no shell)."""
    try:
        return [part.format(model_path=model_path, host=host, port=port, name=name) for part in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise StartError("INVALID_COMMAND", f"data.command: {exc}") from exc


def available_backends() -> list[str]:
    import importlib.util
    import shutil

    found = ["command"]
    if importlib.util.find_spec("llama_cpp") is not None:
        found.append("llama.cpp")
    if shutil.which("vllm"):
        found.append("vllm")
    return found


# What a model server inherits of the agent's environment: the basics, and what GPU stacks and
# Hugging Face read. Not the rest: llama.cpp's server takes HOST, PORT, MODEL, N_CTX... from the
# environment over its arguments, so a PORT meant for something else would move it.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "VIRTUAL_ENV")
INHERITED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_", "VLLM_", "OMP_")


def inherited_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key in INHERITED or key.startswith(INHERITED_PREFIXES)}


Report = Callable[[Server], Awaitable[None] | None]
Logs = Callable[[str, list[dict[str, Any]]], Awaitable[None] | None]


class Supervisor:
    def __init__(
        self,
        data_dir: Path,
        *,
        agent_id: str,
        gpus: Gpus,
        advertise_host: str,
        on_status: Report,
        on_logs: Logs,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        probe_every: float = PROBE_EVERY_SECONDS,
        restart_delay: Callable[[int], float] = restart_delay,
    ):
        self.dir = data_dir / "deployments"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = data_dir / "deployments.json"
        self.agent_id = agent_id
        self.gpus = gpus
        self.advertise_host = advertise_host
        self.on_status, self.on_logs = on_status, on_logs
        self.ready_timeout, self.probe_every = ready_timeout, probe_every
        self.restart_delay = restart_delay
        self.servers: dict[str, Server] = {}
        self._children: dict[str, asyncio.subprocess.Process | None] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    # --- State on disk.

    def _save(self) -> None:
        state = {key: asdict(server) for key, server in self.servers.items()}
        write_atomically(self.state_path, json.dumps(state), durable=True)

    def adopt(self) -> list[str]:
        """At the agent's start: take back the servers of deployments.json. A live one is watched
        again (same pid, same port: no second process); one that died meanwhile is started again."""
        try:
            saved = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        adopted = []
        for key, fields in saved.items():
            server = Server(**fields)
            if server.status == "stopped":
                continue
            self.servers[key] = server
            if self._same_process(server):
                log.info("adopted the server of %s (pid %d, port %d)", key, server.pid, server.port)
                adopted.append(key)
                self._watch(server, fresh=False)
            else:
                log.info("the server of %s (pid %d) is gone: starting it again", key, server.pid)
                server.pid = 0
                self._watch(server, fresh=True)
        self._save()
        return adopted

    def _same_process(self, server: Server) -> bool:
        if not server.pid:
            return False
        try:
            process = psutil.Process(server.pid)
            if abs(process.create_time() - server.started_at) > 1 or process.status() == psutil.STATUS_ZOMBIE:
                return False
            with contextlib.suppress(psutil.AccessDenied):
                return process.environ().get("AIWM_DEPLOYMENT_ID") == server.deployment_id
            return True
        except psutil.NoSuchProcess:
            return False

    def reports(self) -> list[dict[str, Any]]:
        return [server.report() for server in self.servers.values() if server.status != "stopped"]

    # --- Start and stop.

    async def start(self, deployment_id: str, data: dict[str, Any]) -> Server:
        """Idempotent per deployment: a server already up for it is returned as it is."""
        async with self._lock:
            current = self.servers.get(deployment_id)
            if current is not None and current.status in ("starting", "running") and self._alive(current):
                return current
            server = self._prepare(deployment_id, data)
            self._check_memory(server)
            self.servers[deployment_id] = server
            self._save()
            self._watch(server, fresh=True)
        return server

    async def wait_ready(self, deployment_id: str) -> Server:
        """Until the server answers (running) or gives up (failed)."""
        while True:
            server = self.servers.get(deployment_id)
            if server is None:
                raise StartError("NOT_FOUND", f"no server for {deployment_id}")
            if server.status == "running":
                return server
            if server.status in ("failed", "stopped"):
                raise StartError("START_FAILED", server.message or f"the server of {deployment_id} did not start")
            await asyncio.sleep(0.2)

    def _prepare(self, deployment_id: str, data: dict[str, Any]) -> Server:
        model_path = Path(str(data.get("modelPath") or ""))
        if not model_path.exists():
            raise StartError("MODEL_NOT_FOUND", f"the model is not on this node: {model_path}")
        port = data.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise StartError("INVALID_COMMAND", "data.port must be a port number")
        gpus = [str(g) for g in data.get("gpuDevices") or [] if isinstance(g, str)]
        known = {gpu.uuid for gpu in self.gpus.read()}
        missing = [g for g in gpus if g not in known]
        if missing:
            raise StartError("GPU_NOT_FOUND", f"no such GPU on this node: {', '.join(missing)}")
        args = [str(a) for a in data.get("args") or [] if isinstance(a, str | int | float)]
        name = str(data.get("modelName") or data.get("containerName") or deployment_id)
        host = "0.0.0.0"
        if isinstance(data.get("command"), str) and data["command"].strip():
            backend = "command"
            command = template_command(data["command"], model_path=model_path, host=host, port=port, name=name)
        else:
            backend = backend_for(model_path, data.get("backend") if isinstance(data.get("backend"), str) else None)
            command = BACKENDS[backend](model_path=model_path, host=host, port=port, name=name, gpus=gpus, args=args)
        env = {
            **inherited_environment(),
            "AIWM_DEPLOYMENT_ID": deployment_id,
            "AIWM_AGENT_ID": self.agent_id,
            # By UUID, in PCI order: the GPUs the control plane assigned, whatever CUDA's numbering.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": ",".join(gpus),
        }
        if isinstance(data.get("env"), dict):
            env = {**{str(k): str(v) for k, v in data["env"].items()}, **env}
        endpoint = f"http://{self.advertise_host}:{port}/v1"
        return Server(deployment_id, backend, command, env, port, endpoint, str(model_path), gpus)

    def _check_memory(self, server: Server) -> None:
        """Refuse a start that cannot fit rather than crash-loop: about the model file's size must
        be free on the assigned GPUs, or in RAM for a CPU server."""
        path = Path(server.model_path)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        needed = size * MEMORY_MARGIN / (1024 * 1024)
        if server.gpus:
            free = sum(g.memory_free or 0 for g in self.gpus.read() if g.uuid in server.gpus)
            where = f"GPU memory on {', '.join(server.gpus)}"
        else:
            free = psutil.virtual_memory().available / (1024 * 1024)
            where = "memory"
        if free < needed:
            raise StartError(
                "INSUFFICIENT_MEMORY", f"the model needs about {needed:.0f} MB of {where}; {free:.0f} MB is free"
            )

    async def stop(self, deployment_id: str, timeout: float = 30.0) -> Server | None:
        """SIGTERM to the server's process group, SIGKILL after `timeout`; returns once the process
        is gone (and, where NVML tells, its GPU memory is released)."""
        async with self._lock:
            server = self.servers.get(deployment_id)
            if server is None:
                return None
            watcher = self._watchers.pop(deployment_id, None)
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            pids = self._group_pids(server)
            await self._terminate(server, timeout)
            await self._release_gpu_memory(pids)
            server.status, server.pid = "stopped", 0
            self._save()
            await _call(self.on_status, server)
            del self.servers[deployment_id]
            self._save()
            return server

    def _group_pids(self, server: Server) -> set[int]:
        if not server.pid:
            return set()
        try:
            return {server.pid, *(c.pid for c in psutil.Process(server.pid).children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    async def _terminate(self, server: Server, timeout: float) -> None:
        if not server.pid or not self._alive(server):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._alive(server) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self._alive(server):
            log.warning("the server of %s did not stop within %.0f s: SIGKILL", server.deployment_id, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            while self._alive(server):
                await asyncio.sleep(0.1)
        child = self._children.pop(server.deployment_id, None)
        if child is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                await child.wait()

    async def _release_gpu_memory(self, pids: set[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while pids and self.gpus.count and self.gpus.memory_used_by(pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

    def _alive(self, server: Server) -> bool:
        child = self._children.get(server.deployment_id)
        if child is not None:
            return child.returncode is None
        return self._same_process(server)

    # --- Watching: start, readiness, liveness, logs, restarts.

    def _watch(self, server: Server, *, fresh: bool) -> None:
        self._watchers[server.deployment_id] = asyncio.create_task(self._supervise(server, fresh=fresh))

    async def _supervise(self, server: Server, *, fresh: bool) -> None:
        log_task = asyncio.create_task(self._ship_logs(server))
        try:
            while True:
                if fresh:
                    await self._spawn(server)
                fresh = True
                up_since = time.monotonic()
                ended = await self._until_down(server)
                if server.status == "stopped":
                    return
                if time.monotonic() - up_since >= STABLE_AFTER_SECONDS:
                    server.restarts = 0
                server.restarts += 1
                delay = self.restart_delay(server.restarts)
                server.status, server.message = "failed", f"{ended}; restart {server.restarts} in {delay:.0f} s"
                log.warning("the server of %s %s", server.deployment_id, server.message)
                self._save()
                await _call(self.on_status, server)
                await asyncio.sleep(delay)
        finally:
            log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await log_task
            await self._ship_once(server)

    async def _spawn(self, server: Server) -> None:
        log_path = self.dir / f"{_safe(server.deployment_id)}.log"
        with log_path.open("ab") as output:
            child = await asyncio.create_subprocess_exec(
                *server.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                env=server.env,
                start_new_session=True,  # its own process group, which outlives the agent
            )
        self._children[server.deployment_id] = child
        server.pid = child.pid
        try:
            server.started_at = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:
            server.started_at = 0.0
        server.status, server.message = "starting", ""
        self._save()
        await _call(self.on_status, server)

    async def _until_down(self, server: Server) -> str:
        """Watch a server until it is down; returns why. Ready (running) at the first 200 of
        `GET /v1/models`; alive after that while its port takes connections — not by asking
        /v1/models again: llama.cpp's server answers it under the lock its generation holds, so a
        probe would wait behind a long completion, or cut a stream short."""
        url = f"http://127.0.0.1:{server.port}/v1/models"
        failures = 0
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if not self._alive(server):
                    return f"exited ({self._exit_code(server)})"
                if server.status == "running":
                    answered = await _accepts(server.port)
                else:
                    try:
                        answered = (await client.get(url)).status_code == 200
                    except httpx.HTTPError:
                        answered = False
                if answered:
                    failures = 0
                    if server.status != "running":
                        server.status, server.message = "running", ""
                        self._save()
                        await _call(self.on_status, server)
                elif server.status == "running":
                    failures += 1
                    if failures >= PROBE_FAILURES_TO_RESTART:
                        await self._terminate(server, 10)
                        return f"stopped taking connections on port {server.port}"
                elif time.monotonic() > deadline:
                    await self._terminate(server, 10)
                    return f"not ready within {self.ready_timeout:.0f} s"
                await asyncio.sleep(self.probe_every if server.status == "running" else 0.25)

    def _exit_code(self, server: Server) -> str:
        child = self._children.get(server.deployment_id)
        return f"exit code {child.returncode}" if child is not None else "not this agent's child"

    async def _ship_logs(self, server: Server) -> None:
        while True:
            await asyncio.sleep(LOG_EVERY_SECONDS)
            await self._ship_once(server)

    async def _ship_once(self, server: Server) -> None:
        """Send the log lines written since the last batch (deployment.logs, through the outbox)."""
        path = self.dir / f"{_safe(server.deployment_id)}.log"
        try:
            with path.open("rb") as handle:
                handle.seek(server.log_offset)
                chunk = handle.read(1 << 20)
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # whole lines only; a partial one waits for its end
        if not end:
            return
        lines = chunk[:end].decode(errors="replace").splitlines()
        server.log_offset += end
        for start in range(0, len(lines), LOG_BATCH_LINES):
            batch = [{"level": _level(line), "message": line} for line in lines[start : start + LOG_BATCH_LINES]]
            await _call(self.on_logs, server.deployment_id, batch)
        self._save()

    async def close(self) -> None:
        """The agent stops: stop watching, leave the servers running (the next agent adopts them)."""
        for task in self._watchers.values():
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
        self._save()


async def _accepts(port: int, timeout: float = 5.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _level(line: str) -> str:
    lowered = line.lower()
    if "error" in lowered or "traceback" in lowered:
        return "error"
    if "warn" in lowered:
        return "warning"
    return "info"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:128] or "deployment"


async def _call(function: Callable[..., Any], *args: Any) -> None:
    result = function(*args)
    if asyncio.iscoroutine(result):
        await result
