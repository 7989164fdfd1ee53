"""Create the records other entities refer to (node, model, agent, conversation) through the API."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def _post(client: APIClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, body, format="json")
    assert response.status_code == 201, (url, response.json())
    return response.json()


def post_node(client: APIClient, node_id: str = "node-gpu-01") -> dict[str, Any]:
    return _post(client, "/api/nodes", {"nodeId": node_id, "name": f"GPU server {node_id}", "cpuCores": 16})


def post_model(client: APIClient, model_id: str = "llama-2-7b-v1", node_id: str = "node-gpu-01") -> dict[str, Any]:
    body = {"modelId": model_id, "name": f"Model {model_id}", "type": "llm", "framework": "pytorch", "nodeId": node_id}
    return _post(client, "/api/models", body)


def post_agent(client: APIClient, agent_id: str = "agent-assistant-01", node_id: str = "node-gpu-01") -> dict[str, Any]:
    return _post(client, "/api/agents", {"agentId": agent_id, "name": f"Agent {agent_id}", "nodeId": node_id})


def post_conversation(
    client: APIClient, conversation_id: str = "conv-0001", agent_id: str = "agent-assistant-01", **extra: Any
) -> dict[str, Any]:
    body = {"conversationId": conversation_id, "title": f"Conversation {conversation_id}", "agentId": agent_id}
    return _post(client, "/api/conversations", {**body, **extra})
