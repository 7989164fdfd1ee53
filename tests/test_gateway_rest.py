"""REST side of the node gateway: node tokens, the command outbox, metrics and deployment logs."""

from __future__ import annotations

import io
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from gateway.identity import ConnectionRefused, authenticate_connection
from nodes.models import Node, NodeCommand, NodeMetric
from tests.support.api import assert_error
from tests.support.factories import (
    AIModelFactory,
    DeploymentFactory,
    DeploymentLogFactory,
    NodeFactory,
    NodeMetricFactory,
)
from tests.support.personas import ORG_A, Personas, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def node(personas: Personas) -> Node:
    return NodeFactory.create(name="GPU 1", actor=personas.owner_a.principal)


def test_token_names_one_node_and_rotation_revokes_the_old(personas: Personas, node: Node) -> None:
    response = personas.editor_a.post(f"/api/nodes/{node.pk}/token")
    assert response.status_code == 201
    body = response.json()
    assert body["nodeId"] == "node-gpu-01" and body["expiresAt"].endswith("Z")
    claims = jwt.decode(body["token"], settings.AIWM_NODE_TOKEN_SECRET, algorithms=["HS256"])
    assert claims["typ"] == "node" and claims["orgId"] == ORG_A and claims["sub"] == node.pk
    assert authenticate_connection(body["token"]).node_id == "node-gpu-01"
    newer = personas.owner_a.post("/api/nodes/node-gpu-01/token").json()["token"]
    with pytest.raises(ConnectionRefused, match="revoked"):
        authenticate_connection(body["token"])
    assert authenticate_connection(newer).node_pk == node.pk
    # A node token is not a REST credential.
    client = client_for(user_id="x", org_id=ORG_A, roles=["organization.owner"])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {newer}")
    assert_error(client.get("/api/nodes"), 401)


def test_token_needs_write_rights_and_the_right_org(personas: Personas, node: Node) -> None:
    body = assert_error(personas.viewer_a.post(f"/api/nodes/{node.pk}/token"), 403)
    assert body["message"] == "You do not have permission to update"
    assert_error(personas.owner_b.post(f"/api/nodes/{node.pk}/token"), 404)


def test_user_tokens_may_speak_only_for_a_node_of_their_org(personas: Personas, node: Node) -> None:
    from aiwm_project.auth import issue_user_token

    editor = issue_user_token(user_id="u", username="u", org_id=ORG_A, roles=["organization.editor"])
    assert authenticate_connection(editor, "node-gpu-01").via == "user-token"
    assert authenticate_connection(editor, node.pk).node_id == "node-gpu-01"
    for token, hint, reason in (
        (editor, None, "auth.nodeId"),
        (editor, "other-node", "not found"),
        (
            issue_user_token(user_id="u", username="u", org_id=ORG_A, roles=["organization.viewer"]),
            "node-gpu-01",
            "write rights",
        ),
        (
            issue_user_token(user_id="u", username="u", org_id="org-b", roles=["organization.owner"]),
            "node-gpu-01",
            "not found",
        ),
        ("garbage", "node-gpu-01", "invalid token"),
        ("", "node-gpu-01", "missing token"),
    ):
        with pytest.raises(ConnectionRefused, match=reason):
            authenticate_connection(token, hint)


def test_expired_node_token_is_refused(personas: Personas, node: Node, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AIWM_NODE_TOKEN_TTL_DAYS = -1
    token = personas.owner_a.post(f"/api/nodes/{node.pk}/token").json()["token"]
    with pytest.raises(ConnectionRefused, match="expired"):
        authenticate_connection(token)


def test_issue_node_token_command(node: Node) -> None:
    out = io.StringIO()
    call_command("issue_node_token", "node-gpu-01", "--org-id", ORG_A, stdout=out)
    token = out.getvalue().strip()
    assert out.getvalue() == token + "\n"
    assert authenticate_connection(token).node_pk == node.pk
    with pytest.raises(CommandError):
        call_command("issue_node_token", "node-gpu-01", "--org-id", "another-org", stdout=io.StringIO())


def test_commands_are_stored_queued_when_the_node_is_offline(personas: Personas, node: Node) -> None:
    url = f"/api/nodes/{node.pk}/commands"
    body = {
        "type": "model.download",
        "resource": {"type": "model", "id": "llama-2-7b-v1"},
        "data": {"repository": "huggingface.co/meta-llama/Llama-2-7b-chat-hf", "fileName": "model.safetensors"},
        "metadata": {"priority": "high", "timeout": 1800},
    }
    created = personas.editor_a.post(url, body, format="json")
    assert created.status_code == 201, created.json()
    command = created.json()
    assert command["status"] == "queued" and command["type"] == "model.download" and len(command["messageId"]) == 36
    listed = personas.viewer_a.get(url).json()
    assert listed["pagination"]["total"] == 1 and listed["data"][0]["messageId"] == command["messageId"]
    assert personas.viewer_a.get(url, {"status": "queued"}).json()["pagination"]["total"] == 1
    assert personas.viewer_a.get(url, {"status": "sent"}).json()["pagination"]["total"] == 0
    assert_error(personas.viewer_a.get(url, {"status": "exploded"}), 400)
    assert_error(personas.viewer_a.post(url, body, format="json"), 403)
    assert_error(personas.owner_b.get(url), 404)
    for bad in ({"type": "rm -rf"}, {"type": "model.download", "metadata": {"priority": "urgent"}}, {}):
        assert_error(personas.editor_a.post(url, bad, format="json"), 400)
    assert NodeCommand.objects.count() == 1


def test_metrics_window(personas: Personas, node: Node) -> None:
    now = timezone.now()
    for minutes in (90, 30, 5):
        NodeMetricFactory.create(timestamp=now - timedelta(minutes=minutes), data={"cpu": {"usage": minutes}})
    url = f"/api/nodes/{node.pk}/metrics"
    last_hour = personas.viewer_a.get(url).json()
    assert [row["cpu"]["usage"] for row in last_hour["data"]] == [30, 5]
    window = personas.viewer_a.get(
        url, {"from": (now - timedelta(hours=2)).isoformat(), "to": (now - timedelta(minutes=20)).isoformat()}
    ).json()
    assert [row["cpu"]["usage"] for row in window["data"]] == [90, 30]
    assert_error(personas.viewer_a.get(url, {"from": "yesterday"}), 400)
    assert_error(personas.viewer_a.get(url, {"from": now.isoformat(), "to": (now - timedelta(1)).isoformat()}), 400)
    assert personas.owner_b.get(url).status_code == 404


def test_deployment_logs(personas: Personas, node: Node) -> None:
    client = personas.owner_a
    AIModelFactory.create(model_id="m", actor=client.principal)
    DeploymentFactory.create(deployment_id="d1", name="d", model_id="m", actor=client.principal)
    now = timezone.now()
    for seconds, level in ((30, "info"), (20, "error"), (10, "info")):
        DeploymentLogFactory.create(
            deployment_id="d1", timestamp=now - timedelta(seconds=seconds), level=level, message=f"{level} {seconds}"
        )
    logs = client.get("/api/deployments/d1/logs").json()
    assert [row["message"] for row in logs["data"]] == ["info 30", "error 20", "info 10"]
    assert [r["message"] for r in client.get("/api/deployments/d1/logs", {"level": "error"}).json()["data"]] == [
        "error 20"
    ]
    since = (now - timedelta(seconds=15)).isoformat()
    assert [r["message"] for r in client.get("/api/deployments/d1/logs", {"since": since}).json()["data"]] == [
        "info 10"
    ]
    assert_error(client.get("/api/deployments/d1/logs", {"level": "loud"}), 400)
    assert_error(personas.owner_b.get("/api/deployments/d1/logs"), 404)


def test_the_sweep_forgets_old_metrics_and_message_ids_only(db: None, settings) -> None:  # type: ignore[no-untyped-def]
    from nodes.models import InboundMessage
    from nodes.services import inbound_prune, metrics_prune

    settings.AIWM_METRICS_RETENTION_DAYS, settings.AIWM_INBOUND_RETENTION_HOURS = 7, 72
    now = timezone.now()
    for age, message_id in ((timedelta(days=8), "old"), (timedelta(days=6), "recent")):
        NodeMetricFactory.create(node_id="n", message_id=message_id, timestamp=now - age, received_at=now - age)
    for age, message_id in ((timedelta(hours=73), "old"), (timedelta(hours=71), "recent")):
        InboundMessage.objects.create(
            owner_org_id=ORG_A, node_id="n", message_id=message_id, type="command.result", received_at=now - age
        )
    assert (metrics_prune(now=now), inbound_prune(now=now)) == (1, 1)
    assert list(NodeMetric.objects.values_list("message_id", flat=True)) == ["recent"]
    assert list(InboundMessage.objects.values_list("message_id", flat=True)) == ["recent"]


def test_the_sweep_drops_usage_records_past_their_retention_and_keeps_the_counters(db: None, settings) -> None:  # type: ignore[no-untyped-def]
    from inference.models import InferenceRecord
    from inference.usage import usage_prune
    from models_registry.models import AIModel
    from tests.support.factories import AIModelFactory

    settings.AIWM_USAGE_RETENTION_DAYS = 90
    AIModelFactory.create(model_id="m1")
    AIModel.objects.update(total_inference=2)
    now = timezone.now()
    for age, error in ((timedelta(days=91), "old"), (timedelta(days=89), "recent")):
        InferenceRecord.objects.create(
            owner_org_id=ORG_A, created_at=now - age, model_id="m1", endpoint="completions", status_code=200,
            error=error, latency_ms=1.0,
        )  # fmt: skip
    assert usage_prune(now=now) == 1
    assert list(InferenceRecord.objects.values_list("error", flat=True)) == ["recent"]
    assert AIModel.objects.get().total_inference == 2
