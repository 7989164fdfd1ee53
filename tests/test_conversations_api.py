"""The Conversations REST contract: the generic entity checks, server-kept counters, participants, cascade delete."""

from __future__ import annotations

from typing import Any

from tests.support.api import ISO_MS, EntityAPIContract, assert_error
from tests.support.factories import AgentFactory, AIModelFactory, NodeFactory
from tests.support.personas import PersonaClient, Personas

URL = "/api/conversations"
PARTICIPANT = {"userId": "68dcf365f6a92c0d4911b619", "role": "customer", "joinedAt": "2025-11-16T13:00:00.000Z"}


class TestConversationsAPI(EntityAPIContract):
    url = URL
    label = "Conversation"
    business_id = "conversationId"
    required_fields = ["conversationId", "agentId"]
    update_body = {"title": "Refund - resolved", "status": "completed", "isActive": False}
    sort_field = "title"
    filter_cases = [
        ("status", "paused", {"status": "paused"}, {"status": "active"}),
        ("conversationType", "analysis", {"conversationType": "analysis"}, {"conversationType": "chat"}),
        ("agentId", "agent-analyst-02", {"agentId": "agent-analyst-02"}, {"agentId": "agent-assistant-01"}),
        ("modelId", "mistral-7b", {"modelId": "mistral-7b"}, {"modelId": "llama-2-7b-v1"}),
        ("isActive", "false", {"isActive": False}, {"isActive": True}),
        ("tags", "refund", {"tags": ["support", "refund"]}, {"tags": ["support"]}),
    ]
    invalid_values = [
        ("conversationType", "gossip"),
        ("status", "archived"),
        ("agentId", ""),
        ("isActive", "maybe"),
        ("tags", "support"),
        ("tags", ["x" * 65]),
        ("participants", {"userId": "u1"}),
        ("participants", [{"role": "customer"}]),
        ("participants", [{"userId": "u1", "role": "customer", "joinedAt": "not a date"}]),
        ("participants", [{**PARTICIPANT, "leftAt": "2025-11-16T12:00:00.000Z"}]),
        ("totalTokens", 100),
        ("totalMessages", 1),
        ("conversationId", "has spaces"),
    ]
    reference_fields = ["agentId", "modelId"]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "conversationId": f"conv-{n:04d}",
            "title": f"Support conversation {n:03d}",
            "description": "Customer asks about a late refund",
            "agentId": "agent-assistant-01",
            "modelId": "llama-2-7b-v1",
            "conversationType": "chat",
            "status": "active",
            "tags": ["support"],
            "participants": [PARTICIPANT],
        }

    def make_references(self, client: PersonaClient) -> None:
        NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
        for model_id in ("llama-2-7b-v1", "mistral-7b"):
            AIModelFactory.create(model_id=model_id, node_id="node-gpu-01", actor=client.principal)
        for agent_id in ("agent-assistant-01", "agent-analyst-02"):
            AgentFactory.create(agent_id=agent_id, actor=client.principal)

    # --- conversation specifics ---
    def test_defaults(self, personas: Personas) -> None:
        minimal = personas.owner_a.post(
            URL, {"conversationId": "conv-bare", "agentId": "agent-assistant-01"}, format="json"
        )
        assert minimal.status_code == 201, minimal.json()
        body = minimal.json()
        assert body["title"] == body["description"] == ""
        assert body["modelId"] is None
        assert body["conversationType"] == "chat" and body["status"] == "active"
        assert body["totalTokens"] == body["totalMessages"] == 0
        assert body["tags"] == body["participants"] == [] and body["isActive"] is True

    def test_blank_or_null_model_means_none(self, personas: Personas) -> None:
        for n, value in enumerate(("", None)):
            created = self.create(personas.owner_a, n, modelId=value)
            assert created["modelId"] is None
        created = self.create(personas.owner_a, 5)
        cleared = personas.owner_a.put(f"{URL}/{created['_id']}", {"modelId": None}, format="json")
        assert cleared.status_code == 200 and cleared.json()["modelId"] is None

    def test_counters_cannot_be_written_by_a_client(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        for field in ("totalTokens", "totalMessages"):
            response = personas.owner_a.put(f"{URL}/{created['_id']}", {field: 99}, format="json")
            body = assert_error(response, 400)
            assert body["errors"] == [f"{field} is set by the server."]
        assert personas.owner_a.get(f"{URL}/{created['_id']}").json() == created

    def test_participant_join_time_defaults_to_now_and_times_are_normalised(self, personas: Personas) -> None:
        participants = [
            {"userId": "u1", "role": "customer"},
            {"userId": "u2", "role": "operator", "joinedAt": "2025-11-16T14:00:00+01:00", "leftAt": None},
            {"userId": "u3", "role": "observer", "joinedAt": "2025-11-16T13:00:00Z", "leftAt": "2025-11-16T13:30:00Z"},
        ]
        created = self.create(personas.owner_a, participants=participants)
        first, second, third = created["participants"]
        assert first["userId"] == "u1" and ISO_MS.match(first["joinedAt"]) and "leftAt" not in first
        assert second == {"userId": "u2", "role": "operator", "joinedAt": "2025-11-16T13:00:00.000Z"}
        assert third["leftAt"] == "2025-11-16T13:30:00.000Z"
        assert personas.owner_a.get(f"{URL}/{created['_id']}").json()["participants"] == created["participants"]

    def test_put_validates_participants_as_strictly_as_post(self, personas: Personas) -> None:
        # PUT is a partial update; nested required keys must stay required all the same.
        created = self.create(personas.owner_a)
        for participants in ([{"role": "customer"}], [{"userId": "u9"}], [{"userId": "u9", "role": ""}]):
            response = personas.owner_a.put(f"{URL}/{created['_id']}", {"participants": participants}, format="json")
            body = assert_error(response, 400)
            assert all(line.startswith("participants[0]") for line in body["errors"]), body
        assert personas.owner_a.get(f"{URL}/{created['_id']}").json() == created

    def test_conversation_id_cannot_change(self, personas: Personas) -> None:
        created = self.create(personas.owner_a)
        response = personas.owner_a.put(f"{URL}/{created['_id']}", {"conversationId": "conv-renamed"}, format="json")
        body = assert_error(response, 400)
        assert body["errors"][0].startswith("conversationId")
        same = personas.owner_a.put(
            f"{URL}/{created['_id']}", {"conversationId": created["conversationId"]}, format="json"
        )
        assert same.status_code == 200

    def test_agent_of_another_organization_is_400(self, personas: Personas) -> None:
        AgentFactory.create(agent_id="agent-only-in-b", actor=personas.owner_b.principal)
        response = personas.owner_a.post(URL, {**self.valid_body(1), "agentId": "agent-only-in-b"}, format="json")
        body = assert_error(response, 400)
        assert any(line.startswith("agentId") for line in body["errors"]), body
        assert self.count(personas.owner_a) == 0

    def test_delete_removes_its_messages_too(self, personas: Personas) -> None:
        client = personas.owner_a
        kept = self.create(client, 1)
        doomed = self.create(client, 2)
        for conversation in (kept, doomed, doomed):
            body = {"conversationId": conversation["conversationId"], "role": "user", "content": "hi"}
            assert client.post("/api/messages", body, format="json").status_code == 201
        assert client.delete(f"{URL}/{doomed['_id']}").status_code == 200
        left = client.get("/api/messages").json()["data"]
        assert [m["conversationId"] for m in left] == [kept["conversationId"]]
        # The id can be reused, and the new conversation starts from zero.
        reborn = self.create(client, 2)
        assert reborn["totalMessages"] == 0
        assert client.get("/api/messages", {"filter[conversationId]": reborn["conversationId"]}).json()["data"] == []
