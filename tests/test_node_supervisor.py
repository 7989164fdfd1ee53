"""The agent's model-server supervisor (aiwm_node.supervisor) with real processes: a stand-in
model server (tests/support/fake_model_server.py) that starts slowly, crashes, spawns children or
ignores SIGTERM on purpose. The real llama.cpp server is in tests/test_node_models.py."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from aiwm_node.gpus import Gpus
from aiwm_node.supervisor import (
    Server,
    StartError,
    Supervisor,
    backend_for,
    llama_cpp_command,
    restart_delay,
    vllm_command,
)
from tests.support.agent import model_server_pids
from tests.support.fake_nvml import FakeNvml
from tests.support.live_server import free_port

FAKE = Path(__file__).resolve().parent / "support" / "fake_model_server.py"


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, str, int]] = []
        self.logs: list[dict[str, Any]] = []

    def on_status(self, server: Server) -> None:
        self.statuses.append((server.deployment_id, server.status, server.pid))

    def on_logs(self, deployment_id: str, lines: list[dict[str, Any]]) -> None:
        self.logs.extend(lines)


def supervisor(data_dir: Path, recorder: Recorder, **kwargs: Any) -> Supervisor:
    return Supervisor(
        data_dir,
        agent_id="agent-1",
        gpus=kwargs.pop("gpus", Gpus.none()),
        advertise_host="10.0.0.5",
        on_status=recorder.on_status,
        on_logs=recorder.on_logs,
        probe_every=0.2,
        **kwargs,
    )


def fake(tmp_path: Path, port: int, *flags: str) -> dict[str, Any]:
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    return {
        "modelPath": str(model),
        "port": port,
        "command": f"{sys.executable} {FAKE} --port {{port}} {' '.join(flags)}",
    }


async def until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_start_serves_then_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        sup = supervisor(tmp_path / "agent", recorder)
        port = free_port()
        await sup.start("dep-1", fake(tmp_path, port, "--ready-after 0.5", "--child"))
        server = await sup.wait_ready("dep-1")
        assert server.status == "running" and server.endpoint == f"http://10.0.0.5:{port}/v1"
        assert sup.reports() == [
            {"deploymentId": "dep-1", "status": "running", "endpoint": server.endpoint,
             "containerId": f"pid:{server.pid}", "healthStatus": "healthy"}
        ]  # fmt: skip
        group = {server.pid, *(c.pid for c in psutil.Process(server.pid).children(recursive=True))}
        assert len(group) == 2  # the server and the child it spawned
        again = await sup.start("dep-1", fake(tmp_path, port))  # idempotent: no second process
        assert again.pid == server.pid
        assert psutil.Process(server.pid).environ()["AIWM_DEPLOYMENT_ID"] == "dep-1"
        await sup.stop("dep-1", timeout=5)
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in group)
        assert sup.reports() == []
        await asyncio.sleep(1.2)  # the log shipper's last batch
        await sup.close()

    asyncio.run(scenario())
    assert [s for _, s, _ in recorder.statuses] == ["starting", "running", "stopped"]
    assert any("fake model server pid" in line["message"] for line in recorder.logs)


def test_a_crashed_server_is_restarted_with_backoff_and_reported(tmp_path: Path) -> None:
    recorder = Recorder()
    delays: list[int] = []

    def quick(restarts: int) -> float:
        delays.append(restarts)
        return 0.1

    async def scenario() -> None:
        sup = supervisor(tmp_path / "agent", recorder, restart_delay=quick)
        await sup.start("dep-1", fake(tmp_path, free_port(), "--crash-after 1"))
        first = (await sup.wait_ready("dep-1")).pid
        await until(lambda: len([s for s in recorder.statuses if s[1] == "running"]) >= 3, 30)
        pids = {pid for _, status, pid in recorder.statuses if status == "running"}
        assert first in pids and len(pids) >= 3  # a new process each time
        await sup.stop("dep-1", timeout=5)
        await sup.close()

    asyncio.run(scenario())
    assert delays[:2] == [1, 2]  # the restart count grows while it keeps crashing
    failed = [s for s in recorder.statuses if s[1] == "failed"]
    assert len(failed) >= 2
    assert [restart_delay(n) for n in (1, 2, 3, 5, 6, 9)] == [10, 20, 40, 160, 300, 300]


def test_a_server_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    recorder = Recorder()

    async def scenario() -> float:
        sup = supervisor(tmp_path / "agent", recorder)
        await sup.start("dep-1", fake(tmp_path, free_port(), "--ignore-sigterm"))
        pid = (await sup.wait_ready("dep-1")).pid
        started = time.monotonic()
        await sup.stop("dep-1", timeout=1.0)
        took = time.monotonic() - started
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        await sup.close()
        return took

    assert 1.0 <= asyncio.run(scenario()) < 10


def test_a_restarted_agent_adopts_the_running_server_instead_of_starting_another(tmp_path: Path) -> None:
    recorder = Recorder()
    port = free_port()

    async def first_agent() -> int:
        sup = supervisor(tmp_path / "agent", recorder)
        await sup.start("dep-1", fake(tmp_path, port))
        pid = (await sup.wait_ready("dep-1")).pid
        await sup.close()  # the agent stops (or dies): the server goes on
        return pid

    async def second_agent(pid: int) -> None:
        sup = supervisor(tmp_path / "agent", recorder)
        assert sup.adopt() == ["dep-1"]
        server = await sup.wait_ready("dep-1")
        assert (server.pid, server.port) == (pid, port)
        assert model_server_pids("dep-1") == [pid]  # one process for the deployment, not two
        await sup.stop("dep-1", timeout=5)  # an adopted process (not this agent's child) stops too
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        await sup.close()

    pid = asyncio.run(first_agent())
    assert psutil.pid_exists(pid)
    asyncio.run(second_agent(pid))


def test_a_server_that_died_while_the_agent_was_away_is_started_again(tmp_path: Path) -> None:
    recorder = Recorder()

    async def first_agent() -> int:
        sup = supervisor(tmp_path / "agent", recorder)
        await sup.start("dep-1", fake(tmp_path, free_port()))
        pid = (await sup.wait_ready("dep-1")).pid
        await sup.close()
        return pid

    pid = asyncio.run(first_agent())
    psutil.Process(pid).kill()
    with contextlib.suppress(psutil.NoSuchProcess):  # already reaped: it was this process's child
        psutil.Process(pid).wait(5)

    async def second_agent() -> None:
        sup = supervisor(tmp_path / "agent", recorder)
        assert sup.adopt() == []
        server = await sup.wait_ready("dep-1")
        assert server.pid != pid
        await sup.stop("dep-1", timeout=5)
        await sup.close()

    asyncio.run(second_agent())


def test_a_start_that_cannot_fit_is_refused_not_crash_looped(tmp_path: Path) -> None:
    recorder = Recorder()
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as handle:
        handle.truncate(1024**4)  # 1 TiB, sparse: more than this machine's memory

    async def scenario() -> None:
        sup = supervisor(tmp_path / "agent", recorder)
        with pytest.raises(StartError) as refused:
            await sup.start("dep-1", {"modelPath": str(huge), "port": free_port()})
        assert refused.value.code == "INSUFFICIENT_MEMORY" and "MB of memory" in refused.value.message
        with pytest.raises(StartError) as missing:
            await sup.start("dep-2", {"modelPath": str(tmp_path / "nope.gguf"), "port": free_port()})
        assert missing.value.code == "MODEL_NOT_FOUND"
        with pytest.raises(StartError) as unknown:
            await sup.start("dep-3", {"modelPath": str(huge), "port": free_port(), "backend": "tgi"})
        assert unknown.value.code == "NO_BACKEND"
        assert sup.reports() == [] and recorder.statuses == []
        await sup.close()

    asyncio.run(scenario())


def test_gpus_are_assigned_by_uuid_and_the_agents_arguments_come_last(tmp_path: Path) -> None:
    command = llama_cpp_command(
        model_path=Path("/m/x.gguf"), host="0.0.0.0", port=8080, name="dep-1", gpus=["GPU-1"], args=["--port", "1"]
    )
    assert command[-8:] == ["--host", "0.0.0.0", "--port", "8080", "--model_alias", "dep-1", "--n_gpu_layers", "-1"]
    assert command.index("--port") < command.index("8080")  # the user's --port 1 is overridden by the last
    sup = supervisor(tmp_path / "agent", Recorder(), gpus=Gpus.open(FakeNvml()))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    gpu = "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd"
    server = sup._prepare("dep-1", {"modelPath": str(model), "port": 8080, "gpuDevices": [gpu]})
    assert server.backend == "llama.cpp"
    assert server.env["CUDA_VISIBLE_DEVICES"] == gpu and server.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    with pytest.raises(StartError, match="no such GPU"):
        sup._prepare("dep-1", {"modelPath": str(model), "port": 8080, "gpuDevices": ["GPU-nope"]})


def test_the_backend_follows_the_model_files_and_vllm_gets_every_assigned_gpu(tmp_path: Path) -> None:
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert backend_for(tmp_path / "m.GGUF", None) == "llama.cpp" and backend_for(folder, None) == "vllm"
    assert backend_for(folder, "llama.cpp") == "llama.cpp"  # an explicit backend wins
    with pytest.raises(StartError, match="no backend"):
        backend_for(tmp_path / "weights.bin", None)
    command = vllm_command(model_path=folder, host="0.0.0.0", port=8000, name="m", gpus=["GPU-a", "GPU-b"], args=[])
    assert command[:3] == ["vllm", "serve", str(folder)]
    assert command[-8:] == [
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "m",
        "--tensor-parallel-size",
        "2",
    ]


def test_a_model_server_does_not_inherit_what_would_move_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's server reads HOST, PORT, MODEL... from the environment over its arguments: the
    agent passes on only the basics and the GPU / Hugging Face variables."""
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("HOST", "192.0.2.1")
    monkeypatch.setenv("HF_HOME", "/srv/hf")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    server = supervisor(tmp_path / "agent", Recorder())._prepare("dep-1", {"modelPath": str(model), "port": 8080})
    assert "PORT" not in server.env and "HOST" not in server.env
    assert server.env["HF_HOME"] == "/srv/hf" and server.env["PATH"] and server.env["AIWM_DEPLOYMENT_ID"] == "dep-1"
    assert server.command[3:5] == ["--verbose", "false"]  # a default the user's args may override


def test_stop_answers_once_the_gpu_memory_of_the_server_is_released(tmp_path: Path) -> None:
    """With NVML, a stopped server's GPU memory must be free before the stop is reported (a driver
    can hold it for a moment after the process is gone): the next start must find it free."""
    recorder = Recorder()
    gpu = "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd"

    class Holding(FakeNvml):
        def __init__(self) -> None:
            super().__init__()
            self.pids: set[int] = set()
            self.release_at = float("inf")

        def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
            if handle != 0 or time.monotonic() >= self.release_at:
                return []
            return [SimpleNamespace(pid=pid, usedGpuMemory=900 * 1024 * 1024) for pid in self.pids]

    nvml = Holding()

    async def scenario() -> float:
        sup = supervisor(tmp_path / "agent", recorder, gpus=Gpus.open(nvml))
        await sup.start("dep-1", {**fake(tmp_path, free_port()), "gpuDevices": [gpu]})
        server = await sup.wait_ready("dep-1")
        assert server.env["CUDA_VISIBLE_DEVICES"] == gpu
        nvml.pids = {server.pid}
        nvml.release_at = time.monotonic() + 1.5  # the driver lets go 1.5 s from now
        await sup.stop("dep-1", timeout=5)
        stopped_at = time.monotonic()
        await sup.close()
        return stopped_at - nvml.release_at

    assert asyncio.run(scenario()) >= 0  # not before the memory was free
