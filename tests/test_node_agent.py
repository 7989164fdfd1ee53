"""The node agent (aiwm_node) as a real process against the real service: it registers the machine
with its real facts, reports real psutil telemetry at the intervals register.ack gives, answers
commands once, keeps what must arrive in its outbox across a lost connection, and says what it is
doing (`aiwm-node status`). Unit tests of its parts (the store, NVML readings with a stand-in
NVML, backoff, settings) at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import aiwm_node
from nodes.commands import send_command
from nodes.models import Node, NodeCommand, NodeMetric
from tests.support.agent import AgentProcess, kill_model_servers, model_server_pids, running_agent
from tests.support.factories import NodeFactory
from tests.support.fake_nvml import FakeNvml
from tests.support.live_server import LiveGateway, RestartableServer, eventually, free_port

MB = 1024 * 1024
WAIT = 30.0  # seconds: the bound on a wait for the agent (a process of its own, on a shared machine)


@pytest.fixture
def quick_telemetry(settings: Any) -> None:
    settings.AIWM_HEARTBEAT_INTERVAL_MS = 300
    settings.AIWM_METRICS_INTERVAL_MS = 300


def fresh(node: Node) -> Node:
    return Node.objects.get(pk=node.pk)


def test_the_agent_registers_this_machine_and_reports_real_telemetry(
    gateway: LiveGateway, quick_telemetry: None, tmp_path: Path
) -> None:
    node, token = NodeFactory.with_token(node_id="node-local")
    with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as agent:
        registered = eventually(lambda: (n := fresh(node)).registered_at and n.websocket_connected and n, WAIT)
        assert registered, agent.log()
        assert registered.hostname == socket.gethostname()
        assert registered.cpu_cores == psutil.cpu_count(logical=True)
        assert registered.ram_total == psutil.virtual_memory().total // MB
        assert registered.disk_total == psutil.disk_usage(str(tmp_path)).total // MB
        assert registered.daemon_version == aiwm_node.__version__
        assert registered.os and registered.cpu_model and registered.ip_address
        assert registered.gpu_devices == []  # no NVML on this machine: a node without GPUs
        # Heartbeats move lastHeartbeat on, with psutil's figures; metric points are kept.
        first = registered.last_heartbeat
        beat = eventually(lambda: (n := fresh(node)).last_heartbeat and n.last_heartbeat != first and n, WAIT)
        assert beat and beat.status == "online" and 0 <= beat.cpu_usage <= 100 * (psutil.cpu_count() or 1)
        assert 0 < beat.ram_free <= beat.ram_total
        point = eventually(lambda: NodeMetric.objects.filter(node_id="node-local").order_by("-timestamp").first(), WAIT)
        assert point is not None, agent.log()
        assert point.data["ram"]["total"] == psutil.virtual_memory().total // MB
        assert point.data["cpu"]["cores"] == psutil.cpu_count(logical=True)
        assert point.data["network"]["rxBytes"] >= 0 and point.data["disk"]["total"] > 0
        # `aiwm-node status` reads the data dir of the running agent.
        status = agent.status()
        assert status["running"] is True and status["pid"] == agent.pid
        assert status["agentId"] and status["session"]["nodeId"] == "node-local"
        assert agent.stop() == 0
    assert eventually(lambda: not fresh(node).websocket_connected, WAIT)
    assert AgentProcess(server=gateway.url, token=token, data_dir=tmp_path / "agent").status()["running"] is False


def test_the_agent_id_is_stable_and_one_agent_runs_per_data_dir(gateway: LiveGateway, tmp_path: Path) -> None:
    node, token = NodeFactory.with_token(node_id="node-local")
    data_dir = tmp_path / "agent"
    with running_agent(server=gateway.url, token=token, data_dir=data_dir) as agent:
        assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
        first_id = agent.status()["agentId"]
        second = AgentProcess(server=gateway.url, token=token, data_dir=data_dir).start()
        assert second.process is not None and second.process.wait(WAIT) == 1  # refused: the dir is taken
        assert "another agent is running" in second.log()
        agent.kill()  # SIGKILL: the kernel releases the instance lock
    with running_agent(server=gateway.url, token=token, data_dir=data_dir) as again:
        assert eventually(lambda: again.status().get("session"), WAIT)
        assert again.status()["agentId"] == first_id


def test_a_command_is_acknowledged_and_answered_and_a_repeat_is_answered_from_the_store(
    gateway: LiveGateway, tmp_path: Path
) -> None:
    """command.cancel of nothing: the simplest command with a result. The repeat is the same
    command re-sent by a control plane that lost the ack and result (their ledger rows and the
    command's state rolled back, as a restore from backup would): the agent answers it from its
    store with the same ids — the handler does not run again."""
    from nodes.models import InboundMessage

    node, token = NodeFactory.with_token(node_id="node-local")
    with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as agent:
        assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
        command = send_command(
            org_id=node.owner_org_id,
            node_id=node.node_id,
            type="command.cancel",
            resource={"type": "command", "id": "nothing"},
            data={"originalMessageId": "not-running"},
        )
        done = eventually(lambda: (c := NodeCommand.objects.get(pk=command.pk)).status == "succeeded" and c, WAIT)
        assert done, agent.log()
        assert done.result == {"cancelled": False, "reason": "not running"}
        answers = InboundMessage.objects.filter(type__in=["command.ack", "command.result"])
        ledger = set(answers.values_list("message_id", flat=True))
        assert len(ledger) == 2
        agent.stop()
        NodeCommand.objects.filter(pk=command.pk).update(status="sent", result=None, acknowledged_at=None)
        answers.delete()
        with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as again:
            answered = eventually(lambda: NodeCommand.objects.get(pk=command.pk).status == "succeeded", WAIT)
            assert answered, again.log()
            # The same ack and result ids as the first time: what the control plane applies once.
            assert set(answers.values_list("message_id", flat=True)) == ledger
            assert again.status()["commands"] == {"done": 1}


def test_the_agent_reconnects_by_itself_after_the_server_went_away(
    restartable: RestartableServer, quick_telemetry: None, tmp_path: Path
) -> None:
    """python-socketio's client does not reconnect after a disconnect the server made: the agent's
    own loop does, registers again, and its heartbeats carry on."""
    node, token = NodeFactory.with_token(node_id="node-local")
    with running_agent(server=restartable.url, token=token, data_dir=tmp_path / "agent") as agent:
        first = eventually(lambda: fresh(node).registered_at, WAIT)
        assert first, agent.log()
        restartable.stop()
        assert eventually(lambda: not fresh(node).websocket_connected, WAIT)
        time.sleep(1.5)  # a few failed attempts while nothing listens
        restartable.start()
        again = eventually(lambda: (n := fresh(node)).registered_at != first and n.websocket_connected and n, WAIT)
        assert again, agent.log()
        beat = again.last_heartbeat
        assert eventually(lambda: fresh(node).last_heartbeat != beat, WAIT)
        assert agent.alive() and "cannot connect" in agent.log()


# --- Unit tests of the agent's parts.


def test_the_store_keeps_the_outbox_in_order_and_a_command_once(tmp_path: Path) -> None:
    from aiwm_node.store import Store

    store = Store(tmp_path / "agent.sqlite3")
    assert store.put({"type": "command.ack", "messageId": "a"}) and store.put(
        {"type": "command.result", "messageId": "b"}
    )
    assert not store.put({"type": "command.ack", "messageId": "a"})  # a repeat is queued once
    assert [q.message_id for q in store.queued()] == ["a", "b"]
    store.sent("a")
    assert [q.message_id for q in store.queued()] == ["b"] and store.outbox_depth() == 1
    command = {"type": "model.download", "messageId": "m1", "data": {}}
    assert store.take_command(command) is None  # new: run it
    known = store.take_command(command)
    assert known is not None and known.state == "running" and [c.message_id for c in store.running_commands()] == ["m1"]
    store.finish_command("m1", {"status": "success", "result": {"x": 1}})
    store.close()
    reopened = Store(tmp_path / "agent.sqlite3")  # what survives the agent's restart
    known = reopened.take_command(command)
    assert known is not None and known.state == "done" and known.result == {"status": "success", "result": {"x": 1}}
    assert reopened.running_commands() == [] and reopened.outbox_depth() == 1


def test_a_repeated_command_runs_once_and_is_answered_with_the_same_ids(tmp_path: Path) -> None:
    from aiwm_node.agent import Agent, CommandRun
    from aiwm_node.config import Config
    from aiwm_node.gpus import Gpus

    calls: list[str] = []

    async def handler(agent: Agent, run: CommandRun) -> dict[str, Any]:
        calls.append(run.body["messageId"])
        return {"done": True}

    async def scenario() -> list[tuple[str, str]]:
        agent = Agent(
            Config(server="http://127.0.0.1:9", token="t", data_dir=tmp_path),
            gpus=Gpus.none(),
            handlers={"model.download": handler},
        )
        command = {"type": "model.download", "messageId": "m1", "resource": {"type": "model", "id": "x"}, "data": {}}
        agent.on_command(command)
        await asyncio.gather(*(r.task for r in agent.runs.values() if r.task))
        first = [(q.type, q.message_id) for q in agent.store.queued()]
        for queued in agent.store.queued():
            agent.store.sent(queued.message_id)  # delivered
        agent.on_command(command)  # the control plane sends it again
        await asyncio.sleep(0)
        second = [(q.type, q.message_id) for q in agent.store.queued()]
        agent.store.close()
        assert first == second
        return first

    sent = asyncio.run(scenario())
    assert calls == ["m1"]  # ran once
    assert [kind for kind, _ in sent] == ["command.ack", "command.result"]


def test_gpus_are_read_by_uuid_with_what_each_device_supports() -> None:
    from aiwm_node.gpus import Gpus

    gpus = Gpus.open(FakeNvml())
    readings = gpus.read()
    assert [r.uuid for r in readings] == [
        "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",
        "GPU-00000001-aaaa-bbbb-cccc-dddddddddddd",
    ]
    assert readings[0].device() == {
        "deviceId": "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd",
        "model": "NVIDIA H100 80GB HBM3",
        "memoryTotal": 81559,
        "memoryFree": 80559,
        "memoryUsed": 1000,
        "utilization": 40.0,
        "temperature": 60.0,
    }
    metric = readings[0].metric()
    assert metric["powerUsage"] == 312.5 and "fanSpeed" not in metric
    assert metric["processes"] == [{"pid": 4242, "memoryUsed": 900}]
    assert gpus.memory_used_by({4242}) == 900 and gpus.memory_used_by({1}) == 0


def test_no_nvml_or_a_hung_one_is_a_node_without_gpus() -> None:
    from aiwm_node.gpus import Gpus

    class Missing(FakeNvml):
        def nvmlInit(self) -> None:
            raise OSError("NVML Shared Library Not Found")

    assert Gpus.open(Missing()).read() == []
    started = time.monotonic()
    assert Gpus.open(FakeNvml(hang=True), timeout=0.3).read() == []
    assert time.monotonic() - started < 5
    real = Gpus.open().read()  # the real library: on a machine without the driver, no GPUs and no error
    assert real == [] or Path("/proc/driver/nvidia").exists()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    from aiwm_node.agent import backoff

    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)):
        delays = [backoff(attempt, 1.0, 60.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # spread: a fleet does not come back in step


def test_settings_come_from_flags_over_the_environment_over_the_config_file(tmp_path: Path) -> None:
    from aiwm_node.config import load

    (tmp_path / "config.toml").write_text('server = "http://file:1"\ntoken = "file-token"\nnode_id = "from-file"\n')
    environ = {"AIWM_NODE_DATA_DIR": str(tmp_path), "AIWM_NODE_TOKEN": "env-token"}
    config = load({"server": "http://flag:2/"}, environ)
    assert (config.server, config.token, config.node_id, config.data_dir) == (
        "http://flag:2",
        "env-token",
        "from-file",
        tmp_path,
    )
    (tmp_path / "config.toml").write_text('sever = "typo"\n')
    with pytest.raises(ValueError, match="unknown settings: sever"):
        load({}, environ)


def test_make_run_serves_this_machine_as_a_node_of_its_organization(tmp_path: Path) -> None:
    """`manage.py serve --local-node ORG` (what `make run` runs) on a fresh embedded install: the
    node record appears in ORG, its agent connects and registers this machine, and stopping the
    server stops the agent too."""
    import json
    import subprocess
    import urllib.request

    from tests.support.agent import ROOT

    env = {
        **os.environ,
        "AIWM_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'aiwm.sqlite3'}",
        "AIWM_HEARTBEAT_INTERVAL_MS": "500",
    }
    env.pop("REDIS_URL", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    owner = ["--username", "ops", "--user-id", "u1", "--org-id", "org-1", "--roles", "organization.owner"]
    token = subprocess.run(
        [*manage, "issue_token", *owner], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60, text=True
    ).stdout.strip()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--port", str(port), "--local-node", "org-1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def local_nodes() -> list[dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/nodes", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return [n for n in json.loads(response.read())["data"] if n["isLocal"]]
        except OSError:
            return []

    try:
        node = eventually(lambda: [n for n in local_nodes() if n["websocketConnected"] and n["hostname"]], WAIT)
        assert node, (tmp_path / "serve.log").read_text()
        assert node[0]["nodeId"].startswith("local-")
        assert node[0]["hostname"] == socket.gethostname() and node[0]["status"] == "online"
        agent_pid = int((tmp_path / "var" / "node" / "agent.pid").read_text())
        assert psutil.pid_exists(agent_pid)
    finally:
        serve.send_signal(signal.SIGTERM)  # the server alone: it stops its agent itself
        try:
            serve.wait(30)
        finally:
            log.close()
            stopped = eventually(lambda: not psutil.pid_exists(agent_pid), WAIT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(serve.pid, signal.SIGKILL)  # tidy up whatever is left of the process group
    assert stopped  # uvicorn ends on the signal it stopped on (-15): the agent goes with it


def test_the_server_acknowledges_a_message_once_it_is_applied(gateway: LiveGateway) -> None:
    """What the agent's outbox relies on: the Socket.IO acknowledgement of a node's message comes
    after the server applied it — the command is acknowledged in the database when `call` returns."""
    import socketio

    node, token = NodeFactory.with_token(node_id="node-local")
    command = send_command(
        org_id=node.owner_org_id, node_id=node.node_id, type="command.cancel", data={"originalMessageId": "x"}
    )

    async def scenario() -> None:
        from aiwm_node import protocol

        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            gateway.url, namespaces=[protocol.NAMESPACE], auth={"token": token}, transports=["websocket"]
        )
        try:
            body = {"type": "command.cancel", "messageId": command.message_id}
            ack = protocol.command_ack(body)
            await client.call("command.ack", ack, namespace=protocol.NAMESPACE, timeout=10)
            assert await asyncio.to_thread(lambda: NodeCommand.objects.get(pk=command.pk).status) == "acknowledged"
        finally:
            await client.disconnect()

    asyncio.run(scenario())


# --- Model servers across restarts, and the control plane's reconcile on every register.

FAKE_SERVER = Path(__file__).resolve().parent / "support" / "fake_model_server.py"


def _deployment(node: Node, deployment_id: str = "dep-1") -> Any:
    from tests.support.factories import AIModelFactory, DeploymentFactory

    AIModelFactory.create(model_id="model-1", name="M", node_id=node.node_id)
    return DeploymentFactory.create(deployment_id=deployment_id, model_id="model-1", node_id=node.node_id)


def _start_fake_server(node: Node, tmp_path: Path, deployment_id: str = "dep-1", flags: str = "") -> NodeCommand:
    """deployment.start as the control plane sends it, with a command template (the stand-in server)."""
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    command = f"{sys.executable} {FAKE_SERVER} --port {{port}} {flags}".strip()
    data = {"modelPath": str(model), "port": free_port(), "command": command}
    return send_command(
        org_id=node.owner_org_id,
        node_id=node.node_id,
        type="deployment.start",
        resource={"type": "deployment", "id": deployment_id},
        data=data,
    )


@pytest.fixture
def model_servers() -> Iterator[None]:
    """Model servers outlive their agent by design: whatever a test leaves running is killed after it."""
    yield
    kill_model_servers("dep-1")


def _serve_fake_deployment(node: Node, agent: AgentProcess, tmp_path: Path) -> tuple[NodeCommand, int]:
    """deployment.start of dep-1 answered by the agent: its command and the server's pid."""
    assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
    command = _start_fake_server(node, tmp_path)
    done = eventually(lambda: (c := NodeCommand.objects.get(pk=command.pk)).status == "succeeded" and c, WAIT)
    assert done, agent.log()
    [pid] = model_server_pids("dep-1")
    return done, pid


def test_a_killed_agent_adopts_its_running_server_and_the_records_stay_as_they_were(
    gateway: LiveGateway, tmp_path: Path, model_servers: None
) -> None:
    from deployments.models import Deployment

    node, token = NodeFactory.with_token(node_id="node-local")
    deployment = _deployment(node)
    data_dir = tmp_path / "agent"
    with running_agent(server=gateway.url, token=token, data_dir=data_dir) as agent:
        started, pid = _serve_fake_deployment(node, agent, tmp_path)
        running = eventually(lambda: (d := Deployment.objects.get(pk=deployment.pk)).status == "running" and d, WAIT)
        assert running and started.result and running.endpoint == started.result["endpoint"]
        agent.kill()
    assert psutil.pid_exists(pid)  # the server outlived its agent
    with running_agent(server=gateway.url, token=token, data_dir=data_dir) as again:
        registered = fresh(node).registered_at
        assert eventually(lambda: fresh(node).registered_at != registered and fresh(node).websocket_connected, WAIT)
        time.sleep(1)  # what the reconcile of that register did has committed
        assert model_server_pids("dep-1") == [pid]  # adopted: the same process, no second one
        after = Deployment.objects.get(pk=deployment.pk)
        assert after.status == "running" and after.endpoint == running.endpoint, after.events
        status = again.status()
        assert status["running"] and status["deployments"] == [
            {"deploymentId": "dep-1", "status": "running", "pid": pid, "endpoint": running.endpoint,
             "restarts": 0, "alive": True}
        ]  # fmt: skip


def test_a_crashing_server_is_restarted_with_backoff_and_each_change_reaches_the_deployment(
    gateway: LiveGateway, tmp_path: Path, model_servers: None
) -> None:
    from deployments.models import Deployment

    node, token = NodeFactory.with_token(node_id="node-local")
    deployment = _deployment(node)
    with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as agent:
        assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
        _start_fake_server(node, tmp_path, flags="--crash-after 3")  # up, then exit code 3, every time

        def restarted() -> Any:
            d = Deployment.objects.get(pk=deployment.pk)
            events = [e for e in d.events if e["event"].startswith("node.")]
            crashed = [i for i, e in enumerate(events) if e["event"] == "node.failed"]
            return crashed and any(e["event"] == "node.running" for e in events[crashed[0] :]) and (d, events)

        # the first restart comes 10 s after the crash: min(10 * 2^(n-1), 300)
        found = eventually(restarted, 3 + 10 + WAIT)
        assert found, agent.log()
        deployment_now, events = found
        failed = next(e for e in events if e["event"] == "node.failed")
        assert failed["severity"] == "error"
        assert "exit" in failed["message"] and "restart 1 in 10 s" in failed["message"], failed
        running = [e["message"] for e in events if e["event"] == "node.running"]
        assert len(running) >= 2  # running, failed, (starting,) running again
        assert deployment_now.status in ("running", "failed", "starting")
        assert agent.status()["deployments"][0]["restarts"] >= 1


def test_a_deployment_stopped_while_its_node_was_away_is_stopped_when_it_registers(
    gateway: LiveGateway, tmp_path: Path, model_servers: None
) -> None:
    from deployments.models import Deployment

    node, token = NodeFactory.with_token(node_id="node-local")
    deployment = _deployment(node)
    data_dir = tmp_path / "agent"
    with running_agent(server=gateway.url, token=token, data_dir=data_dir) as agent:
        _, pid = _serve_fake_deployment(node, agent, tmp_path)
        agent.stop()  # an orderly stop: the server goes on
    assert psutil.pid_exists(pid)
    Deployment.objects.filter(pk=deployment.pk).update(status="stopped", is_running=False)  # meanwhile
    with running_agent(server=gateway.url, token=token, data_dir=data_dir) as again:
        stop = eventually(lambda: NodeCommand.objects.filter(type="deployment.stop", status="succeeded").first(), WAIT)
        assert stop is not None and stop.resource == {"type": "deployment", "id": "dep-1"}, again.log()
        assert stop.created_by == "system:reconcile"
        assert eventually(lambda: not model_server_pids("dep-1"), WAIT)


def test_a_deployment_the_node_no_longer_runs_is_marked_failed_on_register(
    gateway: LiveGateway, tmp_path: Path
) -> None:
    from deployments.models import Deployment

    node, token = NodeFactory.with_token(node_id="node-local")
    deployment = _deployment(node)
    Deployment.objects.filter(pk=deployment.pk).update(status="running", is_running=True, endpoint="http://x:1/v1")
    with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as agent:
        failed = eventually(lambda: (d := Deployment.objects.get(pk=deployment.pk)).status == "failed" and d, WAIT)
        assert failed, agent.log()
        assert not failed.is_running and failed.events[-1]["event"] == "node.reconcile"
        assert "registered without it" in failed.events[-1]["message"]


def test_a_model_download_through_the_api_resumes_after_the_agent_is_killed(
    gateway: LiveGateway, tmp_path: Path
) -> None:
    """POST /api/models/:id/download → model.download → the agent fetches the file from an
    http(s) folder (a local server with ranges, throttled), is killed with SIGKILL half-way, and
    started again: it resumes the command it had taken on, from the bytes it had, verifies the
    model's sha256 and reports where the file is."""
    import hashlib

    from models_registry.models import AIModel
    from tests.support.factories import AIModelFactory
    from tests.support.live_server import Rest
    from tests.support.range_server import RangeServer

    node, token = NodeFactory.with_token(node_id="node-local")
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB
    data_dir = tmp_path / "agent"
    with RangeServer(tmp_path / "files", throttle=1024 * 1024) as files:
        path = files.put("weights.bin", data)
        model = AIModelFactory.create(
            model_id="model-1",
            name="M",
            node_id="node-local",
            repository=files.url,
            file_name="weights.bin",
            sha256=hashlib.sha256(data).hexdigest(),
        )
        with running_agent(server=gateway.url, token=token, data_dir=data_dir) as agent:
            assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
            Rest(gateway).post(f"/api/models/{model.pk}/download", {}, expect=200)
            partial = data_dir / "models" / "model-1" / "weights.bin.part"
            assert eventually(lambda: partial.exists() and partial.stat().st_size > len(data) // 4, WAIT), agent.log()
            # Progress reaches the command (and the model) while it downloads.
            assert eventually(lambda: 0 < NodeCommand.objects.get(type="model.download").progress < 100, WAIT)
            assert 0 < AIModel.objects.get(pk=model.pk).download_progress < 100
            agent.kill()
        fetched_before = files.sent_bytes(path)
        assert fetched_before < len(data)
        files.throttle = None
        with running_agent(server=gateway.url, token=token, data_dir=data_dir) as again:
            done = eventually(lambda: (m := AIModel.objects.get(pk=model.pk)).is_downloaded and m, WAIT)
            assert done, again.log()
            assert done.status == "ready" and done.download_path == str(data_dir / "models" / "model-1" / "weights.bin")
            assert Path(done.download_path).read_bytes() == data and not partial.exists()
            assert files.sent_bytes(path) < 1.25 * len(data)  # resumed, not fetched again from the start
            assert "resuming model.download" in again.log()


def test_cancelling_a_download_stops_the_agent_and_keeps_what_it_fetched(gateway: LiveGateway, tmp_path: Path) -> None:
    """The execution cancelled through the API: the engine sends command.cancel, the agent stops
    the download at once (the server stops sending), keeps the partial file for a later attempt,
    and remembers the command as cancelled."""
    from executions.models import Execution
    from tests.support.factories import AIModelFactory
    from tests.support.live_server import Rest
    from tests.support.range_server import RangeServer

    node, token = NodeFactory.with_token(node_id="node-local")
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB at 256 KiB/s: 16 s if not cancelled
    data_dir = tmp_path / "agent"
    with RangeServer(tmp_path / "files", throttle=256 * 1024) as files:
        path = files.put("weights.bin", data)
        model = AIModelFactory.create(
            model_id="model-1", name="M", node_id="node-local", repository=files.url, file_name="weights.bin"
        )
        with running_agent(server=gateway.url, token=token, data_dir=data_dir) as agent:
            assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
            rest = Rest(gateway)
            rest.post(f"/api/models/{model.pk}/download", {}, expect=200)
            partial = data_dir / "models" / "model-1" / "weights.bin.part"
            assert eventually(lambda: partial.exists() and partial.stat().st_size > 0, WAIT), agent.log()
            execution = Execution.objects.get(resource_id="model-1")
            rest.post(f"/api/executions/{execution.pk}/cancel", {"reason": "changed my mind"}, expect=200)
            assert eventually(lambda: agent.status()["commands"].get("done") == 2, WAIT), (
                agent.log()
            )  # it and the cancel
            sent = files.sent_bytes(path)
            time.sleep(1.5)
            assert files.sent_bytes(path) - sent < 64 * 1024  # the transfer stopped
            assert partial.exists() and 0 < partial.stat().st_size < len(data)
            assert not (data_dir / "models" / "model-1" / "weights.bin").exists()
            assert Execution.objects.get(pk=execution.pk).status == "cancelled"


def test_a_restarted_web_process_finds_the_node_and_its_server_as_they_were(
    restartable: RestartableServer, tmp_path: Path, model_servers: None
) -> None:
    """The control plane restarts while a deployment runs: the agent reconnects and registers with
    what it runs; the reconcile leaves the record running with the same endpoint and the process
    alone — one process, the same one."""
    from deployments.models import Deployment

    node, token = NodeFactory.with_token(node_id="node-local")
    deployment = _deployment(node)
    with running_agent(server=restartable.url, token=token, data_dir=tmp_path / "agent") as agent:
        _, pid = _serve_fake_deployment(node, agent, tmp_path)
        before = eventually(lambda: (d := Deployment.objects.get(pk=deployment.pk)).status == "running" and d, WAIT)
        registered = fresh(node).registered_at
        restartable.stop()
        restartable.start()
        assert eventually(lambda: fresh(node).registered_at != registered and fresh(node).websocket_connected, WAIT)
        time.sleep(1)
        after = Deployment.objects.get(pk=deployment.pk)
        assert (after.status, after.endpoint, after.is_running) == ("running", before.endpoint, True)
        assert model_server_pids("dep-1") == [pid]
        assert not NodeCommand.objects.filter(type="deployment.stop").exists()


def test_a_result_finished_while_the_server_was_away_arrives_when_it_is_back(
    restartable: RestartableServer, tmp_path: Path
) -> None:
    """Nothing acknowledged is lost: the agent finishes a download while the control plane is
    down; its result waits in the outbox (on disk) and is applied once the agent is back in."""
    from executions.workflows import model_download
    from models_registry.models import AIModel
    from tests.support.factories import AIModelFactory
    from tests.support.personas import OWNER_A
    from tests.support.range_server import RangeServer

    node, token = NodeFactory.with_token(node_id="node-local")
    data = bytes(range(256)) * (8 * 1024)  # 2 MiB at 512 KiB/s
    data_dir = tmp_path / "agent"
    with RangeServer(tmp_path / "files", throttle=512 * 1024) as files:
        files.put("weights.bin", data)
        model = AIModelFactory.create(
            model_id="model-1", name="M", node_id="node-local", repository=files.url, file_name="weights.bin"
        )
        with running_agent(server=restartable.url, token=token, data_dir=data_dir) as agent:
            assert eventually(lambda: fresh(node).websocket_connected, WAIT), agent.log()
            model_download(model=model, actor=OWNER_A)
            partial = data_dir / "models" / "model-1" / "weights.bin.part"
            assert eventually(lambda: partial.exists(), WAIT), agent.log()
            restartable.stop()
            target = data_dir / "models" / "model-1" / "weights.bin"
            assert eventually(lambda: target.exists(), WAIT), agent.log()  # finished while nobody listened
            assert eventually(lambda: agent.status()["outbox"] >= 1, WAIT)  # its result, kept on disk
            assert not AIModel.objects.get(pk=model.pk).is_downloaded
            restartable.start()
            done = eventually(lambda: (m := AIModel.objects.get(pk=model.pk)).is_downloaded and m, WAIT)
            assert done and done.download_path == str(target), agent.log()
            assert eventually(lambda: agent.status()["outbox"] == 0, WAIT)
