"""Hostile input: values of the wrong type or out of range are a 400 (or an error reply), never a 500."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import socketio
from asgiref.sync import async_to_sync
from django.utils import timezone
from rest_framework.test import APIClient

from aiwm_project.datetimes import format_datetime, reported_time
from deployments.models import DeploymentLog
from deployments.services import deployment_append_logs
from nodes.models import NodeMetric
from tests.support.api import assert_error
from tests.support.daemons import daemon_for, message
from tests.support.executions import URL as EXECUTIONS_URL
from tests.support.executions import step
from tests.support.factories import AgentFactory, AIModelFactory, NodeFactory, deployment_with_model
from tests.support.live_server import TIMEOUT, LiveGateway
from tests.support.personas import ORG_A, Personas
from tests.support.tokens import HS256_SECRET as SECRET

# Date-times ISO 8601 can spell that are no time at all, or none a datetime holds in UTC.
OUT_OF_RANGE_TIMES = [
    "2025-02-30T00:00:00Z",
    "2025-01-01T00:00:00+99:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
]

# --- steps[].command.type of the wrong JSON type ---


@pytest.mark.django_db
@pytest.mark.parametrize("bad_type", [{"a": 1}, ["model.download"], 7, None])
def test_command_type_that_is_not_a_string_is_a_400_naming_the_field(personas: Personas, bad_type: Any) -> None:
    client = personas.owner_a
    NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
    bad_step = step(0)
    bad_step["command"]["type"] = bad_type
    body = {"executionId": "exec-1", "name": "x", "category": "model", "type": "t", "nodeId": "node-gpu-01"}
    error = assert_error(client.post(EXECUTIONS_URL, {**body, "steps": [bad_step]}, format="json"), 400)
    assert any(line.startswith("steps[0].command.type") for line in error["errors"]), error
    assert client.post(EXECUTIONS_URL, {**body, "steps": [step(0)]}, format="json").status_code == 201
    for method in (client.put, client.patch):
        error = assert_error(method(f"{EXECUTIONS_URL}/exec-1", {"steps": [bad_step]}, format="json"), 400)
        assert any(line.startswith("steps[0].command.type") for line in error["errors"]), error


# --- page and limit: ASCII digits only ---


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["page", "limit"])
@pytest.mark.parametrize("raw", ["²", "①", "٣", "\uff11", "1²", " 1", "+1"])
def test_page_and_limit_accept_only_ascii_digits(personas: Personas, name: str, raw: str) -> None:
    for url in ("/api/nodes", EXECUTIONS_URL):
        error = assert_error(personas.owner_a.get(url, {name: raw}), 400, url)
        assert any(line.startswith(name) for line in error["errors"]), error


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["page", "limit"])
def test_page_and_limit_of_thousands_of_digits_are_too_large(personas: Personas, name: str) -> None:
    error = assert_error(personas.owner_a.get("/api/nodes", {name: "9" * 5000}), 400)
    assert any("greater than" in line for line in error["errors"]), error
    assert personas.owner_a.get("/api/nodes", {name: "0002"}).status_code == 200


# --- out-of-range date-times: a 400 in a query, not believed from a node ---


@pytest.mark.django_db
@pytest.mark.parametrize("raw", OUT_OF_RANGE_TIMES)
def test_out_of_range_time_query_params_are_a_400(personas: Personas, raw: str) -> None:
    client = personas.owner_a
    node = NodeFactory.create(actor=client.principal)
    deployment_with_model("deploy-1", node.node_id, actor=client.principal)
    for url, name in (
        (f"/api/nodes/{node.pk}/metrics", "from"),
        (f"/api/nodes/{node.pk}/metrics", "to"),
        ("/api/deployments/deploy-1/logs", "since"),
    ):
        error = assert_error(client.get(url, {name: raw}), 400, url)
        assert any(line.startswith(name) for line in error["errors"]), error
    # The extremes that are times in UTC are fine.
    assert client.get(f"/api/nodes/{node.pk}/metrics", {"from": "0001-01-01T00:00:00Z"}).status_code == 200
    assert client.get(f"/api/nodes/{node.pk}/metrics", {"to": "9999-12-31T23:59:59Z"}).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        *OUT_OF_RANGE_TIMES,
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59Z",  # before any daemon ran: not believed
        "2999-01-01T00:00:00Z",
        12345,
        "x" * 100,
    ],
)
def test_a_node_timestamp_out_of_range_is_not_believed(raw: Any) -> None:
    now = timezone.now()
    assert reported_time(raw, now) == now
    assert reported_time("2000-01-01T00:00:00Z", now) == datetime(2000, 1, 1, tzinfo=UTC)
    assert reported_time((now + timedelta(minutes=1)).isoformat(), now) == now + timedelta(minutes=1)


@pytest.mark.django_db
def test_log_lines_with_out_of_range_timestamps_are_stored_at_the_time_received() -> None:
    node = NodeFactory.create()
    deployment_with_model("deploy-1", node.node_id)
    logs = [
        {"timestamp": raw, "level": "info", "message": raw} for raw in [*OUT_OF_RANGE_TIMES, "0500-01-01T00:00:00Z"]
    ]
    before = timezone.now()
    assert deployment_append_logs(org_id=ORG_A, node_id=node.node_id, deployment_id="deploy-1", logs=logs) == 5
    assert all(line.timestamp >= before for line in DeploymentLog.objects.all())


@pytest.mark.django_db(transaction=True)
def test_a_metric_point_with_an_invalid_timestamp_is_refused_and_dropped(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token()
    bad_values: list[Any] = [*OUT_OF_RANGE_TIMES, "0001-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "soon", 12345]

    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        refused = []
        async with daemon_for(gateway, {"token": token}) as daemon:
            for raw in bad_values:
                sent = await daemon.send({**message("telemetry.metrics", {"cpu": {"usage": 1}}), "timestamp": raw})
                refused.append((sent["messageId"], await daemon.error("INVALID_PAYLOAD")))
            # A good point, and one without a timestamp, are still recorded, and the batch is written.
            await daemon.send(message("telemetry.metrics", {"cpu": {"usage": 2}}))
            untimed = message("telemetry.metrics", {"cpu": {"usage": 3}})
            del untimed["timestamp"]
            await daemon.send(untimed)
            await daemon.barrier()  # its telemetry is written before the barrier is answered
        return refused

    refused = async_to_sync(scenario)()
    assert len(refused) == len(bad_values)
    assert all(error["originalMessageId"] == sent and "timestamp" in error["message"] for sent, error in refused)
    points = NodeMetric.objects.filter(node_id=node.node_id)
    assert sorted(point.data["cpu"]["usage"] for point in points) == [2, 3]


# --- years below 1000 are written with four digits (ISO 8601) ---


def test_years_below_1000_are_formatted_with_four_digits() -> None:
    assert format_datetime(datetime(325, 1, 31, 4, 5, 6, 7000, tzinfo=UTC)) == "0325-01-31T04:05:06.007Z"
    assert format_datetime(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    assert format_datetime(datetime(2025, 11, 16, 13, 0, tzinfo=UTC)) == "2025-11-16T13:00:00.000Z"


@pytest.mark.django_db
def test_an_early_participant_time_is_echoed_as_iso_8601(personas: Personas) -> None:
    client = personas.owner_a
    NodeFactory.create(actor=client.principal)
    AIModelFactory.create(model_id="llama-2-7b-v1", node_id="node-gpu-01", actor=client.principal)
    AgentFactory.create(agent_id="agent-assistant-01", actor=client.principal)
    participant = {"userId": "u1", "role": "customer", "joinedAt": "0325-01-31T00:00:00Z"}
    body = {"conversationId": "conv-1", "title": "t", "agentId": "agent-assistant-01", "participants": [participant]}
    response = client.post("/api/conversations", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["participants"][0]["joinedAt"] == "0325-01-31T00:00:00.000Z"


# --- JWT NumericDate claims must be numbers (RFC 7519) ---


def _get_with_claims(**claims: Any) -> Any:
    now = int(time.time())
    body = {"sub": "u-1", "orgId": "org-jwt", "roles": ["organization.owner"], "iat": now, "exp": now + 600}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {jwt.encode({**body, **claims}, SECRET, algorithm='HS256')}")
    return client.get("/api/nodes")


@pytest.mark.django_db
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_numeric_date_claim_that_is_a_string_is_refused(hs256: None, claim: str) -> None:
    now = int(time.time())
    value = now + 600 if claim == "exp" else now - 60
    assert _get_with_claims(**{claim: value}).status_code == 200
    assert _get_with_claims(**{claim: value + 0.5}).status_code == 200  # a NumericDate may have a fraction
    body = assert_error(_get_with_claims(**{claim: str(value)}), 401, "/api/nodes")
    assert any(claim in line for line in body.get("errors", [])), body
    assert_error(_get_with_claims(**{claim: True}), 401)


# --- Socket.IO: only the node namespace is served ---


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_the_default_namespace_refuses_connections(gateway: LiveGateway, quick_polling: None, transport: str) -> None:
    _node, token = NodeFactory.with_token()

    async def scenario() -> tuple[list[Any], bool]:
        client = socketio.AsyncClient(reconnection=False)
        refusals: list[Any] = []

        @client.on("connect_error", namespace="/")
        async def connect_error(data: Any = None) -> None:
            refusals.append(data)

        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(
                    gateway.url, auth={"token": token}, namespaces=["/"], transports=[transport], wait_timeout=TIMEOUT
                )
            return refusals, "/" in client.namespaces
        finally:
            if client.eio.state == "connected":
                await client.eio.disconnect()

    refusals, connected = async_to_sync(scenario)()
    assert refusals and not connected


# --- integers beyond 64 bits anywhere in a document ------------------------------------------

HUGE = int("1" * 101)


def test_free_form_json_with_an_integer_beyond_64_bits_is_a_400_naming_its_place(personas: Personas) -> None:
    NodeFactory.create(node_id="node-gpu-01")
    owner = personas.owner_a
    body = {"type": "model.download", "data": {"files": [{"size": HUGE}]}}
    refused = assert_error(owner.post("/api/nodes/node-gpu-01/commands", body, format="json"), 400)
    assert refused["errors"] == [refused["message"]] and refused["message"].startswith("data.files[0].size:"), refused
    assert owner.get("/api/nodes/node-gpu-01/commands").json()["pagination"]["total"] == 0
    limit = 2**63 - 1
    accepted = owner.post("/api/nodes/node-gpu-01/commands", {**body, "data": {"size": limit}}, format="json")
    assert accepted.status_code == 201 and accepted.json()["data"] == {"size": limit}
    assert_error(
        owner.post("/api/nodes/node-gpu-01/commands", {**body, "data": {"size": -limit - 1}}, format="json"), 400
    )


def test_a_node_message_with_an_integer_beyond_64_bits_is_invalid_payload() -> None:
    from gateway.protocol import ProtocolError, encoded_size

    with pytest.raises(ProtocolError) as refused:
        encoded_size({"type": "telemetry.metrics", "messageId": "m", "data": {"gpu": [{"memoryTotal": HUGE}]}})
    assert refused.value.code == "INVALID_PAYLOAD" and refused.value.message.startswith("data.gpu[0].memoryTotal:")


@pytest.mark.parametrize("raw", ["2025-02-30T00:00:00Z", "2025-01-01T00:00:00+99:00", "0001-01-01T00:00:00+01:00"])
def test_an_impossible_date_time_filter_value_is_a_validation_error(raw: str) -> None:
    """The same parser as the from/to/since parameters serves date-time filter values."""
    from rest_framework.exceptions import ValidationError

    from aiwm_project.api.filters import parse_filter_value
    from nodes.models import Node

    with pytest.raises(ValidationError):
        parse_filter_value(Node, "last_heartbeat", raw, "filter[lastHeartbeat]")
