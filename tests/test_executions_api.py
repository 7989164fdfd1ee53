"""The Executions REST contract: the generic entity mixin plus plain filters, updates, statistics."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from aiwm_project.auth import Principal
from aiwm_project.exceptions import ConflictError
from executions.models import Execution
from executions.services import execution_create, execution_delete, execution_update
from tests.support.api import EntityAPIContract, assert_error
from tests.support.executions import URL, set_status
from tests.support.factories import ExecutionFactory, NodeFactory
from tests.support.personas import ORG_A, ORG_B, PersonaClient, Personas

STATS_URL = f"{URL}/_statistics/summary"
STEP_RUN_STATE = {
    "status": "pending",
    "progress": 0,
    "startedAt": None,
    "completedAt": None,
    "result": None,
    "error": None,
    "sentMessageId": None,
    "receivedMessageId": None,
}


def stored_step(index: int, **definition: Any) -> dict[str, Any]:
    """A step exactly as the API returns it: definition plus pending run state."""
    step = {
        "index": index,
        "name": f"Step {index}",
        "description": None,
        "command": None,
        "nodeId": "node-gpu-01",
        "timeoutSeconds": None,
        "dependsOn": [],
        "optional": False,
        **STEP_RUN_STATE,
    }
    step.update(definition)
    return step


class TestExecutionsAPI(EntityAPIContract):
    url = URL
    label = "Execution"
    business_id = "executionId"
    required_fields = ["name", "category", "type"]
    update_body = {
        "name": "Deploy Llama 2 Model (prod)",
        "description": "Renamed",
        "timeoutSeconds": 7200,
        "maxRetries": 5,
    }
    filter_cases = [
        ("category", "model", {"category": "model"}, {"category": "agent"}),
        ("type", "download-model", {"type": "download-model"}, {"type": "setup-agent"}),
        ("resourceType", "model", {"resourceType": "model"}, {"resourceType": "deployment"}),
        ("resourceId", "llama-2-7b-v1", {"resourceId": "llama-2-7b-v1"}, {"resourceId": "other"}),
        ("nodeId", "node-gpu-02", {"nodeId": "node-gpu-02"}, {}),
        ("status", "pending", {}, {}),
        ("involvedNodeIds", "node-gpu-02", {"nodeId": "node-gpu-02"}, {}),
    ]
    invalid_values = [
        ("category", "cooking"),
        ("type", "Deploy Model"),
        ("type", ""),
        ("resourceType", "cluster"),
        ("timeoutSeconds", 0),
        ("timeoutSeconds", -5),
        ("timeoutSeconds", 10**9),
        ("timeoutSeconds", "an hour"),
        ("maxRetries", -1),
        ("maxRetries", 1000),
        ("name", ""),
        ("executionId", "has spaces"),
        ("steps", "not-a-list"),
        ("steps", [{"index": 0}]),
    ]
    reference_fields = ["nodeId"]

    def valid_body(self, n: int) -> dict[str, Any]:
        return {
            "executionId": f"exec-deploy-llama-{n:03d}",
            "name": f"Deploy Llama 2 Model {n}",
            "description": "Multi-step deployment workflow",
            "category": "deployment",
            "type": "deploy-model",
            "timeoutSeconds": 3600,
            "resourceType": "deployment",
            "resourceId": "deploy-llama-prod-01",
            "nodeId": "node-gpu-01",
            "maxRetries": 3,
            # Exactly as returned, so the response can be compared with what was sent.
            "steps": [
                stored_step(
                    0,
                    name="Download model files",
                    command={
                        "type": "model.download",
                        "resource": {"type": "model", "id": "llama-2-7b-v1"},
                        "data": {"repository": "huggingface.co/meta-llama/Llama-2-7b"},
                    },
                    timeoutSeconds=1800,
                ),
                stored_step(
                    1,
                    name="Start container",
                    command={
                        "type": "deployment.start",
                        "resource": {"type": "deployment", "id": "deploy-llama-prod-01"},
                        "data": {"containerName": "llama-prod", "port": 8080},
                    },
                    timeoutSeconds=300,
                    dependsOn=[0],
                ),
            ],
        }

    def make_references(self, client: PersonaClient) -> None:
        NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
        NodeFactory.create(node_id="node-gpu-02", actor=client.principal)


# --- create: the contract's example and server-owned fields ---


def test_create_contract_example_returns_pending_execution(personas: Personas) -> None:
    NodeFactory.create(node_id="node-gpu-01", actor=personas.owner_a.principal)
    body = {
        "executionId": "exec-deploy-llama-001",
        "name": "Deploy Llama 2 Model",
        "category": "deployment",
        "type": "deploy-model",
        "nodeId": "node-gpu-01",
        "steps": [
            {
                "index": 0,
                "name": "Download model files",
                "status": "pending",
                "progress": 0,
                "command": {"type": "model.download", "resource": {"type": "model", "id": "llama-2-7b-v1"}},
                "nodeId": "node-gpu-01",
                "timeoutSeconds": 1800,
                "dependsOn": [],
                "optional": False,
            }
        ],
    }
    response = personas.owner_a.post(URL, body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["status"] == "pending" and created["progress"] == 0
    assert created["timeoutSeconds"] == 3600 and created["maxRetries"] == 3 and created["retryCount"] == 0
    assert created["involvedNodeIds"] == ["node-gpu-01"]
    assert created["childExecutionIds"] == [] and created["parentExecutionId"] is None
    assert created["sentMessageIds"] == created["receivedMessageIds"] == created["retryAttempts"] == []
    assert created["startedAt"] is created["completedAt"] is created["timeoutAt"] is None
    assert created["result"] is created["error"] is None
    assert created["steps"][0]["command"]["data"] == {}


def test_client_sent_run_state_is_refused_unless_it_is_what_the_server_holds(personas: Personas) -> None:
    NodeFactory.create(node_id="node-gpu-01", actor=personas.owner_a.principal)
    forged = {
        "status": "completed",
        "progress": 100,
        "startedAt": "2025-01-01T00:00:00.000Z",
        "completedAt": "2025-01-01T00:00:00.000Z",
        "timeoutAt": "2025-01-01T00:00:00.000Z",
        "result": {"ok": True},
        "error": {"code": "X", "message": "x"},
        "retryCount": 2,
        "retryAttempts": ["2025-01-01T00:00:00.000Z"],
        "sentMessageIds": ["m1"],
        "receivedMessageIds": ["m2"],
        "involvedNodeIds": ["node-elsewhere"],
        "childExecutionIds": ["exec-x"],
    }
    step_state = {
        "status": "failed",
        "progress": 50,
        "startedAt": "2025-01-01T00:00:00.000Z",
        "completedAt": "2025-01-01T00:00:00.000Z",
        "result": {"ok": True},
        "error": {"code": "X", "message": "x"},
        "sentMessageId": "m1",
        "receivedMessageId": "m2",
    }
    body = {"name": "x", "category": "maintenance", "type": "cleanup", "nodeId": "node-gpu-01"}
    for field, value in forged.items():
        errors = assert_error(personas.owner_a.post(URL, {**body, field: value}, format="json"), 400)["errors"]
        assert errors == [f"{field} is set by the server."], errors
    for field, value in step_state.items():
        step = {"index": 0, "name": "a", field: value}
        errors = assert_error(personas.owner_a.post(URL, {**body, "steps": [step]}, format="json"), 400)["errors"]
        assert errors == [f"steps[0].{field} is set by the server."], errors
    assert personas.owner_a.get(URL).json()["pagination"]["total"] == 0

    # What a new execution holds is accepted (the contract's create example sends it) and ignored.
    fresh = {"status": "pending", "progress": 0, "startedAt": None, "retryCount": 0, "sentMessageIds": []}
    step = {"index": 0, "name": "a", "status": "pending", "progress": 0, "result": None}
    response = personas.owner_a.post(URL, {**body, **fresh, "steps": [step]}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["status"] == "pending" and created["progress"] == 0 and created["retryCount"] == 0
    assert created["steps"] == [stored_step(0, name="a")]
    # The same through PUT: the engine's values sent back are ignored, others refused.
    url = f"{URL}/{created['_id']}"
    assert personas.owner_a.put(url, {**created, "name": "renamed"}, format="json").status_code == 200
    body = assert_error(personas.owner_a.put(url, {"status": "completed", "progress": 100}, format="json"), 400)
    assert body["errors"] == ["status is set by the server.", "progress is set by the server."]
    assert personas.owner_a.get(url).json()["status"] == "pending"


def test_execution_id_is_generated_when_not_sent(personas: Personas) -> None:
    response = personas.owner_a.post(URL, {"name": "x", "category": "batch", "type": "nightly-eval"}, format="json")
    assert response.status_code == 201, response.json()
    execution_id = response.json()["executionId"]
    assert len(execution_id) == 36 and execution_id.count("-") == 4
    assert personas.owner_a.get(f"{URL}/{execution_id}").status_code == 200


def test_involved_node_ids_are_execution_node_then_step_nodes_deduplicated(personas: Personas) -> None:
    for node in ("node-a", "node-b", "node-c"):
        NodeFactory.create(node_id=node, actor=personas.owner_a.principal)
    steps = [
        {"index": 0, "name": "s0", "nodeId": "node-b"},
        {"index": 1, "name": "s1"},  # the execution's node
        {"index": 2, "name": "s2", "nodeId": "node-c", "dependsOn": [0, 1]},
        {"index": 3, "name": "s3", "nodeId": "node-b"},
    ]
    body = {"name": "x", "category": "batch", "type": "fan-out", "nodeId": "node-a", "steps": steps}
    created = personas.owner_a.post(URL, body, format="json").json()
    assert created["involvedNodeIds"] == ["node-a", "node-b", "node-c"]
    assert [s["nodeId"] for s in created["steps"]] == ["node-b", "node-a", "node-c", "node-b"]
    # Without an execution node, only the steps' nodes.
    body = {"name": "y", "category": "batch", "type": "fan-out", "steps": [steps[0], steps[3]]}
    body["steps"] = [{**steps[0]}, {**steps[3], "index": 1}]
    created = personas.owner_a.post(URL, body, format="json").json()
    assert created["nodeId"] is None and created["involvedNodeIds"] == ["node-b"]


def test_child_execution_is_listed_on_its_parent(personas: Personas) -> None:
    client = personas.owner_a
    parent = client.post(URL, {"executionId": "batch-1", "name": "p", "category": "batch", "type": "b"}, format="json")
    assert parent.status_code == 201
    for n in (1, 2):
        body = {"executionId": f"child-{n}", "name": "c", "category": "model", "type": "download-model"}
        response = client.post(URL, {**body, "parentExecutionId": "batch-1"}, format="json")
        assert response.status_code == 201, response.json()
        assert response.json()["parentExecutionId"] == "batch-1"
    assert client.get(f"{URL}/batch-1").json()["childExecutionIds"] == ["child-1", "child-2"]
    bad = {"name": "c", "category": "model", "type": "t", "parentExecutionId": "no-such-parent"}
    body = assert_error(client.post(URL, bad, format="json"), 400)
    assert any(line.startswith("parentExecutionId") for line in body["errors"]), body
    # Another organization's execution is not a parent either.
    bad["parentExecutionId"] = "batch-1"
    assert_error(personas.owner_b.post(URL, bad, format="json"), 400)


# --- list: the contract's plain query parameters ---


@pytest.fixture
def spread(personas: Personas) -> dict[str, str]:
    """Four executions of org A (and one of org B) that differ in every plain filter."""
    for client in (personas.owner_a, personas.owner_b):
        NodeFactory.create(node_id="node-gpu-01", actor=client.principal)
        NodeFactory.create(node_id="node-gpu-02", actor=client.principal)
    rows = {
        "deploy": {"category": "deployment", "type": "deploy-model", "resourceType": "deployment",
                   "resourceId": "deploy-llama-prod-01", "nodeId": "node-gpu-01"},
        "download": {"category": "model", "type": "download-model", "resourceType": "model",
                     "resourceId": "llama-2-7b-v1", "nodeId": "node-gpu-02"},
        "agent": {"category": "agent", "type": "setup-agent", "resourceType": "agent", "resourceId": "agent-1"},
        "stop": {"category": "deployment", "type": "stop-deployment", "resourceType": "deployment",
                 "resourceId": "deploy-llama-prod-02", "nodeId": "node-gpu-01"},
    }  # fmt: skip
    ids = {}
    for key, fields in rows.items():
        response = personas.owner_a.post(URL, {"executionId": key, "name": key, **fields}, format="json")
        assert response.status_code == 201, response.json()
        ids[key] = response.json()["_id"]
    other = {"executionId": "deploy", "name": "b", **rows["deploy"]}
    assert personas.owner_b.post(URL, other, format="json").status_code == 201
    set_status("deploy", "running")
    set_status("download", "completed")
    set_status("deploy", "running", org_id=ORG_B)
    return ids


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "running"}, {"deploy"}),
        ({"status": "pending"}, {"agent", "stop"}),
        ({"category": "deployment"}, {"deploy", "stop"}),
        ({"type": "download-model"}, {"download"}),
        ({"resourceType": "deployment", "resourceId": "deploy-llama-prod-01"}, {"deploy"}),
        ({"resourceType": "deployment"}, {"deploy", "stop"}),
        ({"nodeId": "node-gpu-01"}, {"deploy", "stop"}),
        ({"nodeId": "node-gpu-01", "status": "pending"}, {"stop"}),
        ({"filter[status]": "running"}, {"deploy"}),
        ({"filter[nodeId]": "node-gpu-02"}, {"download"}),
        ({"category": "model", "filter[type]": "download-model"}, {"download"}),
        ({"status": "timeout"}, set()),
        # An empty plain parameter (an empty filter box in a UI) filters nothing.
        ({"status": "", "category": ""}, {"deploy", "download", "agent", "stop"}),
    ],
)
def test_plain_query_parameters_filter(
    personas: Personas, spread: dict[str, str], params: dict[str, str], expected: set
) -> None:
    response = personas.owner_a.get(URL, params)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert {row["executionId"] for row in body["data"]} == expected
    assert body["pagination"]["total"] == len(expected)


def test_plain_filters_paginate_and_sort(personas: Personas, spread: dict[str, str]) -> None:
    body = personas.owner_a.get(URL, {"category": "deployment", "limit": "1", "sort": "executionId"}).json()
    assert [row["executionId"] for row in body["data"]] == ["deploy"]
    assert body["pagination"] == {"page": 1, "limit": 1, "total": 2}
    body = personas.owner_a.get(
        URL, {"category": "deployment", "limit": "1", "page": "2", "sort": "executionId"}
    ).json()
    assert [row["executionId"] for row in body["data"]] == ["stop"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "exploded"},
        {"category": "cooking"},
        {"resourceType": "cluster"},
        {"filter[status]": "exploded"},
        {"type": "x\x00y"},
    ],
)
def test_plain_filter_values_outside_the_enumeration_are_400(personas: Personas, params: dict[str, str]) -> None:
    assert_error(personas.owner_a.get(URL, params), 400, URL)


# --- update: what a client may change, and when ---


@pytest.fixture
def pending(personas: Personas) -> dict:
    NodeFactory.create(node_id="node-gpu-01", actor=personas.owner_a.principal)
    NodeFactory.create(node_id="node-gpu-02", actor=personas.owner_a.principal)
    body = {
        "executionId": "exec-1",
        "name": "Deploy",
        "category": "deployment",
        "type": "deploy-model",
        "nodeId": "node-gpu-01",
        "resourceType": "deployment",
        "resourceId": "dep-1",
        "steps": [{"index": 0, "name": "a"}, {"index": 1, "name": "b", "dependsOn": [0]}],
    }
    response = personas.owner_a.post(URL, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_steps_can_be_replaced_while_pending_with_the_same_validation(personas: Personas, pending: dict) -> None:
    client = personas.owner_a
    new_steps = [
        {"index": 1, "name": "later", "dependsOn": [0], "nodeId": "node-gpu-02"},
        {"index": 0, "name": "first"},
    ]
    response = client.put(f"{URL}/exec-1", {"steps": new_steps}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert [s["name"] for s in body["steps"]] == ["first", "later"]
    assert body["involvedNodeIds"] == ["node-gpu-01", "node-gpu-02"]
    cyclic = [{"index": 0, "name": "a", "dependsOn": [1]}, {"index": 1, "name": "b", "dependsOn": [0]}]
    error = assert_error(client.put(f"{URL}/exec-1", {"steps": cyclic}, format="json"), 400)
    assert any("cycle 0 -> 1 -> 0" in line for line in error["errors"]), error
    # Required step fields are required in a (partial) PUT too.
    error = assert_error(client.put(f"{URL}/exec-1", {"steps": [{"index": 0}]}, format="json"), 400)
    assert error["errors"] == ["steps[0].name is required."]
    assert client.get(f"{URL}/exec-1").json() == body


def test_definition_is_frozen_once_the_execution_has_started(personas: Personas, pending: dict) -> None:
    client = personas.owner_a
    set_status("exec-1", "running")
    running = client.get(f"{URL}/exec-1").json()
    for change in ({"timeoutSeconds": 60}, {"maxRetries": 0}, {"steps": [{"index": 0, "name": "other"}]}):
        body = assert_error(client.put(f"{URL}/exec-1", change, format="json"), 409)
        assert "can only be changed while it is pending" in body["message"], body
    # Labels may change at any time.
    response = client.put(f"{URL}/exec-1", {"name": "Deploy (running)", "description": "note"}, format="json")
    assert response.status_code == 200, response.json()
    # Sending the GET body back (unchanged definition) is accepted.
    round_trip = {k: v for k, v in running.items() if k not in ("_id", "owner", "createdBy", "updatedBy")}
    response = client.put(f"{URL}/exec-1", {**round_trip, "name": "again"}, format="json")
    assert response.status_code == 200, response.json()
    after = client.get(f"{URL}/exec-1").json()
    assert after["steps"] == running["steps"] and after["timeoutSeconds"] == running["timeoutSeconds"]
    assert after["name"] == "again"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("executionId", "exec-2"),
        ("category", "model"),
        ("type", "download-model"),
        ("resourceType", "model"),
        ("resourceId", "dep-2"),
        ("nodeId", "node-gpu-02"),
        ("parentExecutionId", "exec-1"),
    ],
)
def test_identity_fields_are_fixed_after_create(personas: Personas, pending: dict, field: str, value: str) -> None:
    body = assert_error(personas.owner_a.put(f"{URL}/exec-1", {field: value}, format="json"), 400)
    assert body["errors"] == [f"{field}: cannot be changed after the execution is created"]
    # The same value is fine (a GET body sent back).
    assert personas.owner_a.put(f"{URL}/exec-1", {field: pending[field]}, format="json").status_code == 200
    assert personas.owner_a.get(f"{URL}/exec-1").json()[field] == pending[field]


def test_running_execution_cannot_be_deleted(personas: Personas, pending: dict) -> None:
    set_status("exec-1", "running")
    body = assert_error(personas.owner_a.delete(f"{URL}/exec-1"), 409)
    assert body["message"] == "Execution 'exec-1' is running; cancel it before deleting it"
    set_status("exec-1", "failed")
    assert personas.owner_a.delete(f"{URL}/exec-1").status_code == 200


# --- statistics ---


def test_statistics_count_only_the_callers_organization(personas: Personas, spread: dict[str, str]) -> None:
    personas.owner_a.delete(f"{URL}/agent")  # deleted executions are not counted
    response = personas.viewer_a.get(STATS_URL)
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "total": 3,
        "byStatus": {"pending": 1, "running": 1, "completed": 1, "failed": 0, "cancelled": 0, "timeout": 0},
        "byCategory": {"deployment": 2, "model": 1, "agent": 0, "maintenance": 0, "batch": 0},
    }
    response = personas.owner_b.get(STATS_URL)
    assert response.json() == {
        "total": 1,
        "byStatus": {"pending": 0, "running": 1, "completed": 0, "failed": 0, "cancelled": 0, "timeout": 0},
        "byCategory": {"deployment": 1, "model": 0, "agent": 0, "maintenance": 0, "batch": 0},
    }


def test_statistics_of_an_empty_organization_list_every_key(personas: Personas) -> None:
    body = personas.owner_a.get(STATS_URL).json()
    assert body["total"] == 0
    assert body["byStatus"] == dict.fromkeys(["pending", "running", "completed", "failed", "cancelled", "timeout"], 0)
    assert body["byCategory"] == dict.fromkeys(["deployment", "model", "agent", "maintenance", "batch"], 0)


def test_statistics_use_aggregate_queries_only(
    personas: Personas, spread: dict[str, str], django_assert_max_num_queries: Any
) -> None:
    with django_assert_max_num_queries(2):
        assert personas.owner_a.get(STATS_URL).status_code == 200


def test_statistics_need_a_token_and_a_known_role(personas: Personas) -> None:
    assert_error(personas.anonymous.get(STATS_URL), 401, STATS_URL)
    assert_error(personas.owner_a.post(STATS_URL, {}, format="json"), 405)


# --- the services' compare-and-swap against the engine, and parent bookkeeping under concurrency ---


def _principal(org_id: str = ORG_A) -> Principal:
    return Principal(user_id="68dcf365f6a92c0d4911b619", org_id=org_id, roles=("organization.owner",))


def test_update_loses_to_an_engine_start_that_happened_after_the_read(personas: Personas, pending: dict) -> None:
    stale = Execution.objects.get(execution_id="exec-1")
    set_status("exec-1", "running")  # the engine starts it between the read and the write
    with pytest.raises(ConflictError, match="is running: timeoutSeconds can only be changed while it is pending"):
        execution_update(instance=stale, data={"timeout_seconds": 60}, actor=_principal())
    assert Execution.objects.get(execution_id="exec-1").timeout_seconds == 3600


def test_delete_loses_to_an_engine_start_that_happened_after_the_read(personas: Personas, pending: dict) -> None:
    stale = Execution.objects.get(execution_id="exec-1")
    set_status("exec-1", "running")
    with pytest.raises(ConflictError):
        execution_delete(instance=stale, actor=_principal())
    assert Execution.objects.live().filter(execution_id="exec-1").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_children_all_land_on_the_parent(personas: Personas) -> None:
    base = {"category": "batch", "type": "batch-run"}
    ExecutionFactory.create(**base, execution_id="parent", name="p", node_id=None, actor=_principal())
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def create_child(n: int) -> None:
        try:
            barrier.wait()
            data = {**base, "execution_id": f"child-{n}", "name": "c", "parent_execution_id": "parent"}
            execution_create(data=data, actor=_principal())
        except BaseException as exc:  # reported to the main thread below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create_child, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    children = Execution.objects.get(execution_id="parent").child_execution_ids
    assert sorted(children) == ["child-0", "child-1", "child-2", "child-3"]
