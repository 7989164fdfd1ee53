"""Conversations that run (POST /api/conversations/:id/chat, inference.chat) through the live
service: the prompt an agent's model sees (instruction, history within the budget), the stored
messages and the counters they move, streamed and not; failures kept and counted; refusals that
change nothing; tools — `api` tools run by AIWM against a real local HTTP tool, behind the
allowed-hosts guard, `function` tools left to the client. The model is a fake OpenAI-compatible
server on a real port (tests/support/fake_openai.py; with `tool_call` it calls tools as told); the
end-to-end run with a model server started by the real node agent is at the end, and with the real
llama.cpp server in tests/test_node_models.py."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.models import Agent, Tool
from aiwm_project.auth import Principal
from conversations.models import Conversation, Message
from inference.routing import CANDIDATE_SECONDS
from inference.tools import Allowed, ToolRefused, call_api_tool, check_endpoint
from nodes.commands import send_command
from nodes.models import NodeCommand
from tests.support.agent import kill_model_servers, running_agent
from tests.support.factories import (
    AgentFactory,
    AIModelFactory,
    ConversationFactory,
    DeploymentFactory,
    InstructionFactory,
    NodeFactory,
    ToolFactory,
)
from tests.support.fake_openai import FakeOpenAI
from tests.support.live_server import LiveGateway, Rest, eventually, free_port
from tests.support.personas import ORG_B, OWNER_A, OWNER_B_USER_ID
from tests.support.upstreams import flushed, node_and_model, serve

LOOKUP = {"type": "object", "properties": {"orderId": {"type": "integer"}}, "required": ["orderId"]}


def a_conversation(
    *, tool_ids: list[str] | None = None, actor: Principal = OWNER_A, **conversation: Any
) -> Conversation:
    """Agent `agent-1` (default model m1, an instruction with two guidelines) and its conversation `conv-1`;
    node-1 and m1 made unless a deployment (`serve`) made them."""
    node_and_model("node-1", "m1", actor)
    InstructionFactory.create(
        instruction_id="inst-1",
        system_prompt="You are the order desk.",
        guidelines=["Be brief", "Name the order"],
        actor=actor,
    )
    AgentFactory.create(
        agent_id="agent-1",
        node_id="node-1",
        instruction_id="inst-1",
        model_id="m1",
        tool_ids=tool_ids or [],
        actor=actor,
    )
    return ConversationFactory.create(conversation_id="conv-1", agent_id="agent-1", actor=actor, **conversation)


def chat(
    gateway: LiveGateway, conversation: Conversation, body: dict[str, Any], rest: Rest | None = None
) -> httpx.Response:
    headers = dict((rest or Rest(gateway)).session.headers)
    return httpx.post(f"{gateway.url}/api/conversations/{conversation.pk}/chat", json=body, headers=headers, timeout=30)


def events_of(response: httpx.Response) -> list[tuple[str, Any]]:
    """A Server-Sent Events body as (event, data) pairs."""
    out = []
    for block in response.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def fresh(record: Any) -> Any:
    return type(record).objects.get(pk=record.pk)


# --- a turn ---


def test_a_turn_sends_the_instruction_and_history_and_stores_and_counts_the_answer(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    model = serve(upstreams, "dep-1")
    conversation = a_conversation()
    rest = Rest(gateway)
    for role, content in (("user", "Where is order 7?"), ("assistant", "Order 7 shipped.")):
        rest.post("/api/messages", {"conversationId": "conv-1", "role": role, "content": content})

    answer = chat(gateway, conversation, {"content": "And order 8?"})
    assert answer.status_code == 200, answer.text
    user, assistant = answer.json()["userMessage"], answer.json()["assistantMessage"]
    assert (user["role"], user["content"], user["agentId"]) == ("user", "And order 8?", "agent-1")
    assert assistant["role"] == "assistant" and assistant["content"] == "Hello from the fake model."
    assert assistant["usage"] == {"promptTokens": 5, "completionTokens": 6, "totalTokens": 11}
    assert 0 < assistant["latency"] <= assistant["responseTime"]
    assert rest.get(f"/api/messages/{assistant['_id']}") == assistant  # what was answered is what is stored

    [request] = [r for r in model.behaviour.requests if r["path"] == "/v1/chat/completions"]
    assert request["body"]["model"] == "m1" and request["body"]["max_tokens"] == 512
    assert request["body"]["messages"] == [
        {"role": "system", "content": "You are the order desk.\n\nGuidelines:\n- Be brief\n- Name the order"},
        {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": "Order 7 shipped."},
        {"role": "user", "content": "And order 8?"},
    ]
    counted = fresh(conversation)
    assert (counted.total_messages, counted.total_tokens) == (4, 11)
    agent = Agent.objects.get(agent_id="agent-1")
    assert (agent.total_tasks, agent.completed_tasks, agent.failed_tasks) == (1, 1, 0)
    assert agent.average_response_time == pytest.approx(assistant["responseTime"])
    assert agent.average_latency == pytest.approx(assistant["latency"]) and agent.last_task is not None
    flushed(1)  # the call went through the gateway: it is in the usage records like any /v1 request
    assert Rest(gateway).get("/api/usage", {"groupBy": "model"})["data"][0]["requests"] == 1


def test_a_streamed_turn_sends_the_text_as_it_comes_then_the_stored_message(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    serve(upstreams, "dep-1", backend="llama.cpp", token_gap=0.01)
    conversation = a_conversation(model_id="m1")
    answer = chat(gateway, conversation, {"content": "Hi", "stream": True})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache, no-transform"  # no proxy may hold it back
    events = events_of(answer)
    assert events[0][0] == "userMessage" and events[0][1]["content"] == "Hi" and events[0][1]["role"] == "user"
    tokens = [data["content"] for event, data in events if event == "token"]
    assert tokens == ["Hello", " from", " the", " fake", " model", "."]
    assert [event for event, _ in events][-1] == "message"
    stored = events[-1][1]
    assert stored["content"] == "".join(tokens) and stored == Rest(gateway).get(f"/api/messages/{stored['_id']}")
    # No usage in a llama.cpp stream: counted with its tokenizer (the fake's: a word a token).
    assert stored["usage"]["completionTokens"] == 5 and stored["usage"]["promptTokens"] > 0
    assert fresh(conversation).total_messages == 2


def test_a_client_that_leaves_a_streamed_turn_cancels_the_model_and_the_turn_counts_as_failed(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    model = serve(upstreams, "dep-1", token_gap=0.3)
    conversation = a_conversation()
    headers = dict(Rest(gateway).session.headers)
    url = f"{gateway.url}/api/conversations/{conversation.pk}/chat"
    with httpx.stream("POST", url, json={"content": "Hi", "stream": True}, headers=headers, timeout=30) as answer:
        assert any(line.startswith("event: token") for line in answer.iter_lines())  # the first token came: leave
    assert eventually(lambda: model.behaviour.cancelled == 1, 10)
    assert eventually(lambda: Agent.objects.get(agent_id="agent-1").failed_tasks == 1, 10)
    [kept] = Message.objects.filter(conversation_id="conv-1")
    assert kept.role == "user" and "went away" in kept.error and model.behaviour.finished == 0


def test_the_history_is_cut_to_the_context_budget_oldest_turns_first(
    gateway: LiveGateway, upstreams: list[FakeOpenAI], settings: Any
) -> None:
    model = serve(upstreams, "dep-1")
    conversation = a_conversation()
    for i in range(10):
        Rest(gateway).post(
            "/api/messages", {"conversationId": "conv-1", "role": "user", "content": f"{i} " + "x" * 398}
        )
    # Each old message costs 104 (400 characters / 4 + 4); 900 - 100 for the answer - the rest leaves room for 6.
    settings.AIWM_CHAT_CONTEXT_TOKENS, settings.AIWM_CHAT_MAX_TOKENS = 900, 100
    assert chat(gateway, conversation, {"content": "Now?"}).status_code == 200
    messages = model.behaviour.requests[-1]["body"]["messages"]
    assert messages[0]["role"] == "system" and messages[-1] == {"role": "user", "content": "Now?"}
    assert [m["content"][0] for m in messages[1:-1]] == ["4", "5", "6", "7", "8", "9"]


# --- failures and refusals ---


def test_a_failed_call_keeps_the_user_message_with_the_error_and_counts_a_failed_task(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    serve(upstreams, "dep-1", status=500)  # a model server that fails
    conversation = a_conversation()
    answer = chat(gateway, conversation, {"content": "Hi"})
    assert answer.status_code == 502, answer.text  # the model's failure, not ours: never a 500
    assert answer.json()["statusCode"] == 502 and "fake failure" in answer.json()["message"]
    [kept] = Message.objects.filter(conversation_id="conv-1")
    assert kept.role == "user" and kept.content == "Hi" and "fake failure" in kept.error
    agent = Agent.objects.get(agent_id="agent-1")
    assert (agent.total_tasks, agent.completed_tasks, agent.failed_tasks) == (1, 0, 1)

    # Nothing serves the model: 503, streamed as an error event.
    from deployments.models import Deployment

    Deployment.objects.update(status="stopped")
    time.sleep(CANDIDATE_SECONDS + 0.2)  # the gateway reads a model's deployments at most once a second
    streamed = chat(gateway, conversation, {"content": "Again", "stream": True})
    [(first, _), (event, body)] = events_of(streamed)
    assert (
        first == "userMessage"
        and event == "error"
        and body["statusCode"] == 503
        and "No running deployment" in body["message"]
    )
    assert Agent.objects.get(agent_id="agent-1").failed_tasks == 2
    assert fresh(conversation).total_messages == 2


def test_what_cannot_take_a_turn_is_refused_and_nothing_is_stored(gateway: LiveGateway) -> None:
    conversation = a_conversation()
    for body in ({}, {"content": 5}, {"content": "x", "stream": "yes"}, {"content": "x", "maxTokens": 0}):
        answer = chat(gateway, conversation, body)
        assert answer.status_code == 400 and answer.json()["statusCode"] == 400, (body, answer.text)
    viewer = Rest(gateway, role="organization.viewer")
    assert chat(gateway, conversation, {"content": "x"}, rest=viewer).status_code == 403
    other_org = Rest(gateway, org_id=ORG_B, user_id=OWNER_B_USER_ID)
    assert chat(gateway, conversation, {"content": "x"}, rest=other_org).status_code == 404
    missing = httpx.post(
        f"{gateway.url}/api/conversations/68f2e5f6a7b8c9d0e1f2a3b4/chat",
        json={"content": "x"},
        headers=dict(Rest(gateway).session.headers),
    )
    assert missing.status_code == 404
    Agent.objects.update(model_id=None)
    no_model = chat(gateway, conversation, {"content": "x"})
    assert no_model.status_code == 400 and "modelId" in no_model.text
    Conversation.objects.update(status="completed")
    assert chat(gateway, conversation, {"content": "x"}).status_code == 409
    by_business_id = httpx.post(
        f"{gateway.url}/api/conversations/conv-1/chat",
        json={"content": "x"},
        headers=dict(Rest(gateway).session.headers),
    )
    assert by_business_id.status_code == 409  # found by its conversationId too, as every :id of the API
    assert Message.objects.count() == 0 and Agent.objects.get(agent_id="agent-1").total_tasks == 0


def test_an_agent_refers_to_its_model_and_tools_by_id(gateway: LiveGateway) -> None:
    rest = Rest(gateway)
    NodeFactory.create(node_id="node-1")
    body = {"agentId": "a-2", "name": "A", "nodeId": "node-1", "modelId": "nope", "toolIds": ["t-1", "t-2"]}
    refused = rest.post("/api/agents", body, expect=400)
    assert "modelId: Model 'nope' does not exist" in refused["errors"]
    assert {"toolIds: Tool 't-1' does not exist", "toolIds: Tool 't-2' does not exist"} <= set(refused["errors"])
    AIModelFactory.create(model_id="m1")
    ToolFactory.create(tool_id="t-1")
    created = rest.post("/api/agents", {**body, "modelId": "m1", "toolIds": ["t-1"]})
    assert (created["modelId"], created["toolIds"]) == ("m1", ["t-1"])
    # The model an agent falls back to cannot be deleted under it.
    model = rest.get("/api/models", {"filter[modelId]": "m1"})["data"][0]
    assert rest.session.delete(f"{gateway.url}/api/models/{model['_id']}").status_code == 409


# --- tools ---


class ToolServer:
    """A real HTTP tool on loopback: answers each POST with `answer` (JSON), records what it got."""

    def __init__(self, answer: Any = None, status: int = 200) -> None:
        self.received: list[Any] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.received.append(json.loads(self.rfile.read(length) or b"null"))
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/lookup"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer({"status": "shipped", "orderId": 1042})
    yield server
    server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_an_api_tool_the_model_calls_is_run_and_its_result_goes_back_to_the_model(
    gateway: LiveGateway, upstreams: list[FakeOpenAI], tool_server: ToolServer, settings: Any, stream: bool
) -> None:
    settings.AIWM_TOOL_ALLOWED_HOSTS = ["127.0.0.1"]  # named exactly: loopback is refused otherwise
    model = serve(upstreams, "dep-1", tool_call=("order-lookup", '{"orderId": 1042}'))
    ToolFactory.create(
        tool_id="order-lookup", type="api", endpoint=tool_server.url, parameters=LOOKUP, description="Find an order"
    )
    conversation = a_conversation(tool_ids=["order-lookup"])

    answer = chat(gateway, conversation, {"content": "Where is order 1042?", "stream": stream})
    assert answer.status_code == 200, answer.text
    assistant = events_of(answer)[-1][1] if stream else answer.json()["assistantMessage"]
    assert tool_server.received == [{"orderId": 1042}]
    [call] = assistant["toolCalls"]
    assert call["function"] == {"name": "order-lookup", "arguments": '{"orderId": 1042}'} and call["id"]
    assert assistant["toolResults"] == [{"toolCallId": call["id"], "result": {"status": "shipped", "orderId": 1042}}]
    assert assistant["content"] == 'The tool said: {"status": "shipped", "orderId": 1042}'

    first, second = [r["body"] for r in model.behaviour.requests if r["path"] == "/v1/chat/completions"]
    assert first["tools"] == [
        {"type": "function", "function": {"name": "order-lookup", "description": "Find an order", "parameters": LOOKUP}}
    ]
    assert second["messages"][-2]["tool_calls"] == [call]
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": json.dumps(assistant["toolResults"][0]["result"]),
    }
    tool = Tool.objects.get(tool_id="order-lookup")
    assert (tool.total_usage, tool.total_failures) == (1, 0) and tool.average_latency > 0
    [used] = tool.usage
    assert used["agentId"] == "agent-1" and used["arguments"] == {"orderId": 1042} and used["success"] is True
    # Usage of both model calls, on the one message and the conversation.
    assert assistant["usage"]["promptTokens"] >= 10 and fresh(conversation).total_messages == 2

    # The turn is history now: replayed with its tool call and result.
    chat(gateway, conversation, {"content": "Thanks"})
    replay = [r["body"] for r in model.behaviour.requests if r["path"] == "/v1/chat/completions"][2]["messages"]
    assert [m["role"] for m in replay] == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_a_tool_on_an_address_that_is_not_allowed_is_not_called_and_counts_a_failure(
    gateway: LiveGateway, upstreams: list[FakeOpenAI], tool_server: ToolServer, settings: Any
) -> None:
    settings.AIWM_TOOL_ALLOWED_HOSTS = ["*"]  # any public address: loopback is not one
    serve(upstreams, "dep-1", tool_call=("order-lookup", '{"orderId": 1}'))
    ToolFactory.create(tool_id="order-lookup", type="api", endpoint=tool_server.url, parameters=LOOKUP)
    conversation = a_conversation(tool_ids=["order-lookup"])
    answer = chat(gateway, conversation, {"content": "Where?"})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["assistantMessage"]["toolResults"]
    assert result["result"]["error"].startswith("refused: 127.0.0.1")
    assert tool_server.received == []
    tool = Tool.objects.get(tool_id="order-lookup")
    assert (tool.total_usage, tool.total_failures) == (1, 1) and tool.usage[0]["success"] is False


def test_a_function_tool_call_ends_the_turn_with_the_call_stored_for_the_client(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    model = serve(upstreams, "dep-1", tool_call=("draft-email", '{"to": "a@example.com"}'))
    ToolFactory.create(tool_id="draft-email", type="function")
    ToolFactory.create(tool_id="gone-tool", type="api")
    conversation = a_conversation(tool_ids=["draft-email", "gone-tool"])
    Tool.objects.filter(tool_id="gone-tool").update(is_deleted=True)  # deleted after the agent got it
    assistant = chat(gateway, conversation, {"content": "Write to a"}).json()["assistantMessage"]
    assert [c["function"]["name"] for c in assistant["toolCalls"]] == ["draft-email"]
    assert assistant["toolResults"] == [] and assistant["content"] == ""
    assert len(model.behaviour.requests) == 1  # not sent back: only the client can answer it
    assert [t["function"]["name"] for t in model.behaviour.requests[0]["body"]["tools"]] == ["draft-email"]
    assert Tool.objects.get(tool_id="draft-email").total_usage == 0


def test_the_client_answers_a_function_tool_call_and_the_model_goes_on_from_its_result(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    model = serve(upstreams, "dep-1", tool_call=("draft-email", '{"to": "a@example.com"}'))
    ToolFactory.create(tool_id="draft-email", type="function")
    conversation = a_conversation(tool_ids=["draft-email"])
    asked = chat(gateway, conversation, {"content": "Write to a"}).json()["assistantMessage"]
    [call] = asked["toolCalls"]
    for wrong in ({"toolResults": [{"toolCallId": "call_nope", "result": 1}]}, {"content": "x", "toolResults": []}):
        assert chat(gateway, conversation, wrong).status_code in (400, 409), wrong
    assert Message.objects.count() == 2 and Message.objects.get(pk=asked["_id"]).tool_results == []

    answer = chat(gateway, conversation, {"toolResults": [{"toolCallId": call["id"], "result": {"sent": True}}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["userMessage"] is None
    assert answer.json()["assistantMessage"]["content"] == 'The tool said: {"sent": true}'
    assert Message.objects.get(pk=asked["_id"]).tool_results == [{"toolCallId": call["id"], "result": {"sent": True}}]
    sent = model.behaviour.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"] and sent[2]["tool_calls"] == [call]
    again = chat(gateway, conversation, {"toolResults": [{"toolCallId": call["id"], "result": 2}]})
    assert again.status_code == 409  # answered already (and the last message is no tool call now)
    assert fresh(conversation).total_messages == 3


def test_tool_rounds_stop_at_the_limit(
    gateway: LiveGateway, upstreams: list[FakeOpenAI], tool_server: ToolServer, settings: Any
) -> None:
    settings.AIWM_TOOL_ALLOWED_HOSTS, settings.AIWM_CHAT_TOOL_ROUNDS = ["127.0.0.1"], 1
    model = serve(upstreams, "dep-1", tool_call=("order-lookup", "{}"))
    ToolFactory.create(tool_id="order-lookup", type="api", endpoint=tool_server.url)
    assistant = chat(gateway, a_conversation(tool_ids=["order-lookup"]), {"content": "?"}).json()["assistantMessage"]
    assert len(model.behaviour.requests) == 1 and len(assistant["toolResults"]) == 1


def test_the_allowed_hosts_guard() -> None:
    public, loopback = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")
    anything = Allowed.parse(["*"])
    assert anything.admits("example.com", public) and not anything.admits("localhost", loopback)
    for special in ("10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert not anything.admits("x.example.com", ipaddress.ip_address(special)), special
    named = Allowed.parse(["tools.internal", "*.corp.example", "10.1.0.0/16"])
    assert named.admits("tools.internal", ipaddress.ip_address("10.9.9.9"))  # named exactly: private is fine
    assert named.admits("a.corp.example", public) and not named.admits("example.com", public)
    assert named.admits("", ipaddress.ip_address("10.1.2.3"))
    assert not named.admits("tools.internal", ipaddress.ip_address("169.254.169.254"))  # metadata: never by name
    for endpoint in ("file:///etc/passwd", "http://user:pw@tools.internal/", "http://169.254.169.254/latest"):
        with pytest.raises(ToolRefused):
            check_endpoint(endpoint, named)
    with pytest.raises(ToolRefused):
        check_endpoint("http://example.com/", Allowed.parse([]))  # nothing allowed by default


def test_a_name_that_resolves_to_a_refused_address_is_refused_at_connect(
    settings: Any, tool_server: ToolServer
) -> None:
    """The check is on the addresses the connection uses, not on the name: `localhost` passes the
    name check under `*` and is refused by the resolver (as a rebinding name would be)."""
    settings.AIWM_TOOL_ALLOWED_HOSTS = ["*"]
    port = tool_server.url.split(":")[2].split("/")[0]
    outcome = asyncio.run(call_api_tool(f"http://localhost:{port}/lookup", {"orderId": 1}))
    assert outcome.error.startswith("refused: localhost resolves to "), outcome.error
    assert tool_server.received == []
    settings.AIWM_TOOL_ALLOWED_HOSTS = ["localhost"]  # named exactly: allowed
    assert asyncio.run(call_api_tool(f"http://localhost:{port}/lookup", {"orderId": 1})).result["status"] == "shipped"


# --- end to end: the model server run by the node agent ---

FAKE_OPENAI = Path(__file__).resolve().parent / "support" / "fake_openai.py"


@pytest.fixture
def agent_servers() -> Iterator[None]:
    yield
    kill_model_servers("dep-tools")


def test_a_tool_calling_model_served_by_the_node_agent_answers_a_conversation(
    gateway: LiveGateway, tmp_path: Path, tool_server: ToolServer, settings: Any, agent_servers: None
) -> None:
    settings.AIWM_TOOL_ALLOWED_HOSTS = ["127.0.0.1"]
    node, token = NodeFactory.with_token(node_id="node-1")
    AIModelFactory.create(model_id="m1", node_id="node-1")
    DeploymentFactory.create(deployment_id="dep-tools", model_id="m1", node_id="node-1")
    ToolFactory.create(tool_id="order-lookup", type="api", endpoint=tool_server.url, parameters=LOOKUP)
    conversation = a_conversation(tool_ids=["order-lookup"])
    (tmp_path / "model.bin").write_bytes(b"weights")
    # A command template is formatted ({port}...): the JSON's braces are doubled.
    command = f"{sys.executable} {FAKE_OPENAI} --port {{port}} --tool-call order-lookup '{{{{\"orderId\": 1042}}}}'"
    from deployments.models import Deployment

    with running_agent(server=gateway.url, token=token, data_dir=tmp_path / "agent") as agent:
        assert eventually(lambda: fresh(node).websocket_connected, 30), agent.log()
        started = send_command(
            org_id=node.owner_org_id,
            node_id="node-1",
            type="deployment.start",
            resource={"type": "deployment", "id": "dep-tools"},
            data={"modelPath": str(tmp_path / "model.bin"), "port": free_port(), "command": command},
        )
        done = eventually(lambda: (c := NodeCommand.objects.get(pk=started.pk)).status == "succeeded" and c, 30)
        assert done, (NodeCommand.objects.get(pk=started.pk).result, agent.log())
        assert eventually(lambda: Deployment.objects.get(deployment_id="dep-tools").status == "running", 30)
        answer = chat(gateway, conversation, {"content": "Where is order 1042?", "stream": True})
        assert answer.status_code == 200, answer.text
    stored = events_of(answer)[-1][1]
    assert stored["content"] == 'The tool said: {"status": "shipped", "orderId": 1042}', events_of(answer)
    assert tool_server.received == [{"orderId": 1042}]
    assert Tool.objects.get(tool_id="order-lookup").total_usage == 1
    flushed(2)  # both model calls recorded, in this test's database
