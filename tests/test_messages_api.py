"""The Messages REST contract: the generic entity checks, the server-made messageId, and exact conversation counters."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from conversations.models import MESSAGE_CONTENT_MAX_CHARS
from tests.support.api import OBJECT_ID, EntityAPIContract, assert_error
from tests.support.factories import AgentFactory, ConversationFactory, NodeFactory
from tests.support.personas import ORG_A, OWNER_A_USER_ID, PersonaClient, Personas, client_for

URL = "/api/messages"
USAGE = {"promptTokens": 10, "completionTokens": 5, "totalTokens": 15}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": '{"orderId": 1}'}}


def counters(client: APIClient, conversation_id: str = "conv-0001") -> tuple[int, int]:
    body = client.get(f"/api/conversations/{conversation_id}").json()
    return body["totalMessages"], body["totalTokens"]


class TestMessagesAPI(EntityAPIContract):
    url = URL
    label = "Message"
    business_id = "messageId"
    required_fields = ["conversationId", "role", "content"]
    update_body = {"content": "Edited reply", "isActive": False, "latency": 120.5}
    sort_field = "messageId"
    filter_cases = [
        ("conversationId", "conv-0002", {"conversationId": "conv-0002"}, {"conversationId": "conv-0001"}),
        ("role", "assistant", {"role": "assistant"}, {"role": "user"}),
        ("agentId", "agent-analyst-02", {"agentId": "agent-analyst-02"}, {"agentId": "agent-assistant-01"}),
        ("isActive", "false", {"isActive": False}, {"isActive": True}),
    ]
    invalid_values = [
        ("role", "robot"),
        ("content", ["not", "text"]),
        ("content", ""),
        ("content", "x" * (MESSAGE_CONTENT_MAX_CHARS + 1)),
        ("conversationId", ""),
        ("usage", {"totalTokens": -1}),
        ("usage", {"promptTokens": "many"}),
        ("usage", [1, 2]),
        ("functionCall", {"arguments": {}}),
        ("functionCall", {"name": "f", "arguments": "not an object"}),
        ("toolCalls", [{"id": "call_1", "type": "function"}]),
        ("toolCalls", [{**TOOL_CALL, "function": {"name": "f"}}]),
        ("toolCalls", TOOL_CALL),
        ("toolResults", [{"result": {"ok": True}}]),
        ("latency", -1),
        ("responseTime", "slow"),
        ("messageId", "has spaces"),
    ]
    reference_fields = ["conversationId", "agentId"]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "messageId": f"msg-{n:04d}",
            "conversationId": "conv-0001",
            "agentId": "agent-assistant-01",
            "role": "user",
            "content": f"Where is my refund? ({n})",
            "usage": USAGE,
        }

    def make_references(self, client: PersonaClient) -> None:
        NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
        for agent_id in ("agent-assistant-01", "agent-analyst-02"):
            AgentFactory.create(agent_id=agent_id, actor=client.principal)
        for conversation_id in ("conv-0001", "conv-0002"):
            ConversationFactory.create(conversation_id=conversation_id, actor=client.principal)

    def post(self, client: APIClient, **body: Any) -> Any:
        return client.post(URL, {"conversationId": "conv-0001", "role": "user", "content": "hi", **body}, format="json")

    # --- message id ---
    def test_message_id_is_the_object_id_when_not_sent(self, personas: Personas) -> None:
        response = self.post(personas.owner_a)
        assert response.status_code == 201, response.json()
        body = response.json()
        assert OBJECT_ID.match(body["_id"]) and body["messageId"] == body["_id"]
        assert body["agentId"] is None
        assert personas.owner_a.get(f"{URL}/{body['messageId']}").json() == body

    def test_client_message_id_makes_a_retry_a_409_that_counts_nothing(self, personas: Personas) -> None:
        assert self.post(personas.owner_a, messageId="upstream-42", usage=USAGE).status_code == 201
        assert_error(self.post(personas.owner_a, messageId="upstream-42", usage=USAGE), 409)
        assert counters(personas.owner_a) == (1, 15)

    # --- counters ---
    def test_create_and_delete_keep_conversation_counters(self, personas: Personas) -> None:
        client = personas.owner_a
        with_usage = self.post(client, usage=USAGE).json()
        self.post(client)  # no usage: counts as a message with 0 tokens
        self.post(client, usage={"promptTokens": 4, "completionTokens": 3}).json()  # totalTokens defaults to 7
        self.post(client, conversationId="conv-0002", usage=USAGE)
        assert counters(client) == (3, 22)
        assert counters(client, "conv-0002") == (1, 15)

        assert client.delete(f"{URL}/{with_usage['_id']}").status_code == 200
        assert counters(client) == (2, 7)
        assert_error(client.delete(f"{URL}/{with_usage['_id']}"), 404)
        assert counters(client) == (2, 7)
        assert counters(client, "conv-0002") == (1, 15)

    def test_new_message_marks_conversation_as_recently_updated(self, personas: Personas) -> None:
        before = personas.owner_a.get("/api/conversations/conv-0001").json()
        self.post(personas.owner_a)
        after = personas.owner_a.get("/api/conversations/conv-0001").json()
        assert after["updatedAt"] >= before["updatedAt"] and after["updatedBy"] == before["updatedBy"]
        recent = personas.owner_a.get("/api/conversations", {"sort": "-updatedAt"}).json()["data"]
        assert recent[0]["conversationId"] == "conv-0001"

    def test_usage_total_defaults_to_prompt_plus_completion(self, personas: Personas) -> None:
        body = self.post(personas.owner_a, usage={"promptTokens": 4, "completionTokens": 3}).json()
        assert body["usage"] == {"promptTokens": 4, "completionTokens": 3, "totalTokens": 7}
        body = self.post(personas.owner_a, usage={"totalTokens": 9}).json()
        assert body["usage"] == {"promptTokens": 0, "completionTokens": 0, "totalTokens": 9}

    def test_changing_usage_moves_total_tokens_by_the_difference(self, personas: Personas) -> None:
        client = personas.owner_a
        message = self.post(client, usage=USAGE).json()
        self.post(client, usage=USAGE)
        url = f"{URL}/{message['_id']}"
        assert client.put(url, {"usage": {"totalTokens": 40}}, format="json").status_code == 200
        assert counters(client) == (2, 55)
        assert client.put(url, {"usage": None}, format="json").status_code == 200
        assert counters(client) == (2, 15)
        assert client.put(url, {"content": "edited only"}, format="json").status_code == 200
        assert counters(client) == (2, 15)
        assert client.delete(url).status_code == 200
        assert counters(client) == (1, 15)

    def test_message_cannot_move_to_another_conversation(self, personas: Personas) -> None:
        message = self.post(personas.owner_a, usage=USAGE).json()
        response = personas.owner_a.put(f"{URL}/{message['_id']}", {"conversationId": "conv-0002"}, format="json")
        body = assert_error(response, 400)
        assert body["errors"][0].startswith("conversationId")
        assert counters(personas.owner_a) == (1, 15) and counters(personas.owner_a, "conv-0002") == (0, 0)
        assert personas.owner_a.get(f"{URL}/{message['_id']}").json() == message

    def test_conversation_of_another_organization_is_400_and_counts_nothing(self, personas: Personas) -> None:
        ConversationFactory.create(conversation_id="conv-only-in-b", actor=personas.owner_b.principal)
        body = assert_error(self.post(personas.owner_a, conversationId="conv-only-in-b", usage=USAGE), 400)
        assert any(line.startswith("conversationId") for line in body["errors"]), body
        assert counters(personas.owner_b, "conv-only-in-b") == (0, 0)
        assert self.count(personas.owner_a) == 0

    def test_deleted_conversation_takes_no_new_messages(self, personas: Personas) -> None:
        assert personas.owner_a.delete("/api/conversations/conv-0002").status_code == 200
        assert_error(self.post(personas.owner_a, conversationId="conv-0002"), 400)
        assert self.count(personas.owner_a) == 0

    # --- shapes ---
    def test_tool_call_message_may_have_empty_content(self, personas: Personas) -> None:
        response = self.post(personas.owner_a, role="assistant", content="", toolCalls=[TOOL_CALL])
        assert response.status_code == 201, response.json()
        assert response.json()["toolCalls"] == [TOOL_CALL] and response.json()["content"] == ""
        response = self.post(personas.owner_a, role="assistant", content="", functionCall={"name": "f"})
        assert response.status_code == 201, response.json()
        assert response.json()["functionCall"] == {"name": "f", "arguments": {}}

    def test_all_optional_shapes_round_trip(self, personas: Personas) -> None:
        body = {
            "name": "Support bot",
            "functionCall": {"name": "lookup_order", "arguments": {"orderId": 1, "nested": {"a": [1, 2]}}},
            "toolCalls": [TOOL_CALL],
            "toolResults": [
                {"toolCallId": "call_1", "result": {"status": "shipped"}},
                {"toolCallId": "c2", "result": None},
            ],
            "usage": USAGE,
            "latency": 12.5,
            "responseTime": 950,
            "error": "upstream timeout, retried",
            "content": "  indented\n\tcode  ",
        }
        created = self.post(personas.owner_a, role="assistant", **body).json()
        assert {k: created[k] for k in body} == body
        assert personas.owner_a.get(f"{URL}/{created['_id']}").json() == created

    def test_put_validates_nested_shapes_as_strictly_as_post(self, personas: Personas) -> None:
        # PUT is a partial update; nested required keys must stay required all the same.
        created = self.post(personas.owner_a, usage=USAGE).json()
        bodies: list[dict[str, Any]] = [
            {"toolCalls": [{"id": "call_1", "type": "function"}]},
            {"toolCalls": [{**TOOL_CALL, "function": {"arguments": "{}"}}]},
            {"functionCall": {"arguments": {}}},
            {"toolResults": [{"result": 1}]},
            {"content": ""},
        ]
        for body in bodies:
            response = personas.owner_a.put(f"{URL}/{created['_id']}", body, format="json")
            assert_error(response, 400)
        assert personas.owner_a.get(f"{URL}/{created['_id']}").json() == created
        assert counters(personas.owner_a) == (1, 15)


# --- concurrency (PostgreSQL: SQLite serializes writers and ignores row locks) ---
def _in_parallel(clients: list[APIClient], call: Any) -> list[int]:
    """Run call(client) for every client at once, each in its own thread with its own DB connection."""
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []
    errors: list[BaseException] = []

    def run(client: APIClient) -> None:
        try:
            barrier.wait(timeout=30)
            statuses.append(call(client).status_code)
        except BaseException as exc:  # surfaced below: an exception in a thread would otherwise vanish
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return statuses


def _owner_clients(n: int) -> list[APIClient]:
    return [client_for(user_id=OWNER_A_USER_ID, org_id=ORG_A, roles=["organization.owner"]) for _ in range(n)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_messages_are_all_counted(personas: Personas) -> None:
    client = personas.owner_a
    NodeFactory.create(actor=client.principal)
    AgentFactory.create(actor=client.principal)
    ConversationFactory.create(conversation_id="conv-busy", actor=client.principal)
    n = 24
    body = {"conversationId": "conv-busy", "role": "user", "content": "hi", "usage": USAGE}
    statuses = _in_parallel(_owner_clients(n), lambda c: c.post(URL, body, format="json"))
    assert statuses == [201] * n
    assert counters(client, "conv-busy") == (n, n * 15)
    assert client.get(URL, {"filter[conversationId]": "conv-busy"}).json()["pagination"]["total"] == n


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_deletes_of_one_message_subtract_once(personas: Personas) -> None:
    client = personas.owner_a
    NodeFactory.create(actor=client.principal)
    AgentFactory.create(actor=client.principal)
    ConversationFactory.create(conversation_id="conv-busy", actor=client.principal)
    body = {"conversationId": "conv-busy", "role": "user", "content": "hi", "usage": USAGE}
    ids = [client.post(URL, body, format="json").json()["_id"] for _ in range(3)]
    statuses = _in_parallel(_owner_clients(12), lambda c: c.delete(f"{URL}/{ids[0]}"))
    assert sorted(statuses) == [200] + [404] * 11
    assert counters(client, "conv-busy") == (2, 30)
